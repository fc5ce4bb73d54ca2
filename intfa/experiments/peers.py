"""Our configurations against the strongest peers on the same inputs: SageAttention2 and FlashAttention-3's FP8.

The peers run as sim emulates them (docs/spec.md 7: what is exact and what approximated): SageAttention2 (arXiv
2411.10958) with INT8 Q, K per warp or per thread, K smoothing, FP8 e4m3 P @ V with a static P scale and two-level
FP22/float32 accumulation; FlashAttention-3 (arXiv 2407.08608) with Q, K, V in e4m3 scaled per tile and P @ V
accumulated in FP22 into the output. The Triton kernels do not run them: this is an accuracy comparison only.
"""

from __future__ import annotations

import seaborn as sns

import sim

from .figures import Study, fmt
from .harness import facet_titles, get_size, study_cases, study_params, sweep, usable_families
from .inputs import FAMILIES

#: Our configurations in the figure (the Triton kernels run these).
OURS = ("full-INT8 (paper)", "recommended", "half-INT8")
#: The peers' metrics reported, as in the format study.
PEER_METRICS = ("rel_l2", "mre_all", "mre_paper")


def peer_configs() -> dict[str, sim.QuantConfig]:
    """Ours (:data:`OURS`), then the peers: SageAttention2 per warp and per thread, FA3 FP8, and FA3 FP8 with
    SageAttention2's two-level accumulation (what its FP22 accumulation into the output costs)."""
    fa3 = sim.QuantConfig.fa3_fp8()
    return {
        "full-INT8 (paper)": sim.QuantConfig.paper(),
        "recommended": sim.QuantConfig.recommended(),
        "half-INT8": sim.QuantConfig.half_int8(),
        "SageAttention2 (per warp)": sim.QuantConfig.sage_attention2("warp"),
        "SageAttention2 (per thread)": sim.QuantConfig.sage_attention2("thread"),
        "FA3 FP8": fa3,
        "FA3 FP8, two-level accumulation": fa3.replace(fp8_accumulation="fp22+float32"),
    }


def peers_study(size="small", families=FAMILIES, *, name="accuracy/peers_error", progress=True) -> Study:
    """Issue 12: the paper's, the recommended and half-INT8 configurations against SageAttention2 and FA3 FP8.

    Synthetic families at N = 4096 (full) or 512 (small), every layer of the real MiniLM activations (where they
    can be captured); relative L2, and the MRE over all elements and over the paper's 4.
    """
    size = get_size(size)
    families, dropped = usable_families(families)
    seq_len = 4096 if size.name == "full" else 512
    configs = peer_configs()
    cases, n = study_cases(size, families, seeds=size.seeds[:2], seq_len=seq_len)
    wide = sweep(configs, cases, total_cases=n, desc="ours vs peers", progress=progress)
    wide["side"] = ["ours" if c in OURS else "peer" for c in wide["config"]]
    frame = wide.melt(id_vars=["family", "sample", "seq_len", "config", "side"], value_vars=list(PEER_METRICS),
                      var_name="metric", value_name="value")
    means = wide.groupby(["family", "config"])["rel_l2"].mean().unstack("config")[list(configs)]
    peers = [c for c in configs if c not in OURS]
    findings = []
    for fam in means.index:
        row = means.loc[fam].sort_values()
        best_peer = row[peers].idxmin()
        findings.append(f"{fam}: rel. L2 " + " < ".join(f"{c} {fmt(v)}" for c, v in row.items()))
        findings.append(f"{fam}: recommended {fmt(row['recommended'] / row[best_peer])}x the best peer's error "
                        f"({best_peer}); paper {fmt(row['full-INT8 (paper)'] / row[best_peer])}x")
        fp22 = row["FA3 FP8"] / row["FA3 FP8, two-level accumulation"] - 1
        findings.append(f"{fam}: FA3 FP8's FP22 accumulation into the output changes its error by {100 * fp22:+.1f}% "
                        "against two-level accumulation")
    if dropped:
        findings.append(dropped)
    ratio = means["recommended"] / means[peers].min(axis=1)
    title = (f"Recommended INT8 vs the best peer (simulated): {fmt(ratio.min())}-{fmt(ratio.max())}x its error "
             f"across {len(ratio)} families (N={seq_len} synthetic)")
    grid = sns.catplot(data=frame, x="value", y="config", hue="side", col="family", row="metric", kind="bar",
                       order=list(configs), hue_order=["ours", "peer"], dodge=False, errorbar=None, height=2.6,
                       aspect=1.25, sharex="row", legend=False)
    grid.set(xscale="log")
    grid.set_axis_labels("error vs float64", "")
    facet_titles(grid, "{row_name} | {col_name}").figure.suptitle(title, y=1.02)
    caption = ("Bars: mean over samples (synthetic seeds; MiniLM's 6 layers) of the error vs float64; blue: ours "
               "(run by the Triton kernels), orange: the peers as sim emulates them (docs/spec.md 7). Rows: "
               "relative L2 over all elements, MRE over all elements, the paper's 4-element MRE.")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=families, seq_len=seq_len))
