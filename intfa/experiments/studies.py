"""The accuracy studies: each runs sim over a family of inputs and returns a :class:`Study`.

Every error is measured against float64 attention (:func:`sim.reference_attention`) over every
output element; the paper's MRE (:func:`sim.mre_paper`, 4 elements) is reported only to compare with
the paper. The findings attached to each figure are sentences computed from its frame, so that what a
figure says is what was measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

import sim
from sim import authors

from .figures import Study, fmt, plt
from .inputs import FAMILIES, SYNTHETIC_FAMILIES, input_cases, real_available, synthetic_qkv

METRICS = ("rel_l2", "max_abs", "cosine", "mre_paper", "mre_all")


# --- sizes --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each study runs. "small" is for CI and notebooks' default; "full" for the results.

    seeds : synthetic samples per family (bands over them); heads, head_dim, seq_len : synthetic shape
    of the block and granularity studies; block_sizes : BLOCK_N (and BLOCK_M) swept; grid_seeds :
    samples per family and block sizes of the BLOCK_M x BLOCK_N grid (``grid_blocks``); seq_lens : N of the format study; causal_seq_lens
    and tail_seq_lens : N of the defect studies; bias_seq_lens, bias_heads : the normalizer probe (no
    reference needed, so it reaches further); real_tokens : text length of the real activations.
    """

    name: str
    seeds: tuple
    heads: int
    head_dim: int
    seq_len: int
    block_sizes: tuple
    grid_blocks: tuple
    grid_seeds: tuple
    seq_lens: tuple
    causal_seq_lens: tuple
    tail_seq_lens: tuple
    bias_seq_lens: tuple
    bias_heads: int
    real_tokens: int


SIZES = {
    "small": Size("small", seeds=(0, 1), heads=2, head_dim=64, seq_len=256, block_sizes=(16, 32, 64, 128, 256),
                  grid_blocks=(16, 64, 256), grid_seeds=(0,), seq_lens=(128, 256, 512), causal_seq_lens=(256, 512),
                  tail_seq_lens=(200, 255), bias_seq_lens=(256, 1024), bias_heads=2, real_tokens=128),
    "full": Size("full", seeds=(0, 1, 2), heads=4, head_dim=64, seq_len=1024, block_sizes=(16, 32, 64, 128, 256),
                 grid_blocks=(16, 32, 64, 128, 256), grid_seeds=(0,), seq_lens=(256, 512, 1024, 2048, 4096), causal_seq_lens=(512, 1024, 2048, 4096),
                 tail_seq_lens=(1000, 1025, 2047), bias_seq_lens=(256, 1024, 4096, 16384), bias_heads=1,
                 real_tokens=512),
}


def get_size(size: str | Size) -> Size:
    """A :class:`Size` from its name ("small" or "full"), or itself."""
    if isinstance(size, Size):
        return size
    if size not in SIZES:
        raise ValueError(f"size: expected one of {list(SIZES)}, got {size!r}")
    return SIZES[size]


