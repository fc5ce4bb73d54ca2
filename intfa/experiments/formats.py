"""The paper's error figure: FP16, FP8, half-INT8 and full INT8 against sequence length, three metrics."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

import sim

from .figures import Study, fmt
from .harness import facet_titles, get_size, log2_ticks, study_cases, study_params, sweep
from .inputs import SYNTHETIC_FAMILIES

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
        cases, count = study_cases(size, families, seq_len=n)
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
            findings.append(f"{fam}, N={n_max}: full INT8 vs {fp8}: error {100 * cut['rel_l2']:.0f}% smaller by "
                            f"rel. L2, {100 * cut['mre_all']:.0f}% by MRE over all elements, "
                            f"{100 * cut['mre_paper']:.0f}% by the paper's 4-element MRE "
                            f"(paper: {100 * PAPER_ERROR_REDUCTION_VS_FP8:.0f}%)")
        findings.append(f"{fam}, N={n_max}: rel. L2 FP16 {fmt(m.loc['FP16', 'rel_l2'])}, half-INT8 "
                        f"{fmt(m.loc['half-INT8', 'rel_l2'])}, full INT8 {fmt(m.loc['full-INT8 (paper)', 'rel_l2'])}")
    first = means.loc[families[0], "rel_l2"]
    cut_normal = 1 - first["full-INT8 (paper)"] / first["FP8 e4m3"]
    grid = sns.relplot(data=frame, x="seq_len", y="value", hue="format", col="family", row="metric", kind="line",
                       marker="o", errorbar=("pi", 100), height=2.8, aspect=1.3, facet_kws={"sharey": "row"})
    grid.set(xscale="log", yscale="log")
    log2_ticks(grid, size.seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "error vs float64")
    facet_titles(grid, "{row_name} | {col_name}").figure.suptitle(
        f"Full INT8 vs FP8 e4m3 on {families[0]} inputs at N={n_max}: {100 * cut_normal:.0f}% less error "
        f"by rel. L2 (paper claims {100 * PAPER_ERROR_REDUCTION_VS_FP8:.0f}% by MRE)", y=1.02)
    caption = ("Lines: mean over seeds, bands their min to max; rows: relative L2 over all elements, the paper's "
               "MRE over the last 4 elements, the same MRE over all elements. FP8 here is unscaled, as in the paper.")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=list(families)))
