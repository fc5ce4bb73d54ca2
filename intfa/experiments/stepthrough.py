"""One head at small sizes, tile by tile: the pictures and tables of notebook 01.

Everything comes from :func:`sim.attention_trace`, which keeps each key tile's integer scores, scaled
scores, running max, P, P codes, normalizer and accumulator (:class:`sim.TileStep`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns

import sim
from sim import authors

from .figures import Study, fmt, plt
from .inputs import synthetic_qkv


def one_head(seq_len: int = 160, head_dim: int = 32, *, family: str = "normal", seed: int = 0):
    """Q, K, V of one (batch, head): each (1, 1, seq_len, head_dim) float16."""
    return synthetic_qkv(family, seq_len=seq_len, heads=1, head_dim=head_dim, seed=seed)


def tile_table(trace: sim.Trace, row: int) -> pd.DataFrame:
    """The running state of query ``row`` after each key tile: one row per tile.

    Columns: key_tile, keys, tile_max_s (exp2 domain), m, alpha, sum_p, sum_codes, l, acc_norm.
    """
    if not 0 <= row < trace.out.shape[2]:
        raise ValueError(f"row: expected a query index in [0, {trace.out.shape[2]}), got {row}")
    records = []
    for step in trace.steps:
        records.append({
            "key_tile": step.key_tile, "keys": f"{step.cols.start}..{step.cols.stop - 1}",
            "tile_max_s": float(step.s[0, 0, row].max()), "m": float(step.m[0, 0, row]),
            "alpha": float(step.alpha[0, 0, row]), "sum_p": float(step.p[0, 0, row].sum()),
            "sum_codes": float(np.asarray(step.p_codes[0, 0, row], np.float64).sum()),
            "l": float(step.l[0, 0, row]), "acc_norm": float(np.linalg.norm(step.acc[0, 0, row])),
        })
    return pd.DataFrame(records)


def _heatmap(ax, data, *, title, cmap, colorbar, center=None, row_step=32, col_step=8, col_offset=0):
    """One panel of a tile picture: ``data`` (rows x columns) with a labelled colorbar and sparse, level ticks."""
    sns.heatmap(data, ax=ax, cmap=cmap, center=center, xticklabels=False, yticklabels=False,
                cbar_kws={"label": colorbar, "shrink": 0.9, "pad": 0.02})
    rows, cols = data.shape
    ax.set_yticks(np.arange(0, rows, row_step) + 0.5, [str(r) for r in range(0, rows, row_step)], rotation=0)
    ax.set_xticks(np.arange(0, cols, col_step) + 0.5, [str(col_offset + c) for c in range(0, cols, col_step)],
                  rotation=0)
    ax.set_title(title, fontsize=10)


def plot_tile(trace: sim.Trace, tile: int, rows: slice | None = None) -> plt.Figure:
    """Heatmaps of one key tile for the query ``rows`` (default: all): integer scores Q8 K8^T, scaled
    scores S (exp2 domain), P = exp2(S - m) and its codes."""
    if not 0 <= tile < len(trace.steps):
        raise ValueError(f"tile: expected a key-tile index in [0, {len(trace.steps)}), got {tile}")
    step = trace.steps[tile]
    rows = slice(None) if rows is None else rows
    panels = [("integer scores Q8·K8ᵀ", step.qk, "vlag", "int32 dot product"),
              ("scaled scores S", np.where(np.isfinite(step.s), step.s, np.nan), "vlag", "log2 units"),
              ("P = exp2(S − m)", step.p, "viridis", "probability before 1/l, in [0, 1]"),
              (f"P codes ({trace.config.p_quant})", step.p_codes, "viridis", "integer code")]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), layout="constrained")
    for ax, (title, data, cmap, unit) in zip(axes, panels):
        _heatmap(ax, np.asarray(data[0, 0, rows], np.float64), title=title, cmap=cmap, colorbar=unit,
                 center=0 if cmap == "vlag" else None, col_offset=step.cols.start)
        ax.set_xlabel(f"key index (tile {tile}: keys {step.cols.start}..{step.cols.stop - 1})")
    axes[0].set_ylabel("query row")
    codes = np.asarray(step.p_codes[0, 0, rows], np.float64)
    zero = float(np.mean(codes[np.isfinite(step.s[0, 0, rows])] == (0 if trace.config.p_quant == "fixed127" else -128)))
    fig.suptitle(f"Key tile {tile}: {100 * zero:.0f}% of the unmasked P codes are the lowest code (P rounds to 0)")
    return fig


def plot_running_state(trace: sim.Trace) -> plt.Figure:
    """Per query row and key tile: the running max m, the rescale factor alpha, and the normalizer l."""
    tiles = len(trace.steps)
    stack = {name: np.stack([getattr(s, name)[0, 0] for s in trace.steps], axis=1) for name in ("m", "alpha", "l")}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    labels = {"m": ("running max m", "log2 units"), "alpha": ("rescale alpha = exp2(m_old − m_new)", "factor in [0, 1]"),
              "l": ("normalizer l", "sum of P so far")}
    for ax, (name, data) in zip(axes, stack.items()):
        title, unit = labels[name]
        _heatmap(ax, data, title=title, cmap="mako", colorbar=unit, col_step=1)
        ax.set_xlabel("after key tile")
    axes[0].set_ylabel("query row")
    rescaled = float(np.mean(stack["alpha"][:, 1:] < 1)) if tiles > 1 else 0.0
    fig.suptitle(f"Online softmax: the running max rises in {100 * rescaled:.0f}% of (row, tile) steps after "
                 f"the first, and each rise rescales l and acc by alpha < 1")
    return fig


def defects_per_row(seq_len: int = 200, head_dim: int = 32, *, block_m: int = 64, block_n: int = 32, seed: int = 0,
                    name: str = "stepthrough/authors_defects_per_row") -> Study:
    """The authors' three defects on one head, against the project's behaviour, error per query row.

    ``seq_len`` should not be a multiple of ``block_n`` so that the tail defect shows. Panels: causal
    (running max lost), normalizer (output with V = 1 should be exactly 1), tail (keys past N).
    """
    q, k, v = synthetic_qkv("normal", seq_len=seq_len, heads=2, head_dim=head_dim, seed=seed)
    config = authors.authors_config(block_m=block_m, block_n=block_n)
    fixed = config.replace(normalizer="quantized")

    def row_error(out, ref):
        return np.linalg.norm(out[0, 0] - ref[0, 0], axis=-1) / np.linalg.norm(ref[0, 0], axis=-1)

    rows = []
    ref_c = sim.reference_attention(q, k, v, is_causal=True)
    for variant, out in (("project", sim.attention(q, k, v, is_causal=True, config=config)),
                         ("authors", authors.causal_running_max_lost(q, k, v, config=config))):
        rows += [{"defect": "causal: running max lost", "variant": variant, "query": i, "value": e}
                 for i, e in enumerate(row_error(out, ref_c))]
    ones = np.ones_like(v)
    for variant, cfg in (("project", fixed), ("authors", config)):
        out = sim.attention(q, k, ones, config=cfg)[0, 0].astype(np.float64)
        rows += [{"defect": "normalizer: output − 1 with V = 1", "variant": variant, "query": i, "value": e}
                 for i, e in enumerate(out.mean(-1) - 1)]
    ref = sim.reference_attention(q, k, v)
    for variant, out in (("project", sim.attention(q, k, v, config=config)),
                         ("authors", authors.tail_past_block(q, k, v, config=config))):
        rows += [{"defect": f"tail: N={seq_len}, reads {(-seq_len) % block_n} keys past N", "variant": variant,
                  "query": i, "value": e} for i, e in enumerate(row_error(out, ref))]
    frame = pd.DataFrame(rows)
    med = frame.groupby(["defect", "variant"])["value"].agg(lambda x: float(np.median(np.abs(x))))
    findings = [f"{d}: median |per-row value| project {fmt(med[(d, 'project')])}, authors {fmt(med[(d, 'authors')])}"
                for d in frame["defect"].unique()]
    grid = sns.relplot(data=frame, x="query", y="value", hue="variant", col="defect", kind="line", height=3.2,
                       aspect=1.2, facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    for ax, defect in zip(grid.axes.flat, frame["defect"].unique()):
        ax.set_xlabel("query row")
        ax.set_ylabel("row mean of output − 1" if defect.startswith("normalizer") else "row rel. L2 error vs float64")
    grid.figure.subplots_adjust(wspace=0.35)
    causal = frame[(frame["defect"].str.startswith("causal")) & (frame["query"] >= block_m)]
    authors_late = causal[causal["variant"] == "authors"]["value"].median()
    grid.figure.suptitle(f"The authors' defects on one head (BLOCK_M={block_m}, BLOCK_N={block_n}): past the first "
                         f"query tile their causal rows err by {fmt(authors_late)} (median)", y=1.05)
    caption = ("Left: per-row error of causal attention; rows after the first query tile lose every key before "
               "their tile. Middle: with V = 1 the output must be 1; the float normalizer misses it. Right: per-row "
               "error when the last key tile runs past N.")
    return Study(name, frame, grid.figure, caption, findings,
                 {"seq_len": seq_len, "head_dim": head_dim, "block_m": block_m, "block_n": block_n, "seed": seed})