def usable_families(families: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """``families`` without "real" where it cannot be captured, and the reason (None if nothing dropped)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families: expected names from {FAMILIES}, got {unknown}")
    if "real" in families:
        ok, reason = real_available()
        if not ok:
            warnings.warn(reason, stacklevel=2)
            return tuple(f for f in families if f != "real"), reason
    return tuple(families), None


# --- measurement --------------------------------------------------------------------------------------


def reference(q, k, v, *, is_causal=False) -> np.ndarray:
    """float64 attention (:func:`sim.reference_attention`), one (batch, head) at a time to bound memory."""
    out = np.empty(q.shape, np.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            sl = (slice(b, b + 1), slice(h, h + 1))
            out[sl] = sim.reference_attention(q[sl], k[sl], v[sl], is_causal=is_causal)
    return out


def config_fields(config: sim.QuantConfig) -> dict:
    """The configuration as columns of a tidy frame."""
    return dataclasses.asdict(config)


def sweep(configs: Mapping[str, sim.QuantConfig], cases, *, is_causal=False, total_cases=None,
          desc="sweep", progress=True, on_error="raise") -> pd.DataFrame:
    """Run every configuration on every input case; one row per (case, configuration).

    configs : name -> :class:`sim.QuantConfig`; cases : iterable of :class:`InputCase`.
    on_error : "raise", or "record": a configuration that sim rejects gets NaN metrics and its error
        message in the ``error`` column, so that one unsupported setting leaves a visible hole in the
        figure instead of no figure.
    Columns: family, sample, seq_len, heads, head_dim, config, the config's fields, METRICS, error.
    """
    if not configs:
        raise ValueError("configs: expected at least one configuration")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error: expected 'raise' or 'record', got {on_error!r}")
    rows = []
    total = None if total_cases is None else total_cases * len(configs)
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        for case in cases:
            ref = reference(case.q, case.k, case.v, is_causal=is_causal)
            for name, config in configs.items():
                error = None
                try:
                    out = sim.attention(case.q, case.k, case.v, is_causal=is_causal, config=config)
                    metrics = sim.all_metrics(out, ref)
                except ValueError as err:
                    if on_error == "raise":
                        raise
                    error, metrics = f"{type(err).__name__}: {err}", dict.fromkeys(METRICS, np.nan)
                rows.append({"family": case.family, "sample": case.sample, "seq_len": case.seq_len,
                             "heads": case.q.shape[1], "head_dim": case.q.shape[3], "config": name,
                             **config_fields(config), **metrics, "error": error})
                bar.update()
    return pd.DataFrame(rows)


def _failures(frame: pd.DataFrame, label_column: str) -> list[str]:
    """Findings naming each configuration sim could not run (recorded by :func:`sweep`)."""
    failed = frame[frame["error"].notna()]
    return [f"not measured, sim raised for '{label}': {msg}"
            for label, msg in failed.groupby(label_column)["error"].first().items()]


def _cases(size: Size, families, seeds=None, seq_len=None):
    seeds = size.seeds if seeds is None else seeds
    cases = input_cases(families, seq_len=seq_len or size.seq_len, heads=size.heads, head_dim=size.head_dim,
                        seeds=seeds, real_tokens=size.real_tokens)
    n_real = 6 if "real" in families else 0  # MiniLM has 6 layers
    return cases, len(seeds) * len([f for f in families if f != "real"]) + n_real


def _params(size: Size, **extra) -> dict:
    return {"size": dataclasses.asdict(size)} | extra


def _log2_ticks(grid, values):
    """Tick exactly the swept values on a log x axis (no minor-tick clutter)."""
    for ax in grid.axes.flat:
        ax.set_xticks(list(values), [str(v) for v in values])
        ax.minorticks_off()


def _facet_title(grid, template="{col_name}"):
    grid.set_titles(template)
    return grid


# --- error vs BLOCK_N and BLOCK_M ---------------------------------------------------------------------


def block_n_study(size="small", families=FAMILIES, *, name="accuracy/error_vs_block_n", progress=True) -> Study:
    """Relative L2 error of the paper configuration against BLOCK_N (BLOCK_M 128), per input family."""
    size = get_size(size)
    families, dropped = usable_families(families)
    paper = sim.QuantConfig.paper()
    configs = {f"block_n={bn}": paper.replace(block_n=bn) for bn in size.block_sizes}
    cases, n = _cases(size, families)
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
             f"({fmt(ratio.min())}-{fmt(ratio.max())}x from {lo_bn} to {hi_bn})")
    grid = sns.relplot(data=frame, x="block_n", y="rel_l2", col="family", kind="line", marker="o",
                       errorbar=("pi", 100), facet_kws={"sharey": False}, height=3, aspect=1.1)
    grid.set(xscale="log", yscale="log")
    for ax in grid.axes.flat:
        ax.set_xticks(list(size.block_sizes), [str(b) for b in size.block_sizes])
        ax.minorticks_off()
    grid.set_axis_labels("BLOCK_N (keys per tile)", "relative L2 error vs float64")
    _facet_title(grid).figure.suptitle(title, y=1.04)
    caption = ("Each line: mean over samples (seeds; layers for real), band: their min to max. "
               "Read how much the key-tile size moves the error of the paper's configuration.")
    return Study(name, frame, grid.figure, caption, findings, _params(size, families=families))


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
    cases, n = _cases(size, families, seeds=size.grid_seeds)
    frame = sweep(configs, cases, total_cases=n, desc="BLOCK_M x BLOCK_N", progress=progress)

    # With per-token Q scales, BLOCK_M is not part of the arithmetic: verify on one input.
    q, k, v = synthetic_qkv("normal", seq_len=size.seq_len, heads=size.heads, head_dim=size.head_dim, seed=0)
    outs = [sim.attention(q, k, v, config=sim.QuantConfig.paper().replace(block_m=bm)) for bm in size.grid_blocks]
    token_diff = max(float(np.max(np.abs(o - outs[0]))) for o in outs)

    means = frame.groupby(["family", "block_m", "block_n"])["rel_l2"].mean()
    findings = [(f"with per-token Q and K scales (the paper's), BLOCK_M {min(size.grid_blocks)}..{max(size.grid_blocks)} "
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
    return Study(name, frame, fig, caption, findings, _params(size, families=families, token_block_m_diff=token_diff))


# --- error vs scale granularity -----------------------------------------------------------------------


def granularity_configs() -> dict[str, dict[str, sim.QuantConfig]]:
    """factor -> {label: config}: each factor varied alone from the paper's configuration.

    "qk": Q x K scale granularity; "v": V's; "p": how P becomes codes (levels, what it is scaled
    against, when the simulator has that option) and what the normalizer sums.
    """
    paper = sim.QuantConfig.paper()
    factors = {
        "qk": {f"Q {qg} / K {kg}": paper.replace(q_granularity=qg, k_granularity=kg)
               for qg, kg in itertools.product(sim.QK_GRANULARITIES, sim.QK_GRANULARITIES)},
        "v": {f"V {vg}": paper.replace(v_granularity=vg) for vg in sim.V_GRANULARITIES},
    }
    factors["p"] = {}
    for pq, ps, norm in itertools.product(sim.P_QUANTS, sim.P_SCALES, sim.NORMALIZERS):
        factors["p"][f"{pq}, scale {ps}, l {norm}"] = paper.replace(p_quant=pq, p_scale=ps, normalizer=norm)
    factors["p"]["P float32 (no P quantization)"] = paper.replace(pv_format="float32")
    return factors


def granularity_studies(size="small", families=FAMILIES, *, prefix="accuracy/", progress=True) -> list[Study]:
    """Three figures from one sweep: Q x K granularity (heatmaps), V granularity, P resolution and normalizer."""
    size = get_size(size)
    families, dropped = usable_families(families)
    factors = granularity_configs()
    unique = {}
    for labels in factors.values():
        for config in labels.values():
            unique.setdefault(config, f"config{len(unique)}")
    cases, n = _cases(size, families)
    raw = sweep({name: cfg for cfg, name in unique.items()}, cases, total_cases=n, desc="granularity",
                progress=progress, on_error="record")
    frames = {}
    for factor, labels in factors.items():
        parts = []
        for label, config in labels.items():
            part = raw[raw["config"] == unique[config]].copy()
            part["factor"], part["setting"] = factor, label
            parts.append(part)
        frames[factor] = pd.concat(parts, ignore_index=True).drop(columns="config")
    params = _params(size, families=families)
    paper_label = {"qk": "Q token / K token", "v": "V tensor", "p": "fixed127, scale fixed, l float"}
    extra = [dropped] if dropped else []
    studies = []
    failures = {factor: _failures(frame, "setting") for factor, frame in frames.items()}

    # Q x K heatmaps
    qk = frames["qk"]
    means = qk.groupby(["family", "q_granularity", "k_granularity"])["rel_l2"].mean()
    order = list(sim.QK_GRANULARITIES)
    fig, axes = plt.subplots(1, len(families), figsize=(3.4 * len(families), 3.2), squeeze=False)
    findings = []
    worst_ratio = 0.0
    for ax, fam in zip(axes[0], families):
        table = means.loc[fam].unstack("k_granularity").reindex(index=order, columns=order)
        sns.heatmap(table, annot=True, fmt=".2g", cmap="magma_r", ax=ax, cbar=False)
        ax.set_title(fam)
        ax.set_xlabel("K scale granularity")
        ax.set_ylabel("Q scale granularity")
        token = table.loc["token", "token"]
        worst = table.stack().idxmax()  # NaN cells (not measured) are skipped
        worst_ratio = max(worst_ratio, table.loc[worst] / token)
        findings.append(f"{fam}: per-token Q and K {fmt(token)}; per-block {fmt(table.loc['block', 'block'])}; "
                        f"worst Q {worst[0]} / K {worst[1]} {fmt(table.loc[worst])} ({fmt(table.loc[worst] / token)}x)")
    fig.suptitle(f"Q/K scale granularity: coarser scales cost up to {fmt(worst_ratio)}x the per-token error",
                 y=1.04)
    studies.append(Study(prefix + "error_vs_qk_granularity", qk, fig,
                         "Cells: relative L2 error vs float64, mean over samples; rows Q's granularity, columns K's. "
                         f"Per-block uses BLOCK_M={sim.QuantConfig.paper().block_m} / "
                         f"BLOCK_N={sim.QuantConfig.paper().block_n} rows per scale.", findings + failures["qk"] + extra,
                         params))

    # V and P: bar charts per family, relative to the paper's setting
    for factor, title_what, caption_what in (
        ("v", "V scale granularity", "V's scale: one per tensor (paper), per channel, or per BLOCK_N keys and channel"),
        ("p", "P codes and normalizer", ("how P becomes 8-bit codes (127 levels or 255 signed, and, where the "
                                         "simulator offers it, scaled by the tile's row max) and whether l sums "
                                         "float P or the codes")),
    ):
        frame = frames[factor]
        means = frame.groupby(["family", "setting"], sort=False)["rel_l2"].mean()
        findings = []
        best_gain = 0.0
        for fam in families:
            m = means.loc[fam]
            base = m[paper_label[factor]]
            quantized = m.drop(labels=[s for s in m.index if s.startswith("P float32")])
            best = quantized.idxmin()
            best_gain = max(best_gain, base / quantized.min())
            findings.append(f"{fam}: paper setting ({paper_label[factor]}) {fmt(base)}; best '{best}' "
                            f"{fmt(quantized.min())} ({fmt(quantized.min() / base)}x)"
                            + (f"; unquantized P {fmt(m.filter(like='P float32').iloc[0])}" if factor == "p" else ""))
        grid = sns.catplot(data=frame, x="rel_l2", y="setting", col="family", kind="bar", errorbar="sd",
                           sharex=False, height=3.2, aspect=1.2, color="tab:blue")
        grid.set(xscale="log")
        grid.set_axis_labels("relative L2 error vs float64", "")
        _facet_title(grid).figure.suptitle(f"{title_what}: the best setting cuts the paper's error "
                                           f"up to {fmt(best_gain)}x", y=1.04)
        studies.append(Study(prefix + f"error_vs_{factor}_{'granularity' if factor == 'v' else 'resolution'}",
                             frame, grid.figure, f"Bars: mean relative L2 over samples, whiskers one standard deviation; "
                             f"{caption_what}; everything else as the paper.", findings + failures[factor] + extra,
                             params))
    return studies


# --- the paper's error figure -------------------------------------------------------------------------

FORMATS = {
    "FP16": sim.QuantConfig.fp16(),
    "FP8 e4m3": sim.QuantConfig.fp8("e4m3"),
    "FP8 e5m2": sim.QuantConfig.fp8("e5m2"),
    "half-INT8": sim.QuantConfig.half_int8(),
    "full-INT8 (paper)": sim.QuantConfig.paper(),
}
#: The paper's accuracy claim: full INT8's error is 82% smaller than FP8's (normal inputs).
PAPER_ERROR_REDUCTION_VS_FP8 = 0.82


def formats_vs_seq_len_study(size="small", families=("normal", "uniform"), *, name="accuracy/paper_error_vs_seq_len",
                             progress=True) -> Study:
    """The paper's error figure: FP16, FP8 e4m3/e5m2, half-INT8, full INT8 against N; three metrics."""
    size = get_size(size)
    bad = [f for f in families if f not in SYNTHETIC_FAMILIES]
    if bad:
        raise ValueError(f"families: expected synthetic families {SYNTHETIC_FAMILIES}, got {bad}")
    parts = []
    for n in tqdm(size.seq_lens, desc="formats vs N", disable=not progress, leave=False):
        cases, count = _cases(size, families, seq_len=n)
        parts.append(sweep(FORMATS, cases, total_cases=count, desc=f"N={n}", progress=progress))
    wide = pd.concat(parts, ignore_index=True).rename(columns={"config": "format"})
    frame = wide.melt(id_vars=["family", "sample", "seq_len", "format"], value_vars=["rel_l2", "mre_paper", "mre_all"],
                      var_name="metric", value_name="value")
    n_max = max(size.seq_lens)
    means = wide[wide["seq_len"] == n_max].groupby(["family", "format"])[["rel_l2", "mre_paper", "mre_all"]].mean()
    findings = []
    for fam in families:
        m = means.loc[fam]
        for fp8 in ("FP8 e4m3", "FP8 e5m2"):
            cut = {metric: 1 - m.loc["full-INT8 (paper)", metric] / m.loc[fp8, metric]
                   for metric in ("rel_l2", "mre_paper", "mre_all")}
            findings.append(f"{fam}, N={n_max}: full INT8 vs {fp8}: error {100 * cut['rel_l2']:.0f}% smaller by rel. L2, "
                            f"{100 * cut['mre_all']:.0f}% by MRE over all elements, {100 * cut['mre_paper']:.0f}% by the "
                            f"paper's 4-element MRE (paper: {100 * PAPER_ERROR_REDUCTION_VS_FP8:.0f}%)")
        findings.append(f"{fam}, N={n_max}: rel. L2 FP16 {fmt(m.loc['FP16', 'rel_l2'])}, half-INT8 "
                        f"{fmt(m.loc['half-INT8', 'rel_l2'])}, full INT8 {fmt(m.loc['full-INT8 (paper)', 'rel_l2'])}")
    cut_normal = 1 - means.loc[(families[0], "full-INT8 (paper)"), "rel_l2"] / means.loc[(families[0], "FP8 e4m3"), "rel_l2"]
    grid = sns.relplot(data=frame, x="seq_len", y="value", hue="format", col="family", row="metric", kind="line",
                       marker="o", errorbar=("pi", 100), height=2.8, aspect=1.3, facet_kws={"sharey": "row"})
    grid.set(xscale="log", yscale="log")
    _log2_ticks(grid, size.seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "error vs float64")
    _facet_title(grid, "{row_name} | {col_name}").figure.suptitle(
        f"Full INT8 vs FP8 e4m3 on {families[0]} inputs at N={n_max}: {100 * cut_normal:.0f}% less error "
        f"by rel. L2 (paper claims {100 * PAPER_ERROR_REDUCTION_VS_FP8:.0f}% by MRE)", y=1.02)
    caption = ("Lines: mean over seeds, bands their min to max; rows: relative L2 over all elements, the paper's "
               "MRE over the last 4 elements, the same MRE over all elements. FP8 here is unscaled, as in the paper.")
    return Study(name, frame, grid.figure, caption, findings, _params(size, families=list(families)))


