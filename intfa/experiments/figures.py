"""A study's result as it is saved: the tidy frame, the figure drawn from it, and where they came from.

Every figure of the project is written by :meth:`Study.save` as ``<out>/<name>.png`` beside
``<name>.csv`` (the tidy frame, one row per measurement) and ``<name>.json`` (provenance: versions,
date, machine, command, git commit, parameters, and the findings printed under the figure), the record
of :func:`intfa.provenance.provenance`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")  # the main job draws without a display; notebooks keep their inline backend

import matplotlib.pyplot as plt
import pandas as pd

from ..provenance import provenance


@dataclasses.dataclass
class Study:
    """One figure and everything behind it.

    name : path under the results directory without suffix, e.g. "accuracy/error_vs_block_n".
    frame : tidy pandas DataFrame, one row per (input sample, configuration[, metric]).
    figure : the matplotlib Figure drawn from ``frame``; its title states the main finding.
    caption : one sentence saying what the reader should see.
    findings : sentences with the numbers that support the title, computed from ``frame``.
    params : the sizes and settings the study ran with.
    """

    name: str
    frame: pd.DataFrame
    figure: plt.Figure
    caption: str
    findings: list[str]
    params: dict

    def report(self) -> str:
        """The caption and findings as plain text (what a notebook prints under the figure)."""
        return "\n".join([self.caption] + [f"- {line}" for line in self.findings])

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write PNG, CSV and provenance JSON under ``out_dir``; return the three paths."""
        stem = Path(out_dir) / self.name
        stem.parent.mkdir(parents=True, exist_ok=True)
        png, csv, meta = (stem.with_suffix(s) for s in (".png", ".csv", ".json"))
        self.figure.savefig(png, dpi=120, bbox_inches="tight")
        self.frame.to_csv(csv, index=False)
        record = provenance() | {"study": self.name, "caption": self.caption, "findings": self.findings,
                                 "params": self.params}
        meta.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return [png, csv, meta]


def fmt(x: float) -> str:
    """A measured number in the findings: 3 significant digits."""
    return f"{x:.3g}"
