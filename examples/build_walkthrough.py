"""Write ``examples/walkthrough.ipynb`` (no outputs) from the cells below.

Edit the cells here, then regenerate the notebook:

    .venv/bin/python examples/build_walkthrough.py

Cells carry tags (``estimates``, ``verdict``, ``report``, ``truth``...) that the test
``tests/examples/test_walkthrough.py`` uses to find the outputs it checks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().parent / "walkthrough.ipynb"

CELLS: list[tuple[str, str, list[str]]] = [
    (
        "md",
        """\
# ecomrl walkthrough: from raw shop logs to an approval decision

This notebook walks through the Python API of `ecomrl` on the bundled sample
`data_samples/promotion/`: one month of simulated clickstream and order logs of a shop that
decides, at the start of every session, which incentive to show a visitor (no discount, 5 %,
10 % or free shipping). We will

1. **load the raw logs** (events and order lines, as a shop exports them);
2. **build transitions** with the ETL: one row per decision with the state, the action and the
   reward, plus a manifest that accounts for every input row;
3. **train** a conservative offline RL agent (DiscreteCQL) and a behaviour-cloning baseline;
4. **evaluate** them *off-policy*: estimate from the logs alone what each policy would earn,
   against the policy that produced the logs;
5. **render the approval report** that decides whether the candidate may ship;
6. **check against the truth**: the sample comes from a simulator, so we can run the candidate
   online and see whether the report was right.

Everything runs on a laptop CPU in about a minute. The training here is deliberately short
(a few hundred gradient steps) so the notebook stays fast; the nightly job trains longer.""",
        [],
    ),
    (
        "code",
        """\
import html
import os
import tempfile
import warnings
from pathlib import Path

import polars as pl
from IPython.display import display

from ecomrl.logging import configure_logging

configure_logging(level="warning")  # the library logs with structlog; keep the notebook quiet
warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
pl.Config.set_tbl_rows(30)
pl.Config.set_fmt_str_lengths(40)


def find_sample(name: str = "promotion") -> Path:
    \"\"\"The bundled sample: looked up from the working folder upwards, then beside the
    installed ``ecomrl`` package (an editable install of this checkout).\"\"\"
    import ecomrl

    cwd = Path.cwd().resolve()
    for base in (cwd, *cwd.parents, Path(ecomrl.__file__).resolve().parents[1]):
        folder = base / "data_samples" / name
        if (folder / "events").is_dir():
            return folder
    raise FileNotFoundError(f"data_samples/{name} not found above {cwd}")


SAMPLE = find_sample()
# Everything this notebook writes goes to one scratch folder (set ECOMRL_WALKTHROUGH_OUT to
# keep it somewhere of your choosing).
WORK = Path(os.environ.get("ECOMRL_WALKTHROUGH_OUT") or tempfile.mkdtemp(prefix="ecomrl-walk-"))
WORK.mkdir(parents=True, exist_ok=True)
print(f"sample logs: {SAMPLE}")
print(f"outputs:     {WORK}")""",
        ["setup"],
    ),
    (
        "md",
        """\
## 1. The raw logs

A shop exports two tables, partitioned by the day the rows *arrived*
(`events/date=YYYY-MM-DD/`, `orders/date=YYYY-MM-DD/`):

* **events**: one row per clickstream event (page views, clicks, add-to-cart, purchases...). The
  platform's own choices are events too: a `decision` event records which incentive was shown
  (`action`), with which probability the logging policy chose it (`propensity`) and a little
  context (`device`, `channel`).
* **orders**: one row per order line, including cancellations and returns that reverse an
  earlier order.

