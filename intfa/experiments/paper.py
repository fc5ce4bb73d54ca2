"""What the paper reports, where each number stands, and the claim-by-claim comparison with ours.

INT-FlashAttention (Chen et al., 2024, arXiv 2409.16997). Every number below names its source. Where the
paper's own text could be read (its abstract), the number is the paper's; the per-N speed-ups and the
per-distribution error reductions come from the paper's experiments as summarised by the secondary
sources named, because the experiments section itself (and so its figure and table numbers) could not be
read from here. A number nobody reports is None and its row says so; none is invented.

:func:`claims_table` puts each claim beside what ``results/`` measured (the format study's CSV and the
benchmark CSV behind the speed figure) and says whether they agree by a stated rule;
:func:`claims_study` saves it with a figure that shows paper and ours on one axis.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from .figures import Study, fmt, plt

#: The paper on arXiv (v2, the version whose HTML was read).
ARXIV = "https://arxiv.org/abs/2409.16997v2"
#: A summary of the paper's results that lists the per-N speed-ups and the uniform-input MRE ratio.
SUMMARY_SPEED = "https://www.rohan-paul.com/p/int-flashattention-enabling-flash"
#: A summary that gives the error reduction against FP8 as a range over the input distributions (46-82%).
SUMMARY_RANGE = "https://zijie-tian.site/archives/int-flashattention-enabling-flash-attention-for-int8-quantization"
#: The public reproduction of the speed claim on an RTX 4090 (the authors' repository, issue 1).
REPRODUCTION_4090 = "https://github.com/INT-FlashAttention2024/INT-FlashAttention/issues/1"


@dataclasses.dataclass(frozen=True)
class PaperNumber:
    """One number the paper reports, in the units ours are computed in.

    value : the number (a speed ratio INT8 / FP16, or an error ratio INT8 / FP8), None where not found.
    where : where it stands (the paper's abstract, or its experiments as a named source summarises them).
    source : the address read.
    """

    value: float | None
    where: str
    source: str


#: Full INT8 against FP16 FlashAttention (Triton, Ampere): "72% faster" (abstract).
PAPER_SPEEDUP = PaperNumber(1.72, "abstract (Ampere GPU, Triton)", ARXIV)
#: The same speed-up per sequence length N (non-causal): +31%, +52%, +66%, +72%, +73% at 1k..16k.
PAPER_SPEEDUP_BY_N = {
    n: PaperNumber(r, "experiments, speed vs N (as summarised; figure number not read)", SUMMARY_SPEED)
    for n, r in ((1024, 1.31), (2048, 1.52), (4096, 1.66), (8192, 1.72), (16384, 1.73))
}
#: Half-INT8 (INT8 Q, K; FP16 P, V) against FP16: in the paper's speed figure, no number found in any text read.
PAPER_HALF_INT8_SPEEDUP = PaperNumber(None, "experiments, speed figure (no number found in the text read)", ARXIV)
#: Full INT8's MRE as a fraction of FP8 FlashAttention's, per input distribution. Uniform: "82% smaller
#: quantization error" (abstract) and "up to 5.6x smaller MRE under uniform-distributed activations"
#: (summary); normal: the low end of the summarised 46-82% range (the issue that asked for this table
#: gives 46% for normal inputs too).
PAPER_ERROR_RATIO_VS_FP8 = {
    "normal": PaperNumber(1 - 0.46, "experiments, MRE vs N, normal inputs (as summarised: 46%)", SUMMARY_RANGE),
    "uniform": PaperNumber(1 - 0.82, "abstract (82% smaller) and experiments, uniform inputs (5.6x)", ARXIV),
}
#: Where the paper's speed shape comes from: its authors' benchmark script defaults to B=4, H=32, D=64,
#: non-causal (issue 1 of their repository, which also reports 0-10% on an RTX 4090).
PAPER_SPEED_SHAPE = {"batch": 4, "heads": 32, "head_dim": 64, "causal": False}

#: Agreement rules. Error: our INT8 / FP8 error ratio (median over N) within this factor of the paper's, either
#: way: the paper's 0.54 (46% smaller) admits 0.43-0.68 (32-57% smaller), its 0.18 (82% smaller) admits
#: 0.14-0.23 (77-86% smaller). Speed: our speed ratio within this fraction of the paper's at the same N.
ERROR_RATIO_FACTOR = 1.25
SPEED_RATIO_TOLERANCE = 0.10


def error_agrees(ours: float, paper: float) -> bool:
    """Whether an INT8 / FP8 error ratio of ours agrees with the paper's (:data:`ERROR_RATIO_FACTOR`)."""
    return paper / ERROR_RATIO_FACTOR <= ours <= paper * ERROR_RATIO_FACTOR


def speed_agrees(ours: float, paper: float) -> bool:
    """Whether a speed ratio of ours agrees with the paper's (:data:`SPEED_RATIO_TOLERANCE`)."""
    return abs(ours / paper - 1) <= SPEED_RATIO_TOLERANCE
#: The studies that hold our side of each row, and their CSVs under ``results/`` (at full size).
FORMATS_STUDY = "accuracy/paper_error_vs_seq_len"
SPEED_STUDY = "speed/speed_vs_seq_len"
FORMATS_CSV = f"results/{FORMATS_STUDY}.csv"
SPEED_CSV = f"results/{SPEED_STUDY}.csv"
#: The FP8 formats the error claims are checked against (which one the paper used is not stated in the text read).
FP8_FORMATS = ("FP8 e4m3", "FP8 e5m2")
INT8_FORMAT = "full-INT8 (paper)"


def error_ratios(formats_frame: pd.DataFrame, metric: str = "mre_all") -> pd.DataFrame:
    """Full INT8's error over each FP8 format's on the same sample, per family, N and sample, from the format
    study's tidy frame. Columns: family, seq_len, sample, fp8, ratio.

    Per sample, not of means: the MRE formula divides by the reference, so one element near zero can make
    one sample's MRE large for every format at once; the ratio on the same inputs cancels most of that.
    """
    needed = {"family", "seq_len", "sample", "format", "metric", "value"}
    if not needed <= set(formats_frame.columns):
        raise ValueError(f"formats_frame: expected columns {sorted(needed)}, got {sorted(formats_frame.columns)}")
    wide = (formats_frame[formats_frame["metric"] == metric]
            .pivot_table(index=["family", "seq_len", "sample"], columns="format", values="value"))
    parts = [pd.DataFrame({"ratio": wide[INT8_FORMAT] / wide[fp8], "fp8": fp8}) for fp8 in FP8_FORMATS]
    return pd.concat(parts).reset_index()[["family", "seq_len", "sample", "fp8", "ratio"]]


def speed_ratios(speed_frame: pd.DataFrame, provider: str = "int8-full") -> pd.Series:
    """``provider`` / triton-fp16 speed per N in the paper's shape (:data:`PAPER_SPEED_SHAPE`), from the
    speed study's frame (:func:`.speed.speed_study`); empty where that shape was not measured."""
    shape = PAPER_SPEED_SHAPE
    rows = speed_frame[(speed_frame["provider"] == provider) & (speed_frame["head_dim"] == shape["head_dim"])
                       & (speed_frame["causal"] == shape["causal"]) & (speed_frame["batch"] == shape["batch"])
                       & (speed_frame["heads"] == shape["heads"])]
    return rows.groupby("seq_len")["ratio_to_fp16"].median()


def _pct_smaller(ratio: float) -> str:
    return f"{100 * (1 - ratio):.0f}%"


def claims_table(formats_frame: pd.DataFrame | None, speed_frame: pd.DataFrame | None) -> pd.DataFrame:
    """One row per claim of the paper: claim, paper, where in the paper, source, ours, agree, evidence.

    formats_frame : the format study's tidy frame (:func:`.formats.formats_vs_seq_len_study`), or None.
    speed_frame : the speed study's frame (:func:`.speed.speed_study`), or None where nothing was measured.
    ``agree`` is "yes", "no", or why the row cannot be judged, by :func:`error_agrees` / :func:`speed_agrees`;
    ``evidence`` names the file under ``results/`` that shows our number (at full size).
    """
    rows = []

    def add(claim, paper: PaperNumber, paper_text, ours, agree, evidence):
        rows.append({"claim": claim, "paper": paper_text, "where in the paper": paper.where, "source": paper.source,
                     "ours": ours, "agree": agree, "evidence": evidence})

    # --- speed ---------------------------------------------------------------------------------------
    measured = speed_frame is not None and len(speed_frame) > 0
    gpus = ", ".join(sorted(speed_frame["gpu"].unique())) if measured else ""
    different = f"different GPU: ours {gpus}, the paper's an A100"
    full = speed_ratios(speed_frame) if measured else pd.Series(dtype=float)
    half = speed_ratios(speed_frame, "int8-half") if measured else pd.Series(dtype=float)
    common = [n for n in PAPER_SPEEDUP_BY_N if n in full.index]
    shape = "B=4, H=32, D=64, non-causal"
    claim = "full INT8 is 72% faster than FP16 FlashAttention (Triton)"
    if not common:
        add(claim, PAPER_SPEEDUP, "1.72x", "not measured in the paper's shape and N (no benchmark CSV under "
            "results/<gpu>/)", "cannot judge", SPEED_CSV)
    else:
        best = full.loc[common].idxmax()
        add(claim, PAPER_SPEEDUP, "1.72x", f"at best {full.loc[best]:.2f}x (N={best}; {shape}; {gpus})",
            f"{'yes' if speed_agrees(full.loc[best], PAPER_SPEEDUP.value) else 'no'} ({different})", SPEED_CSV)
        within = [speed_agrees(full.loc[n], PAPER_SPEEDUP_BY_N[n].value) for n in common]
        add(f"the speed-up per N, {common[0] // 1024}k to {common[-1] // 1024}k", PAPER_SPEEDUP_BY_N[common[0]],
            ", ".join(f"{PAPER_SPEEDUP_BY_N[n].value:.2f}x" for n in common),
            ", ".join(f"{full.loc[n]:.2f}x" for n in common) + f" ({gpus})",
            f"{'yes' if all(within) else 'no'} at {sum(within)} of {len(within)} N ({different})", SPEED_CSV)
    add("half-INT8 (INT8 Q, K; FP16 P, V) against FP16", PAPER_HALF_INT8_SPEEDUP, "no number found",
        ", ".join(f"{half.loc[n]:.2f}x" for n in common if n in half.index) + f" at N={common[0] // 1024}k.."
        f"{common[-1] // 1024}k ({gpus})" if common and len(half) else "not measured",
        "cannot judge: no paper number", SPEED_CSV)

    # --- accuracy --------------------------------------------------------------------------------------
    for family, paper in PAPER_ERROR_RATIO_VS_FP8.items():
        claim = f"{family} inputs: full INT8's MRE {_pct_smaller(paper.value)} smaller than FP8's"
        paper_text = f"{_pct_smaller(paper.value)} smaller (ratio {paper.value:.2f})"
        if formats_frame is None or family not in set(formats_frame["family"]):
            add(claim, paper, paper_text, "not measured", "cannot judge", FORMATS_CSV)
            continue
        mine = formats_frame[formats_frame["family"] == family]
        ratios, four, l2 = (error_ratios(mine, metric) for metric in ("mre_all", "mre_paper", "rel_l2"))
        ns = sorted(ratios["seq_len"].unique())
        parts, verdicts = [], []
        for fp8 in FP8_FORMATS:
            r, r4, rl2 = (frame[frame["fp8"] == fp8] for frame in (ratios, four, l2))
            per_n = rl2.groupby("seq_len")["ratio"].median()
            verdicts.append(f"{fp8.removeprefix('FP8 ')}: {'yes' if error_agrees(r['ratio'].median(), paper.value) else 'no'}")
            parts.append(f"vs {fp8.removeprefix('FP8 ')} {_pct_smaller(r['ratio'].median())} smaller (the paper's "
                         f"4-element MRE: {_pct_smaller(r4['ratio'].median())}; rel. L2: {_pct_smaller(per_n.iloc[0])} "
                         f"at N={ns[0]} to {_pct_smaller(per_n.iloc[-1])} at N={ns[-1]})")
        add(claim, paper, paper_text, "; ".join(parts) + f"; MRE: median over samples and N={ns[0]}..{ns[-1]}",
            ", ".join(verdicts), FORMATS_CSV)
    return pd.DataFrame(rows)


def claims_study(formats_frame: pd.DataFrame | None, speed_frame: pd.DataFrame | None, *,
                 name: str = "paper/claims_vs_ours") -> Study:
    """:func:`claims_table` saved with its figure: every ratio the paper reports beside ours, with the band in
    which ours would count as agreeing."""
    table = claims_table(formats_frame, speed_frame)
    measured = speed_frame is not None and len(speed_frame) > 0
    full = speed_ratios(speed_frame) if measured else pd.Series(dtype=float)
    speed_rows = [(f"N={n // 1024}k", p.value, [full.loc[n]]) for n, p in PAPER_SPEEDUP_BY_N.items() if n in full.index]
    error_rows = []
    if formats_frame is not None:
        ratios = error_ratios(formats_frame)
        for (family, paper), fp8 in itertools.product(PAPER_ERROR_RATIO_VS_FP8.items(), FP8_FORMATS):
            r = ratios[(ratios["family"] == family) & (ratios["fp8"] == fp8)]["ratio"]
            if len(r):
                error_rows.append((f"{family}, vs {fp8}", paper.value, r.tolist()))  # every (N, sample)
    panels = [(title, rows, band, xmax) for title, rows, band, xmax in (
        ("speed: full INT8 / FP16 FlashAttention\n(D=64, non-causal; higher is faster)", speed_rows,
         lambda p: (p * (1 - SPEED_RATIO_TOLERANCE), p * (1 + SPEED_RATIO_TOLERANCE)), 2.0),
        ("error: full INT8 MRE / FP8 MRE\n(median and range over samples and N; lower is better)", error_rows,
         lambda p: (p / ERROR_RATIO_FACTOR, p * ERROR_RATIO_FACTOR), 1.05)) if rows]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.4 * max(1, len(panels)), 3.4), squeeze=False,
                             layout="constrained")
    for ax, (title, rows, band, xmax) in zip(axes[0], panels):
        for y, (label, paper_value, ours) in enumerate(rows):
            lo, hi = band(paper_value)
            ax.plot([lo, hi], [y, y], color="0.85", lw=9, solid_capstyle="butt",
                    label="agreement band" if y == 0 else None)
            ax.plot([min(ours), max(ours)], [y, y], color="tab:blue", lw=1.5)
            ax.plot([np.median(ours)], [y], "o", color="tab:blue", ms=8, label="ours" if y == 0 else None)
            ax.plot([paper_value], [y], "X", color="black", ms=8, label="paper" if y == 0 else None)
        ax.axvline(1.0, color="0.5", lw=0.8)
        ax.set_yticks(range(len(rows)), [row[0] for row in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(0, max(xmax, max(max(row[2]) for row in rows) * 1.1))
        ax.set_xlabel("ratio (1 = same as the baseline)")
        ax.set_title(title, fontsize=10)
    if panels:
        axes[0][-1].legend(fontsize=8, loc="lower right")
    error = table[table["claim"].str.contains("MRE")]
    speed = table[table["claim"].str.startswith("the speed-up per N")]
    summary = [f"error, {row['claim'].split(' inputs')[0]} inputs: {row['agree']}" for _, row in error.iterrows()]
    summary += [f"speed: {row['agree'].split(' (')[0]}" for _, row in speed.iterrows()]
    fig.suptitle("Do we agree with the paper? " + "; ".join(summary) + (
        f"\n(speed on {', '.join(sorted(speed_frame['gpu'].unique()))}, the paper's on an A100)" if measured else ""))
    caption = ("Black crosses: the paper's numbers (sources in the table); blue: ours (dot: median, line: range, over "
               "N for speed and over samples and N for error, each error ratio taken on the same inputs); grey: the band within which ours counts as agreeing (speed within "
               f"{100 * SPEED_RATIO_TOLERANCE:.0f}%, error ratio within a factor {ERROR_RATIO_FACTOR}).")
    findings = [f"{row['claim']}: paper {row['paper']} ({row['where in the paper']}); ours {row['ours']}; agree: "
                f"{row['agree']}" for _, row in table.iterrows()]
    return Study(name, table, fig, caption, findings,
                 {"error_ratio_factor": ERROR_RATIO_FACTOR, "speed_ratio_tolerance": SPEED_RATIO_TOLERANCE,
                  "paper_speed_shape": PAPER_SPEED_SHAPE,
                  "sources": sorted({ARXIV, SUMMARY_SPEED, SUMMARY_RANGE, REPRODUCTION_4090})})