# --- the authors' defects -----------------------------------------------------------------------------


def causal_defect_study(size="small", families=("normal", "uniform"), *, name="accuracy/authors_causal_defect",
                        progress=True) -> Study:
    """Causal error vs float64: the project's (sim) against the authors' kernel, running max lost."""
    size = get_size(size)
    config = authors.authors_config()
    rows = []
    for n in tqdm(size.causal_seq_lens, desc="causal defect", disable=not progress, leave=False):
        for fam, seed in itertools.product(families, size.seeds):
            q, k, v = synthetic_qkv(fam, seq_len=n, heads=size.heads, head_dim=size.head_dim, seed=seed)
            ref = reference(q, k, v, is_causal=True)
            outs = {"project (sim)": sim.attention(q, k, v, is_causal=True, config=config),
                    "authors (running max lost)": authors.causal_running_max_lost(q, k, v, config=config)}
            for variant, out in outs.items():
                rows.append({"family": fam, "sample": seed, "seq_len": n, "variant": variant,
                             **sim.all_metrics(out, ref)})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["family", "seq_len", "variant"])["rel_l2"].mean()
    n_max = max(size.causal_seq_lens)
    findings = [f"{fam}, N={n_max}: project {fmt(means[(fam, n_max, 'project (sim)')])}, authors "
                f"{fmt(means[(fam, n_max, 'authors (running max lost)')])} (rel. L2)" for fam in families]
    ratio = min(means[(fam, n_max, "authors (running max lost)")] / means[(fam, n_max, "project (sim)")]
                for fam in families)
    grid = sns.relplot(data=frame, x="seq_len", y="rel_l2", hue="variant", col="family", kind="line", marker="o",
                       errorbar=("pi", 100), height=3, aspect=1.2)
    grid.set(xscale="log", yscale="log")
    _log2_ticks(grid, size.causal_seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "relative L2 error vs float64 (causal)")
    _facet_title(grid).figure.suptitle(f"Causal full INT8: the authors' kernel errs {fmt(ratio)}x or more "
                                       f"than the project's at N={n_max}", y=1.04)
    caption = ("The authors' kernel forgets the running max before the diagonal block, so each query sees only "
               f"the {config.block_m} keys of its own tile: its error is of order 1, not quantization-sized.")
    return Study(name, frame, grid.figure, caption, findings, _params(size, families=list(families)))