`simulator.read_raw_logs` reads a sample folder into polars frames (`logs.events`,
`logs.orders`; `logs.truth` is the simulator's answer key, which real logs do not have).
The sample is deliberately dirty: duplicated events, late arrivals, anonymous sessions and a few
bots, as in real exports.""",
        [],
    ),
    (
        "code",
        """\
from simulator import read_raw_logs, simulate_summary

logs = read_raw_logs(SAMPLE)
print(f"{logs.events.height:,} events, {logs.orders.height:,} order lines")
logs.events.head(5)""",
        ["raw"],
    ),
    (
        "code",
        """\
# The decisions: what the logging policy chose, and with which probability.
decisions = logs.events.filter(pl.col("event_type") == "decision")
display(
    decisions.select("decision_id", "event_ts", "user_id", "action", "propensity", "device",
                     "channel").head(5)
)
decisions.group_by("action").agg(
    pl.len().alias("decisions"), pl.col("propensity").mean().alias("mean propensity")
).sort("decisions", descending=True)""",
        [],
    ),
    (
        "code",
        """\
logs.orders.head(5)""",
        [],
    ),
    (
        "code",
        """\
simulate_summary(logs)  # the simulator's one-screen summary (a metric / value frame)""",
        [],
    ),
    (
        "md",
        """\
## 2. Transitions: the ETL

`etl.run_etl(input, output)` validates and deduplicates the events, stitches anonymous sessions
to users, drops bots, attributes every order line (and its later returns) to the decision of its
session, builds the **state** of each decision from what was known *at that moment* only, and
cuts each user's decisions into **episodes**. It writes a Parquet dataset plus a
`_manifest.json` and returns an `EtlResult(transitions, quarantine, manifest)`.

(`etl.build_transitions(events, orders)` does the same in memory, without files; we use the
file version because the later stages, like the nightly job, read the dataset folder.)

The manifest accounts for every input row: used, quarantined (failed validation; kept aside with
the reason) or dropped (duplicates, bots), per table.""",
        [],
    ),
    (
        "code",
        """\
from etl import run_etl

DATASET = WORK / "dataset"
etl_result = run_etl(SAMPLE, DATASET)


print(f"{etl_result.transitions.height:,} transitions, "
      f"{etl_result.quarantine.height:,} quarantined rows")
etl_result.accounting()""",
        ["etl"],
    ),
    (
        "md",
        """\
Each transition is one decision: the episode and step, the **observation** (a fixed-size
float vector, standardised; its feature names are in the manifest), the **action** taken (tier
index 0..3), the **reward** (net margin of the session's orders minus discount cost minus
returns) with its parts, whether the episode ended there (`terminal`: the user churned;
`timeout`: cut by the horizon or the end of the data), and the logged propensity.""",
        [],
    ),
    (
        "code",
        """\
manifest = etl_result.manifest
feature_names = manifest["feature_names"]
print("action space:", manifest["action_space"])
print("reward:      ", manifest["reward"]["kind"], "| gamma:", manifest["gamma"],
      "| dates:", manifest["date_range"])
print("features:    ", ", ".join(feature_names))
etl_result.transitions.head(5)""",
        ["transitions"],
    ),
    (
        "code",
        """\
# The observation vector spelled out by feature name (standardised values).
etl_result.transitions.head(5).select(
    "episode_id", "step", "action", "reward",
    pl.col("observation").arr.to_struct(feature_names),
).unnest("observation")""",
        [],
    ),
    (
        "md",
        """\
## 3. Train a candidate and a baseline

We hold out the newest episodes for evaluation (`offline_rl.split_by_time`: whole episodes,
by the day they started) and train on the older ones:

* the **candidate**: DiscreteCQL (conservative Q-learning, via d3rlpy), which learns a policy
  that improves on the logged one while staying close to actions the logs actually contain;
* a **baseline**: behaviour cloning (BC), which imitates the logging policy.

`offline_rl.train_on_frame(frame, manifest, out, config)` trains on an in-memory frame and writes
a verified policy **artifact** folder (weights, config, metrics, checksums); it returns a
`TrainResult` (artifact path, losses, validation metrics). `offline_rl.train(dataset, out,
config)` does the same from the dataset folder. Only a few hundred gradient steps here.""",
        [],
    ),
    (
        "code",
        """\
from offline_rl import TrainConfig, TransitionManifest, split_by_time, train_on_frame

train_frame, eval_frame = split_by_time(etl_result.transitions, valid_fraction=0.3)
training_manifest = TransitionManifest.read(DATASET / "_manifest.json")


def episodes(frame: pl.DataFrame) -> dict:
    return {
        "episodes": frame["episode_id"].n_unique(),
        "decisions": frame.height,
        "first decision": frame["decision_ts"].min(),
        "last decision": frame["decision_ts"].max(),
    }


pl.DataFrame([{"part": "train", **episodes(train_frame)},
              {"part": "evaluate (held out)", **episodes(eval_frame)}])""",
        ["split"],
    ),
    (
        "code",
        """\
cql = train_on_frame(
    train_frame, training_manifest, WORK / "candidate",
    TrainConfig(agent="discrete_cql", n_steps=300, log_every=50, onnx=False),
    progress=False,
)
bc = train_on_frame(
    train_frame, training_manifest, WORK / "baseline_bc",
    TrainConfig(agent="discrete_bc", n_steps=200, log_every=50, onnx=False),
    progress=False,
)
pl.DataFrame([
    {"model": name, "agent": r.agent, "steps": r.n_steps, "artifact": str(r.artifact),
     **{f"valid {k}": v for k, v in r.validation.items()}}
    for name, r in (("candidate", cql), ("baseline:bc", bc))
])""",
        ["train"],
    ),
    (
        "code",
        """\
from offline_rl import load_policy

candidate_policy = load_policy(cql.artifact)  # checks the artifact's hashes, then loads it
bc_policy = load_policy(bc.artifact)
print(candidate_policy)
# The loss curves recorded during training (means over each interval of log_every steps).
pl.DataFrame(candidate_policy.metrics["curves"])""",
        [],
    ),
    (
        "md",
        """\
## 4. Off-policy evaluation

Would the candidate earn more than the policy that produced the logs? Off-policy evaluation
(OPE) answers from the held-out logs alone, re-weighting what happened by how likely each
policy was to take the logged actions. Several estimator families answer: importance sampling
(`is`, `pdis`, `wis`, `wpdis`), a model-based direct method (`dm`), doubly robust ones
(`dr`, `wdr`) and the marginalised doubly robust `mdr` (state-distribution ratios instead of
products of per-step ratios; the primary estimator by default), each with a bootstrap
confidence interval.

`evaluation.evaluate.evaluate_candidates(data, candidates)` evaluates any number of candidates:
trained artifacts (wrapped in `ModelPolicy`), rules such as `"rule:constant=0"` (never give an
incentive) or tables of action probabilities. It returns an `EvaluationResult`; `.to_frame()`
is a tidy polars frame with one row per policy and estimator, the logged behaviour's own value
(`behaviour (logged)`, measured on-policy) in the first row.""",
        [],
    ),
    (
        "code",
        """\
from evaluation.candidates import ModelPolicy
from evaluation.data import TransitionsDataset
from evaluation.evaluate import evaluate_candidates

held_out = TransitionsDataset(frame=eval_frame, manifest=manifest, path=DATASET)
result = evaluate_candidates(
    held_out,
    [
        ModelPolicy(candidate_policy, name="candidate"),
        ModelPolicy(bc_policy, name="baseline:bc"),
        "rule:constant=0",
    ],
    data_path=DATASET,
)
estimates = result.to_frame()
estimates.select("policy", "estimator", "family", "estimate", "ci_low", "ci_high",
                 "decision", "ess")""",
        ["estimates"],
    ),
    (
        "code",
        """\
# The same estimates side by side: one row per policy, one column per estimator.
estimates.pivot(on="estimator", index="policy", values="estimate")""",
        [],
    ),
    (
        "md",
        """\
Every candidate gets a **verdict**. It is approved only when the high-confidence *lower bound*
of its *gain* over the logged policy (primary estimator), estimated paired on the same episodes,
clears the configured margin **and** every diagnostic passes: enough effective sample size, no
single weight dominating, support of the candidate's actions in the logs, agreement between
estimator families. A failed check means the estimate itself cannot be trusted. The nightly job
(`ecomrl run`) does not test the greedy agent itself: it tests one member of a family between
the logging policy and the agent, chosen on other users (see the top README).""",
        [],
    ),
    (
        "code",
        """\
verdict = result.candidate("candidate").verdict
print(f"{verdict.decision.upper()}: {verdict.decided_by}")
pl.DataFrame([check.to_dict() for check in verdict.checks])""",
        ["verdict"],
    ),
    (
        "md",
        """\
## 5. The approval report

`evaluation.report` turns the evaluation into a self-contained HTML page (plus Markdown and
JSON with the same facts): the verdict first, then the forest plot of every estimate against the
current policy's value and the margin, the diagnostics with their thresholds, the data (row
accounting, rewards, drift of the states) and the training curves. `result.write(folder)` writes
the `ope.json` the report reads; `report_inputs_from_run` gathers the inputs (plain
dataclasses), `render_report` writes the three files.""",
        [],
    ),
    (
        "code",
        """\
from evaluation.report import render_report, report_inputs_from_run

ope_json, _ = result.write(WORK / "evaluation")
inputs = report_inputs_from_run(
    ope_json, DATASET / "_manifest.json", cql.artifact, data_dir=DATASET, candidate="candidate"
)
paths = render_report(inputs, WORK / "report")
print(f"verdict: {inputs.verdict.decision}")
print(inputs.verdict.sentence)
print(f"report:  {paths.html}")""",
        ["verdict-report"],
    ),
    (
        "code",
        """\
# The page inline, in a sandboxed frame so its styles stay out of the notebook's
# (plain-text frontends show the verdict line instead).
page = paths.html.read_text(encoding="utf-8")
iframe = (f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox '
          'style="width: 100%; height: 900px; border: 1px solid #ccc;"></iframe>')
text = f"{inputs.verdict.sentence}\\n{paths.html}"
display({"text/html": iframe, "text/plain": text}, raw=True)""",
        ["report"],
    ),
    (
        "md",
        """\
## 6. Was the report right? The simulator's ground truth

On real data the story ends with the report. The sample, however, comes from the bundled
simulator, which can run *any* policy online with fresh users and tell its **true value** (the
mean discounted return per episode, with a 95 % interval). The candidate sees the same state
features online as in training: the ETL's `ObservationBuilder`, fitted scaling read from the
manifest, is the rollout's *observation hook*. Both policies meet the same simulated users
(same seed), users the logs never saw.""",
        [],
    ),
    (
        "code",
        """\
from etl import ObservationBuilder
from simulator import logging_policy, rollout

N_USERS = 400
seed = logs.config.seed + 1_000_003  # users the logs never saw
hook = ObservationBuilder.from_manifest(DATASET / "_manifest.json")
truth = {
    "logging policy": rollout(logging_policy(logs.config), logs.config, n_users=N_USERS,
                              seed=seed),
    "candidate": rollout(candidate_policy, logs.config, observation_hook=hook, n_users=N_USERS,
                         seed=seed),
}
behaviour_row = estimates.filter(pl.col("policy") == "behaviour (logged)").row(0, named=True)
candidate_row = estimates.filter(
    (pl.col("policy") == "candidate") & (pl.col("estimator") == result.candidate("candidate")
                                         .primary_estimator)
).row(0, named=True)
ope = {"logging policy": behaviour_row, "candidate": candidate_row}
comparison = pl.DataFrame([
    {
        "policy": name,
        "OPE estimate": ope[name]["estimate"],
        "OPE ci_low": ope[name]["ci_low"],
        "OPE ci_high": ope[name]["ci_high"],
        "true value": r.value,
        "true ci_low": r.ci_low,
        "true ci_high": r.ci_high,
        "episodes simulated": r.n_episodes,
    }
    for name, r in truth.items()
])
comparison.write_parquet(WORK / "ground_truth.parquet")  # kept beside the report
comparison""",
        ["truth"],
    ),
    (
        "code",
        """\
gain = truth["candidate"].value - truth["logging policy"].value
gain_se = (truth["candidate"].std_error ** 2 + truth["logging policy"].std_error ** 2) ** 0.5
if gain - 1.96 * gain_se > 0:
    online = "clearly better"
elif gain + 1.96 * gain_se < 0:
    online = "clearly worse"
else:
    online = "not distinguishable"
if verdict.approved:
    judgement = "confirmed" if online == "clearly better" else "NOT confirmed online"
else:
    judgement = "a missed improvement" if online == "clearly better" else "the right call"
print(f"Report: {verdict.decision.upper()}. Online the candidate earns {gain:+.2f} "
      f"(+/- {1.96 * gain_se:.2f}) per episode against the logging policy: {online}.")
print(f"So the report's decision was {judgement}.")""",
        ["conclusion"],
    ),
    (
        "md",
        """\
Read the two OPE columns against the true ones. The logging policy's value measured from the
logs should agree with its true value. A greedy candidate's estimate rests on the few logged
episodes that happen to follow its choices (see the effective sample size above), so its
interval is wide and its point estimate can land far from the truth: that is why the approval
rule looks at the *lower bound* and the diagnostics, never at the point estimate alone. A short
training run on one month of logs rarely yields a policy that beats the logging policy *with
confidence*; the report is built to say no unless the evidence is strong, and to say why.
Train longer (`TrainConfig(n_steps=...)`), collect more data, or make the candidate less greedy
(`ModelPolicy(..., epsilon=0.1)`), and the picture changes.

## Where next

* `ecomrl run --config nightly.toml --date YYYY-MM-DD` runs this whole chain as the nightly job
  (ETL of that day, training, evaluation against the production policy, report, exit code), and
  `make demo` runs it on this sample and prints where the report is.
* Every stage has a command of its own (`ecomrl etl`, `ecomrl train`, `ecomrl evaluate`,
  `ecomrl report`) and a config table (`[etl]`, `[train]`, `[evaluate]`, `[approval]`).
* `evaluation/report/README.md` explains how to read the report, line by line.""",
        [],
    ),
]


def build() -> nbformat.NotebookNode:
    """The notebook, outputs empty, with a Python 3 kernelspec."""
    cells = []
    for number, (kind, source, tags) in enumerate(CELLS):
        cell = new_markdown_cell(source) if kind == "md" else new_code_cell(source)
        cell.id = f"cell-{number:02d}"  # stable ids: regenerating gives the same file
        if tags:
            cell.metadata["tags"] = tags
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    nb = build()
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOK)


if __name__ == "__main__":
    main()
