"""Options shared by the subcommands."""

from __future__ import annotations

from typing import Annotated

import typer

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="SECTION.KEY=VALUE",
        help="Override one config key (repeatable), e.g. --set train.n_steps=500; "
        "the value is read as TOML, else as a string.",
    ),
]
"""``--set section.key=value``: any key of the config model, on every command that reads one."""