def normalizer_bias_study(size="small", families=SYNTHETIC_FAMILIES, *, name="accuracy/authors_normalizer_bias",
                          progress=True) -> Study:
    """The bias of a normalizer that sums float P, probed with V = 1 (exact output: 1 everywhere).

    With V = 1 the V codes are exactly 127 and float64 attention gives exactly 1, so ``mean(out) - 1`` is
    the normalizer's bias and nothing else: sum(round(127 P)) / (127 sum P) - 1 for the float normalizer.
    """
    size = get_size(size)
    rows = []
    for n in tqdm(size.bias_seq_lens, desc="normalizer bias", disable=not progress, leave=False):
        for fam, seed in itertools.product(families, size.seeds):
            q, k, _ = synthetic_qkv(fam, seq_len=n, heads=size.bias_heads, head_dim=size.head_dim, seed=seed)
            ones = np.ones_like(k)
            for norm in sim.NORMALIZERS:
                out = sim.attention(q, k, ones, config=authors.authors_config().replace(normalizer=norm))
                rows.append({"family": fam, "sample": seed, "seq_len": n, "normalizer": norm,
                             "bias": float(out.astype(np.float64).mean() - 1.0),
                             "max_abs_bias": float(np.abs(out.astype(np.float64) - 1.0).max())})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["family", "seq_len", "normalizer"])["bias"].mean()
    findings = [f"{fam}, N={n}: l float {100 * means[(fam, n, 'float')]:+.3f}%, l quantized "
                f"{100 * means[(fam, n, 'quantized')]:+.2g}%" for fam in families for n in (min(size.bias_seq_lens),
                                                                                           max(size.bias_seq_lens))]
    worst = float(means.xs("float", level="normalizer").abs().max())
    fixed = float(means.xs("quantized", level="normalizer").abs().max())
    plot = frame.assign(bias_percent=100 * frame["bias"])
    grid = sns.relplot(data=plot, x="seq_len", y="bias_percent", hue="normalizer", col="family", kind="line",
                       marker="o", errorbar=("pi", 100), height=3, aspect=1.1)
    grid.set(xscale="log")
    for ax in grid.axes.flat:
        ax.axhline(0, color="0.5", lw=0.8)
    _log2_ticks(grid, size.bias_seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "mean output bias with V = 1 (%)")
    _facet_title(grid).figure.suptitle(f"Normalizer summing float P: bias up to {100 * worst:.2g}% "
                                       f"(summing the codes: {100 * fixed:.1g}%)", y=1.04)
    caption = ("With V = 1 the exact output is 1; the curve is the mean of (output - 1) over every element. "
               "The authors' l sums float P while the numerator multiplies round(127 P).")
    return Study(name, frame, grid.figure, caption, findings, _params(size, families=list(families)))


