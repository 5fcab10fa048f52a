"""Execute ``examples/walkthrough.ipynb`` end to end and check what it shows.

The notebook runs in a temporary working copy (its cwd and every file it writes are under
``tmp_path``), on a kernel that is this very interpreter (a kernelspec written to a temporary
``JUPYTER_PATH``, so no kernel has to be installed and no other Python can be picked up).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "examples" / "walkthrough.ipynb"
KERNEL = "ecomrl-walkthrough-test"
CELL_TIMEOUT_S = 120
EXPECTED_POLICIES = {"behaviour (logged)", "candidate", "baseline:bc", "rule:constant=0"}


def _kernelspec(root: Path) -> Path:
    """A kernelspec that starts an IPython kernel on the interpreter running the tests."""
    folder = root / "kernels" / KERNEL
    folder.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ecomrl test kernel",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return root


def _cell(nb: Any, tag: str) -> Any:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0]


def _text(cell: Any, mime: str = "text/plain") -> str:
    """Everything a cell printed (streams) and displayed in ``mime``."""
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(str(out.data.get(mime, "")))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, float]:
    """The notebook executed once in a temporary copy: (notebook, output folder, seconds)."""
    work = tmp_path_factory.mktemp("walkthrough")
    copy = work / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    out = work / "outputs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(_kernelspec(work / "jupyter")))
        mp.setenv("ECOMRL_WALKTHROUGH_OUT", str(out))
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("MPLBACKEND", "Agg")
        nb = nbformat.read(copy, as_version=4)
        client = nbclient.NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            kernel_name=KERNEL,
            resources={"metadata": {"path": str(work)}},
        )
        began = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - began
    return nb, out, seconds


def test_saved_notebook_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_walkthrough_runs_without_errors(executed: tuple[Any, Path, float]) -> None:
    nb, out, seconds = executed
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    # it wrote only under its output folder: dataset, artifacts, evaluation, report
    for name in ("dataset/_manifest.json", "evaluation/ope.json", "report/report.html"):
        assert (out / name).is_file(), name
    assert seconds < 2 * CELL_TIMEOUT_S


@pytest.mark.slow
def test_walkthrough_shows_the_etl_accounting(executed: tuple[Any, Path, float]) -> None:
    nb, out, _ = executed
    manifest = json.loads((out / "dataset" / "_manifest.json").read_text(encoding="utf-8"))
    shown = _text(_cell(nb, "etl"))
    events = manifest["counts"]["events"]
    for table in ("events", "orders"):
        assert f"{manifest['counts'][table]['rows_in']}" in shown
    for reason, n in events["dropped"].items():
        assert reason in shown and str(n) in shown


@pytest.mark.slow
def test_walkthrough_estimates_every_candidate(executed: tuple[Any, Path, float]) -> None:
    nb, out, _ = executed
    shown = _text(_cell(nb, "estimates"), "text/html").replace("&quot;", "")
    for policy in EXPECTED_POLICIES:  # polars' HTML table: one cell per policy and estimator
        assert f"<td>{policy}</td>" in shown, policy
    # the frame the notebook showed is the one it wrote: same policies, finite DR estimates
    frame = pl.read_parquet(out / "evaluation" / "ope.parquet")
    assert set(frame["policy"].unique()) == EXPECTED_POLICIES
    dr = frame.filter(pl.col("estimator") == "dr")
    assert dr.height == 3 and all(math.isfinite(v) for v in dr["estimate"])


@pytest.mark.slow
def test_walkthrough_shows_the_verdict_and_the_report(executed: tuple[Any, Path, float]) -> None:
    nb, out, _ = executed
    report = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    decision = report["verdict"]["decision"]
    assert decision in ("APPROVE", "REJECT")
    printed = _text(_cell(nb, "verdict-report"))
    assert f"verdict: {decision}" in printed
    assert report["verdict"]["sentence"] in printed
    assert _text(_cell(nb, "verdict")).startswith(decision)
    inline = _text(_cell(nb, "report"), "text/html")
    assert inline.startswith("<iframe srcdoc=")
    assert decision in inline and "&lt;img" in inline  # the page, escaped, with its plots
    assert report["verdict"]["sentence"] in _text(_cell(nb, "report"))


@pytest.mark.slow
def test_walkthrough_compares_with_the_simulator_truth(
    executed: tuple[Any, Path, float],
) -> None:
    nb, out, _ = executed
    truth = pl.read_parquet(out / "ground_truth.parquet")
    assert truth["policy"].to_list() == ["logging policy", "candidate"]
    logging = truth.row(0, named=True)
    # the logs' on-policy value of the logging policy agrees with its true value online
    assert logging["OPE ci_low"] <= logging["true value"] <= logging["OPE ci_high"]
    assert all(
        r["true ci_low"] < r["true value"] < r["true ci_high"] for r in truth.iter_rows(named=True)
    )
    conclusion = _text(_cell(nb, "conclusion"))
    assert "So the report's decision was" in conclusion
