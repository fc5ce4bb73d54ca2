"""Error against scale granularity: Q x K, V, and how P becomes codes (with what the normalizer sums)."""

from __future__ import annotations

import itertools

import pandas as pd
import seaborn as sns

import sim

from .figures import Study, fmt, plt
from .harness import facet_titles, get_size, study_cases, study_params, sweep, sweep_failures, usable_families
from .inputs import FAMILIES


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
    cases, n = study_cases(size, families)
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
    params = study_params(size, families=families)
    paper = sim.QuantConfig.paper()
    # The paper's setting of each factor, found by value so that a change of QuantConfig.paper() flows through.
    paper_label = {factor: next(label for label, config in labels.items() if config == paper)
                   for factor, labels in factors.items()}
    extra = [dropped] if dropped else []
    studies = []
    failures = {factor: sweep_failures(frame, "setting") for factor, frame in frames.items()}

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
        base = table.loc[paper.q_granularity, paper.k_granularity]
        worst = table.stack().idxmax()  # NaN cells (not measured) are skipped
        worst_ratio = max(worst_ratio, table.loc[worst] / base)
        findings.append(f"{fam}: the paper's Q {paper.q_granularity} / K {paper.k_granularity} {fmt(base)}; per-block "
                        f"{fmt(table.loc['block', 'block'])}; worst Q {worst[0]} / K {worst[1]} {fmt(table.loc[worst])} "
                        f"({fmt(table.loc[worst] / base)}x)")
    fig.suptitle(f"Q/K scale granularity: coarser scales cost up to {fmt(worst_ratio)}x the paper's "
                 f"(Q {paper.q_granularity}, K {paper.k_granularity}) error", y=1.04)
    studies.append(Study(prefix + "error_vs_qk_granularity", qk, fig,
                         "Cells: relative L2 error vs float64, mean over samples; rows Q's granularity, columns K's. "
                         f"Per-block uses BLOCK_M={paper.block_m} / BLOCK_N={paper.block_n} rows per scale.",
                         findings + failures["qk"] + extra, params))

    # V and P: bars per family, each sample's error over the same sample's error with the paper's setting
    # (a linear axis from 0: bars keep their length, and 1 is the paper).
    for factor, title_what, caption_what in (
        ("v", "V scale granularity", ("V's scale: one per tensor, one per (batch, head) (paper), per channel, or per "
                                      "BLOCK_N keys and channel")),
        ("p", "P codes and normalizer", ("how P becomes 8-bit codes (127 levels or 255 signed, and, where the "
                                         "simulator offers it, scaled by the tile's row max) and whether l sums "
                                         "float P or the codes")),
    ):
        frame = frames[factor]
        at_paper = frame["rel_l2"].where(frame["setting"] == paper_label[factor])
        frame["ratio_to_paper"] = frame["rel_l2"] / at_paper.groupby([frame["family"], frame["sample"]]).transform("max")
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
        height = 0.45 * frame["setting"].nunique() + 1.4  # inches: one bar a line, panels 3.6 inches wide
        grid = sns.catplot(data=frame, x="ratio_to_paper", y="setting", col="family", kind="bar", errorbar=("pi", 100),
                           height=height, aspect=3.6 / height, color="tab:blue")
        for ax in grid.axes.flat:
            ax.axvline(1.0, color="black", lw=1, ls="--")
            ax.set_xlim(0, max(1.15, float(frame["ratio_to_paper"].max()) * 1.05))
        labels = {label: label + (" (paper)" if label == paper_label[factor] else "")
                  for label in frame["setting"].unique()}
        grid.axes.flat[0].set_yticks(range(len(labels)), list(labels.values()))
        grid.set_axis_labels("rel. L2 error / paper setting's", "")
        facet_titles(grid).figure.suptitle(f"{title_what}: the best setting cuts the paper's error "
                                           f"up to {fmt(best_gain)}x", y=1.04)
        studies.append(Study(prefix + f"error_vs_{factor}_{'granularity' if factor == 'v' else 'resolution'}",
                             frame, grid.figure,
                             f"Bars: each sample's relative L2 error over the same sample's with the paper's setting "
                             f"(dashed line), mean over samples; whiskers their min to max; {caption_what}; everything "
                             "else as the paper. Absolute errors are in the CSV (rel_l2).",
                             findings + failures[factor] + extra, params))
    return studies