def tail_defect_study(size="small", family="normal", *, name="accuracy/authors_tail_defect", progress=True) -> Study:
    """Non-causal error when N is not a multiple of BLOCK_N: masked (project) vs read past the end (authors)."""
    size = get_size(size)
    config = authors.authors_config()
    heads = max(2, size.heads)
    rows = []
    for n in tqdm(size.tail_seq_lens, desc="tail defect", disable=not progress, leave=False):
        for seed in size.seeds:
            q, k, v = synthetic_qkv(family, seq_len=n, heads=heads, head_dim=size.head_dim, seed=seed)
            ref = reference(q, k, v)
            outs = {"project (sim)": sim.attention(q, k, v, config=config),
                    "authors": authors.tail_past_block(q, k, v, config=config, garbage_seed=seed)}
            for variant, out in outs.items():
                for h in range(heads):
                    reads = "none" if n % config.block_n == 0 else ("next head's rows" if h < heads - 1
                                                                    else "past the tensor's end")
                    label = variant if variant.startswith("project") else f"authors, reading {reads}"
                    rows.append({"family": family, "sample": seed, "seq_len": n, "head": h, "variant": label,
                                 "keys_read_past_n": (-n) % config.block_n,
                                 **sim.all_metrics(out[:, h:h + 1], ref[:, h:h + 1])})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["seq_len", "variant"])["rel_l2"].mean()
    findings = [f"N={n} ({(-n) % config.block_n} keys read past N): " +
                ", ".join(f"{variant} {fmt(means[(n, variant)])}" for variant in means.loc[n].index)
                for n in size.tail_seq_lens]
    project = means.xs("project (sim)", level="variant")
    authors_min = means.drop(index="project (sim)", level="variant").min()
    grid = sns.catplot(data=frame, x="seq_len", y="rel_l2", hue="variant", kind="bar", errorbar="sd", height=3.2,
                       aspect=1.8)
    grid.set(yscale="log")
    grid.set_axis_labels("sequence length N (tokens; BLOCK_N = 64)", "relative L2 error vs float64, per head")
    grid.figure.suptitle(f"Tails past the block: reading the next rows raises the error from "
                         f"{fmt(project.max())} or less to {fmt(authors_min)} or more", y=1.04)
    caption = ("Non-causal, per head. The authors' kernel reads whole key tiles: past N it takes the next head's "
               "first rows, or for the last head unrelated memory (modelled as random codes).")
    return Study(name, frame, grid.figure, caption, findings, _params(size, family=family))


