"""The recommended configuration (issue #6) against the paper's, and what each of its options buys."""

from __future__ import annotations

import seaborn as sns

import sim

from .figures import Study, fmt
from .harness import facet_titles, get_size, study_cases, study_params, sweep, usable_families
from .inputs import FAMILIES


def recommended_configs() -> dict[str, sim.QuantConfig]:
    """The paper's configuration, the recommended one, and the recommended one with each option undone."""
    rec = sim.QuantConfig.recommended()
    paper = sim.QuantConfig.paper()
    return {
        "paper": paper,
        "recommended": rec,
        "rec. without K smoothing": rec.replace(k_smoothing=paper.k_smoothing),
        f"rec. with V per {paper.v_granularity}": rec.replace(v_granularity=paper.v_granularity),
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
    cases, n = study_cases(size, families, seeds=size.seeds[:2], seq_len=seq_len)
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
    facet_titles(grid).figure.suptitle(title, y=1.04)
    caption = ("Bars: mean relative L2 error over samples, divided by the paper configuration's on the same inputs; "
               "dashed: issue #6's 0.4x target. Read which option of the recommended configuration buys what.")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=families, seq_len=seq_len))
