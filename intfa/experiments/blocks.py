"""Error against the tile sizes: BLOCK_N alone (paper configuration), and BLOCK_M x BLOCK_N with block scales."""

from __future__ import annotations

import itertools

import numpy as np
import seaborn as sns

import sim

from .figures import Study, fmt, plt
from .harness import facet_titles, get_size, study_cases, study_params, sweep, usable_families
from .inputs import FAMILIES, synthetic_qkv


def block_n_study(size="small", families=FAMILIES, *, name="accuracy/error_vs_block_n", progress=True) -> Study:
    """Relative L2 error of the paper configuration against BLOCK_N (BLOCK_M 128), per input family."""
    size = get_size(size)
    families, dropped = usable_families(families)
    paper = sim.QuantConfig.paper()
    configs = {f"block_n={bn}": paper.replace(block_n=bn) for bn in size.block_sizes}
    cases, n = study_cases(size, families)
    frame = sweep(configs, cases, total_cases=n, desc="error vs BLOCK_N", progress=progress)

    means = frame.groupby(["family", "block_n"])["rel_l2"].mean().unstack("block_n")
    lo_bn, hi_bn = min(size.block_sizes), max(size.block_sizes)
    ratio = means[hi_bn] / means[lo_bn]
    findings = [f"{fam}: rel. L2 {fmt(means.loc[fam, lo_bn])} at BLOCK_N={lo_bn}, {fmt(means.loc[fam, hi_bn])} at "
                f"{hi_bn} ({fmt(ratio[fam])}x)" for fam in means.index]
    if dropped:
        findings.append(dropped)
    direction = "grows" if (ratio > 1.05).all() else "shrinks" if (ratio < 0.95).all() else "changes little"
    title = (f"Paper config: error {direction} with BLOCK_N "
             f"({fmt(ratio.min())}-{fmt(ratio.max())}x from {lo_bn} to {hi_bn} keys per tile)")
    # Each sample's error over its own error at the smallest BLOCK_N: the samples of a family differ in level
    # far more than BLOCK_N moves them, so absolute errors would show the spread between samples, not the trend.
    at_lo = frame["rel_l2"].where(frame["block_n"] == lo_bn).groupby([frame["family"], frame["sample"]])
    frame["ratio_to_smallest_block_n"] = frame["rel_l2"] / at_lo.transform("max")
    grid = sns.relplot(data=frame, x="block_n", y="ratio_to_smallest_block_n", col="family", kind="line", marker="o",
                       errorbar=("pi", 100), height=3, aspect=1.1)
    grid.set(xscale="log")
    for ax in grid.axes.flat:
        ax.set_xticks(list(size.block_sizes), [str(b) for b in size.block_sizes])
        ax.minorticks_off()
        ax.axhline(1.0, color="0.6", lw=0.8)
    grid.set_axis_labels("BLOCK_N (keys per tile)", f"rel. L2 error / at BLOCK_N={lo_bn}")
    facet_titles(grid).figure.suptitle(title, y=1.04)
    caption = (f"Each line: the mean over samples (seeds; layers for real) of a sample's relative L2 error divided by "
               f"its own error at BLOCK_N={lo_bn}; band: their min to max. Absolute errors per sample are in the CSV "
               "(rel_l2). Read how much the key-tile size moves the error of the paper's configuration.")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=families))


def block_grid_study(size="small", families=FAMILIES, *, name="accuracy/error_block_m_by_block_n",
                     progress=True) -> Study:
    """BLOCK_M x BLOCK_N heatmaps of the error with per-block Q and K scales, where both tile sizes matter.

    Also checks that with the paper's per-token scales BLOCK_M changes nothing (first finding).
    """
    size = get_size(size)
    families, dropped = usable_families(families)
    blocked = sim.QuantConfig.paper().replace(q_granularity="block", k_granularity="block")
    configs = {f"block_m={bm},block_n={bn}": blocked.replace(block_m=bm, block_n=bn)
               for bm, bn in itertools.product(size.grid_blocks, size.grid_blocks)}
    cases, n = study_cases(size, families, seeds=size.grid_seeds)
    frame = sweep(configs, cases, total_cases=n, desc="BLOCK_M x BLOCK_N", progress=progress)

    # With per-token Q scales, BLOCK_M is not part of the arithmetic: verify on one input.
    q, k, v = synthetic_qkv("normal", seq_len=size.seq_len, heads=size.heads, head_dim=size.head_dim, seed=0)
    outs = [sim.attention(q, k, v, config=sim.QuantConfig.paper().replace(block_m=bm)) for bm in size.grid_blocks]
    token_diff = max(float(np.max(np.abs(o - outs[0]))) for o in outs)

    means = frame.groupby(["family", "block_m", "block_n"])["rel_l2"].mean()
    findings = [(f"with per-token Q and K scales (the paper's), "
                 f"BLOCK_M {min(size.grid_blocks)}..{max(size.grid_blocks)} "
                 f"changes the output by at most {token_diff:.3g} (bit-identical when 0)")]
    spans = {}
    for fam in families:
        m = means.loc[fam]
        spans[fam] = m.max() / m.min()
        best, worst = tuple(map(int, m.idxmin())), tuple(map(int, m.idxmax()))
        findings.append(f"{fam}, per-block Q and K: best rel. L2 {fmt(m.min())} at (BLOCK_M, BLOCK_N)={best}, "
                        f"worst {fmt(m.max())} at {worst}")
    if dropped:
        findings.append(dropped)
    fig, axes = plt.subplots(1, len(families), figsize=(3.6 * len(families), 3.3), squeeze=False)
    for ax, fam in zip(axes[0], families):
        table = means.loc[fam].unstack("block_n")
        sns.heatmap(table, annot=True, fmt=".2g", cmap="viridis", ax=ax, cbar=False, annot_kws={"size": 7})
        ax.set_title(fam)
        ax.set_xlabel("BLOCK_N (keys per tile)")
        ax.set_ylabel("BLOCK_M (queries per tile)")
    fig.suptitle(f"Per-block Q/K scales: tile sizes move the error up to {fmt(max(spans.values()))}x "
                 f"(with per-token scales BLOCK_M changes nothing)", y=1.03)
    caption = ("Cells: relative L2 error vs float64 with Q scaled per BLOCK_M rows and K per BLOCK_N keys, "
               "mean over samples. Larger blocks share one scale among more rows.")
    return Study(name, frame, fig, caption, findings,
                 study_params(size, families=families, token_block_m_diff=token_diff))