# --- real activations ---------------------------------------------------------------------------------


def real_layer_head_study(size="small", *, name="accuracy/real_error_by_layer_head", progress=True) -> Study:
    """Error per layer and head of MiniLM's captured Q, K, V for the paper's configuration and the
    per-channel-V / quantized-normalizer variant, with each head's input statistics."""
    size = get_size(size)
    ok, reason = real_available()
    if not ok:
        raise RuntimeError(reason)
    from .capture import capture_minilm

    configs = {"paper": sim.QuantConfig.paper(),
               "paper, V per channel, l quantized": sim.QuantConfig.paper().replace(v_granularity="channel",
                                                                                     normalizer="quantized")}
    rows = []
    for layer in tqdm(capture_minilm(max_tokens=size.real_tokens), desc="real layers", disable=not progress,
                      leave=False):
        ref = reference(layer.q, layer.k, layer.v)
        s = np.einsum("bhnd,bhmd->bhnm", layer.q.astype(np.float64), layer.k.astype(np.float64)) / np.sqrt(
            layer.q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        for name_cfg, config in configs.items():
            out = sim.attention(layer.q, layer.k, layer.v, config=config)
            for h in range(layer.q.shape[1]):
                k_h, v_h = layer.k[0, h], layer.v[0, h]
                rows.append({"layer": layer.layer, "head": h, "config": name_cfg, "seq_len": layer.q.shape[2],
                             "k_channel_outlier_ratio": float(np.abs(k_h).max(0).max() / np.abs(k_h).max(0).mean()),
                             "v_channel_outlier_ratio": float(np.abs(v_h).max(0).max() / np.abs(v_h).max(0).mean()),
                             "mean_max_softmax": float(p[0, h].max(-1).mean()),
                             **sim.all_metrics(out[:, h:h + 1], ref[:, h:h + 1])})
    frame = pd.DataFrame(rows)
    paper = frame[frame["config"] == "paper"]
    worst = paper.loc[paper["rel_l2"].idxmax()]
    corr = {c: float(np.corrcoef(paper[c], paper["rel_l2"])[0, 1])
            for c in ("k_channel_outlier_ratio", "v_channel_outlier_ratio", "mean_max_softmax")}
    by_cfg = frame.groupby("config")["rel_l2"].median()
    findings = [(f"paper config: median rel. L2 over heads {fmt(paper['rel_l2'].median())}, range "
                 f"{fmt(paper['rel_l2'].min())}-{fmt(paper['rel_l2'].max())}; worst layer {int(worst['layer'])} head "
                 f"{int(worst['head'])}"),
                "correlation of the per-head error with: " + ", ".join(f"{c} {v:+.2f}" for c, v in corr.items()),
                (f"V per channel + quantized l: median {fmt(by_cfg['paper, V per channel, l quantized'])} "
                 f"({fmt(by_cfg['paper, V per channel, l quantized'] / by_cfg['paper'])}x the paper's)")]
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 3.2), squeeze=False)
    vmax = frame["rel_l2"].max()
    for ax, name_cfg in zip(axes[0], configs):
        table = frame[frame["config"] == name_cfg].pivot(index="layer", columns="head", values="rel_l2")
        sns.heatmap(table, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=vmax, ax=ax, cbar=False,
                    annot_kws={"size": 7})
        ax.set_title(name_cfg)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.suptitle(f"MiniLM on real text: INT8 error varies {fmt(paper['rel_l2'].max() / paper['rel_l2'].min())}x "
                 f"across heads (rel. L2 vs float64)", y=1.04)
    caption = (f"Cells: relative L2 error of one head's output vs float64 on {int(paper['seq_len'].iloc[0])} tokens "
               "of English text; left the paper's configuration, right with V per channel and the normalizer fixed.")
    return Study(name, frame, fig, caption, findings, _params(size))


