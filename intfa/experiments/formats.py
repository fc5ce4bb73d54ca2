"""The paper's error figure: FP16, FP8, half-INT8 and full INT8 against sequence length, beside the paper's numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import sim

from .figures import Study, fmt, plt
from .harness import get_size, rows_independent, study_cases, study_params, sweep
from .inputs import SYNTHETIC_FAMILIES
from .paper import FORMATS_STUDY, FP8_FORMATS, INT8_FORMAT, PAPER_ERROR_RATIO_VS_FP8, error_ratios

FORMATS = {
    "FP16": sim.QuantConfig.fp16(),
    "FP8 e4m3": sim.QuantConfig.fp8("e4m3"),
    "FP8 e5m2": sim.QuantConfig.fp8("e5m2"),
    "half-INT8": sim.QuantConfig.half_int8(),
    INT8_FORMAT: sim.QuantConfig.paper(),
}
#: What the figure's rows show: metric -> axis label.
METRIC_LABELS = {"mre_all": "MRE over every element\n(the paper's formula)", "rel_l2": "relative L2 error"}


def _lines(ax, frame, x, y, hue, colors, styles=None):
    """One line per ``hue`` value: the mean over samples of ``y`` against ``x``, a band from min to max."""
    for label, group in frame.groupby(hue, sort=False):
        stats = group.groupby(x)[y].agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"], (styles or {}).get(label, "o-"), color=colors[label], label=label, ms=4)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=colors[label], alpha=0.15, lw=0)


def formats_vs_seq_len_study(size="small", families=("normal", "uniform"), *, name=FORMATS_STUDY,
                             progress=True) -> Study:
    """The paper's error figure: FP16, FP8 e4m3/e5m2, half-INT8, full INT8 against N (the paper's 1k-16k at full
    size), by the paper's MRE formula over every element and by relative L2, with full INT8's error over FP8's
    beside the paper's per-distribution numbers (:data:`.paper.PAPER_ERROR_RATIO_VS_FP8`).

    Each sample has ``size.format_heads`` heads; at long N the error is measured on ``size.query_rows`` query
    rows of each, attending to every key (:func:`.harness.subsample_queries`; every format here keeps output
    rows independent).
    The frame is tidy: family, sample, seq_len, query_rows, format, metric (rel_l2, mre_paper, mre_all), value.
    """
    size = get_size(size)
    bad = [f for f in families if f not in SYNTHETIC_FAMILIES]
    if bad:
        raise ValueError(f"families: expected synthetic families {SYNTHETIC_FAMILIES}, got {bad}")
    # The subsampled measurement is exact only where rows do not share a scale.
    mixing = [label for label, config in FORMATS.items() if not rows_independent(config)]
    if mixing and size.query_rows is not None:
        raise ValueError(f"FORMATS: {mixing} share a scale across query rows; cannot measure on a subset of rows")
    parts = []
    for n in tqdm(size.seq_lens, desc="formats vs N", disable=not progress, leave=False):
        cases, count = study_cases(size, families, seq_len=n, heads=size.format_heads, query_rows=size.query_rows)
        parts.append(sweep(FORMATS, cases, total_cases=count, desc=f"N={n}", progress=progress))
    wide = pd.concat(parts, ignore_index=True).rename(columns={"config": "format"})
    frame = wide.melt(id_vars=["family", "sample", "seq_len", "query_rows", "format"],
                      value_vars=["rel_l2", "mre_paper", "mre_all"], var_name="metric", value_name="value")

    ratios = error_ratios(frame)  # full INT8 / FP8, mean over samples, per family, N and FP8 format
    ratios_l2 = error_ratios(frame, "rel_l2")
    findings = []
    for fam, fp8 in itertools.product(families, FP8_FORMATS):
        r = ratios[(ratios["family"] == fam) & (ratios["fp8"] == fp8)].set_index("seq_len")["ratio"]
        r2 = ratios_l2[(ratios_l2["family"] == fam) & (ratios_l2["fp8"] == fp8)].set_index("seq_len")["ratio"]
        paper = PAPER_ERROR_RATIO_VS_FP8.get(fam)
        findings.append(f"{fam}: full INT8's MRE is {100 * (1 - r.median()):.0f}% smaller than {fp8}'s (median over "
                        f"N; {100 * (1 - r.max()):.0f}-{100 * (1 - r.min()):.0f}%), by rel. L2 "
                        f"{100 * (1 - r2.median()):.0f}%"
                        + (f"; paper: {100 * (1 - paper.value):.0f}%" if paper else ""))
    n_max = max(size.seq_lens)
    means = wide[wide["seq_len"] == n_max].groupby(["family", "format"])["rel_l2"].mean()
    for fam in families:
        findings.append(f"{fam}, N={n_max}: rel. L2 " + ", ".join(f"{f} {fmt(means[(fam, f)])}" for f in FORMATS))
    if size.query_rows is not None:
        findings.append(f"at N > {size.query_rows}, errors are over {size.query_rows} evenly spaced query rows per head "
                        "(the last included), each attending to all N keys")

    colors = dict(zip(FORMATS, plt.get_cmap("tab10").colors))
    fp8_colors = {fp8: colors[fp8] for fp8 in FP8_FORMATS}
    fig, axes = plt.subplots(len(METRIC_LABELS) + 1, len(families), figsize=(4.6 * len(families), 8.4),
                             sharex=True, squeeze=False)
    for col, fam in enumerate(families):
        for row, (metric, label) in enumerate(METRIC_LABELS.items()):
            ax = axes[row][col]
            _lines(ax, frame[(frame["family"] == fam) & (frame["metric"] == metric)], "seq_len", "value", "format",
                   colors)
            ax.set_yscale("log")
            ax.set_title(f"{fam} inputs" if row == 0 else "", fontsize=10)
            if col == 0:
                ax.set_ylabel(label)
        ax = axes[-1][col]
        r = ratios[ratios["family"] == fam].rename(columns={"fp8": "vs"})
        _lines(ax, r, "seq_len", "ratio", "vs", fp8_colors)
        paper = PAPER_ERROR_RATIO_VS_FP8.get(fam)
        if paper is not None:
            ax.axhline(paper.value, color="black", ls="--", lw=1.2)
            ax.text(max(size.seq_lens), paper.value, f"paper: {paper.value:.2f} ({100 * (1 - paper.value):.0f}% smaller)",
                    ha="right", va="bottom", fontsize=8)
        # From 0, and high enough for every band: where full INT8 errs more than FP8 on some sample, that shows.
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.set_ylim(0, max(1.05, 1.05 * float(r["ratio"].max())))
        ax.set_xlabel("sequence length N (tokens)")
        if col == 0:
            ax.set_ylabel("full INT8 MRE / FP8 MRE")
    for ax in axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(size.seq_lens), [f"{n // 1024}k" if n >= 1024 else str(n) for n in size.seq_lens])
        ax.minorticks_off()
        ax.grid(axis="y", alpha=0.3, which="major")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, title="format", loc="upper left", bbox_to_anchor=(1.0, 0.93), frameon=False)
    handles, labels = axes[-1][0].get_legend_handles_labels()
    fig.legend(handles, [f"full INT8 / {lab}" for lab in labels], loc="lower left", bbox_to_anchor=(1.0, 0.1),
               frameon=False)
    fig.tight_layout()
    e4m3 = ratios[ratios["fp8"] == FP8_FORMATS[0]].groupby("family")["ratio"].median()
    fig.suptitle(f"Full INT8 vs {FP8_FORMATS[0]}, N={min(size.seq_lens)}-{n_max}: MRE " + ", ".join(
        f"{100 * (1 - e4m3[fam]):.0f}% smaller on {fam} inputs"
        + (f" (paper {100 * (1 - PAPER_ERROR_RATIO_VS_FP8[fam].value):.0f}%)" if fam in PAPER_ERROR_RATIO_VS_FP8 else "")
        for fam in families), y=1.02)
    caption = ("Lines: mean over samples (seeds), bands their min to max. Top rows: each format's "
               "error against float64 attention, by the paper's MRE formula over every element and by relative L2. "
               "Bottom: full INT8's MRE over FP8's; dashed, the paper's ratio for that input distribution. FP8 is "
               "unscaled, as in the paper; the paper's 4-element MRE is in the CSV (metric mre_paper).")
    return Study(name, frame, fig, caption, findings,
                 study_params(size, families=list(families), formats={k: str(v) for k, v in FORMATS.items()}))


def paper_ratio_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Full INT8's error over each FP8 format's, per family and N, for every metric of ``frame``: a wide table
    with one column per (metric, FP8 format), each the median over samples of the ratio taken on the same inputs
    (:func:`.paper.error_ratios`), and the paper's ratio (NaN where the paper gives none)."""
    wide = pd.concat({metric: error_ratios(frame, metric).groupby(["family", "seq_len", "fp8"])["ratio"].median()
                      for metric in frame["metric"].unique()}, axis=1).unstack("fp8")
    wide.columns = [f"{metric} / {fp8}" for metric, fp8 in wide.columns]
    paper = {fam: p.value for fam, p in PAPER_ERROR_RATIO_VS_FP8.items()}
    return wide.assign(paper=[paper.get(fam, np.nan) for fam in wide.index.get_level_values("family")])