def recommended_configs() -> dict[str, sim.QuantConfig]:
    """The paper's configuration, the recommended one, and the recommended one with each option undone."""
    rec = sim.QuantConfig.recommended()
    paper = sim.QuantConfig.paper()
    return {
        "paper": paper,
        "recommended": rec,
        "rec. without K smoothing": rec.replace(k_smoothing=paper.k_smoothing),
        "rec. with V per tensor": rec.replace(v_granularity=paper.v_granularity),
        "rec. with 127 P levels": rec.replace(p_quant=paper.p_quant),
        "rec. with fixed P scale": rec.replace(p_scale=paper.p_scale),
        "rec. with float l": rec.replace(normalizer=paper.normalizer),
    }


def recommended_study(size="small", families=FAMILIES, *, name="accuracy/recommended_vs_paper",
                      progress=True) -> Study:
    """Issue #6: the recommended configuration's error against the paper's, and what each option buys.

    Synthetic families at N = 4096 (full) or 512 (small), every layer of the real activations.
    """
    size = get_size(size)
    families, dropped = usable_families(families)
    seq_len = 4096 if size.name == "full" else 512
    configs = recommended_configs()
    cases, n = _cases(size, families, seeds=size.seeds[:2], seq_len=seq_len)
    frame = sweep(configs, cases, total_cases=n, desc="recommended vs paper", progress=progress)
    means = frame.groupby(["family", "config"])["rel_l2"].mean().unstack("config")
    ratio = means.div(means["paper"], axis=0)
    frame["ratio_to_paper"] = [ratio.loc[f, c] for f, c in zip(frame["family"], frame["config"])]
    findings = [f"{fam}: paper {fmt(means.loc[fam, 'paper'])}, recommended {fmt(means.loc[fam, 'recommended'])} "
                f"({fmt(ratio.loc[fam, 'recommended'])}x); undoing one option: "
                + ", ".join(f"{c[5:]} {fmt(ratio.loc[fam, c])}x" for c in configs if c.startswith("rec. "))
                for fam in means.index]
    if dropped:
        findings.append(dropped)
    met = int((ratio["recommended"] <= 0.4).sum())
    title = (f"Recommended config: {fmt(ratio['recommended'].min())}-{fmt(ratio['recommended'].max())}x the "
             f"paper's error (N={seq_len} synthetic; 0.4x target met on {met} of {len(ratio)} families)")
    order = list(configs)
    grid = sns.catplot(data=frame, x="ratio_to_paper", y="config", col="family", kind="bar", order=order,
                       errorbar=None, height=3.2, aspect=1.0, sharex=False)
    for ax in grid.axes.flat:
        ax.axvline(0.4, color="black", linestyle="--", linewidth=1)
        ax.axvline(1.0, color="gray", linewidth=0.8)
    grid.set_axis_labels("error / paper config's", "")
    _facet_title(grid).figure.suptitle(title, y=1.04)
    caption = ("Bars: mean relative L2 error over samples, divided by the paper configuration's on the same inputs; "
               "dashed: issue #6's 0.4x target. Read which option of the recommended configuration buys what.")
    return Study(name, frame, grid.figure, caption, findings, _params(size, families=families, seq_len=seq_len))
