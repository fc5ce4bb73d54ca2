"""The paper's speed figure as ratios to its baseline, from the benchmark's CSVs (``results/<gpu>/bench-*.csv``).

The benchmark itself is ``python -m intfa.bench`` (it needs CUDA); this module only reads what it
wrote, or runs it where a GPU is present.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pandas as pd
import seaborn as sns

from ..provenance import REPO_ROOT
from ..runtime import cuda_available
from .figures import Study, fmt, plt
from .paper import PAPER_SPEED_SHAPE, PAPER_SPEEDUP_BY_N, SPEED_STUDY

#: Columns every benchmark CSV has (issue #4).
BENCH_COLUMNS = ("gpu", "provider", "batch", "heads", "seq_q", "seq_k", "head_dim", "causal", "ms", "tflops")


def load_bench_csvs(results_dir: str | Path = REPO_ROOT / "results") -> pd.DataFrame:
    """Every ``<results_dir>/<gpu>/bench-*.csv``, concatenated with a ``suite`` column; empty if none.

    Raises ValueError naming the file where a CSV lacks one of :data:`BENCH_COLUMNS`.
    """
    frames = []
    for path in sorted(Path(results_dir).glob("*/bench-*.csv")):
        frame = pd.read_csv(path)
        missing = [c for c in BENCH_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: expected benchmark columns {list(BENCH_COLUMNS)}, missing {missing}")
        frames.append(frame.assign(suite=path.stem.removeprefix("bench-"), source=str(path.relative_to(results_dir))))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*BENCH_COLUMNS, "suite", "source"])


def run_bench(suite: str = "paper") -> subprocess.CompletedProcess:
    """Run ``python -m intfa.bench --suite <suite>`` (CUDA only); it writes ``results/<gpu>/bench-<suite>.csv``."""
    if not cuda_available():
        raise RuntimeError("run_bench: needs a CUDA GPU; none is visible to torch")
    return subprocess.run([sys.executable, "-m", "intfa.bench", "--suite", suite], cwd=REPO_ROOT, check=True)


def speed_study(bench: pd.DataFrame, *, name=SPEED_STUDY, providers=("int8-full", "int8-half"),
                fp16="triton-fp16") -> Study | None:
    """Speed of each of ``providers`` relative to ``fp16`` (the paper's baseline, FP16 FlashAttention in
    Triton) against N, per head dimension and causality, beside the paper's per-N speed-ups; None if
    ``bench`` holds no prefill measurement.

    The frame: one row per (gpu, shape, provider) with ms, tflops and ``ratio_to_fp16`` (the baseline's
    time over the provider's, measured in the same run), and the ``source`` CSV.
    """
    if bench.empty:
        return None
    # Prefill shapes only (Nq = Nk: decode shapes have their own axis, Nk, and would zig-zag the lines),
    # and one benchmark run per GPU -- the "full" suite where there is one (it holds the paper's shapes
    # too) -- so that every point and every ratio comes from a single run.
    bench = bench[bench["seq_q"] == bench["seq_k"]]
    if "suite" in bench:
        preferred = bench.groupby("gpu")["suite"].agg(lambda s: "full" if "full" in set(s) else sorted(set(s))[0])
        bench = bench[bench["suite"] == bench["gpu"].map(preferred)]
    keys = ["gpu", "batch", "heads", "head_dim", "causal", "seq_k"]
    baseline = bench[bench["provider"] == fp16].groupby(keys)["ms"].median().rename("fp16_ms")
    frame = (bench[bench["provider"].isin(providers)].join(baseline, on=keys)
             .dropna(subset=["fp16_ms", "ms"]).rename(columns={"seq_k": "seq_len"}))
    if frame.empty:
        return None
    frame = frame.assign(ratio_to_fp16=frame["fp16_ms"] / frame["ms"])[
        ["gpu", "provider", "batch", "heads", "seq_len", "head_dim", "causal", "ms", "fp16_ms", "tflops",
         "ratio_to_fp16", *(c for c in ("suite", "source") if c in frame)]]
    findings = []
    for (gpu, d, causal, provider), group in frame.groupby(["gpu", "head_dim", "causal", "provider"]):
        r = group.set_index("seq_len")["ratio_to_fp16"].sort_index()
        findings.append(f"{gpu}, D={d}, causal={causal}: {provider} / {fp16} = {fmt(r.min())}-{fmt(r.max())}x over "
                        f"N={int(r.index.min())}..{int(r.index.max())}")
    findings.append("paper (A100, full INT8, non-causal): " + ", ".join(
        f"{p.value}x at N={n}" for n, p in PAPER_SPEEDUP_BY_N.items()) + f" ({PAPER_SPEEDUP_BY_N[1024].source})")
    heads_dims = sorted(frame["head_dim"].unique())
    causals = sorted(frame["causal"].unique())
    fig, axes = plt.subplots(len(causals), len(heads_dims), figsize=(4.4 * len(heads_dims), 3.2 * len(causals)),
                             sharex=True, sharey=True, squeeze=False)
    colors = dict(zip(providers, sns.color_palette("tab10", len(providers))))
    for (i, causal), (j, d) in itertools.product(enumerate(causals), enumerate(heads_dims)):
        ax = axes[i][j]
        for (gpu, provider), group in frame[(frame["head_dim"] == d) & (frame["causal"] == causal)].groupby(
                ["gpu", "provider"]):
            group = group.sort_values("seq_len")
            ax.plot(group["seq_len"], group["ratio_to_fp16"], "o-", color=colors[provider],
                    label=f"{provider} ({gpu})")
        if d == PAPER_SPEED_SHAPE["head_dim"] and causal == PAPER_SPEED_SHAPE["causal"]:
            ax.plot(list(PAPER_SPEEDUP_BY_N), [p.value for p in PAPER_SPEEDUP_BY_N.values()], "X--", color="black",
                    label="paper: full INT8 (A100)")
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_xscale("log", base=2)
        ns = sorted(frame["seq_len"].unique())
        ax.set_xticks(ns, [f"{n // 1024}k" if n >= 1024 else str(n) for n in ns])
        ax.minorticks_off()
        ax.set_ylim(0, max(2.0, float(frame["ratio_to_fp16"].max()) * 1.1))
        ax.set_title(f"D={d}, {'causal' if causal else 'non-causal'}", fontsize=10)
        if i == len(causals) - 1:
            ax.set_xlabel("sequence length N (tokens)")
        if j == 0:
            ax.set_ylabel(f"speed / {fp16} (x)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    gpus = ", ".join(sorted(frame["gpu"].unique()))
    main = frame[frame["provider"] == providers[0]]
    at_paper_shape = main[(main["head_dim"] == PAPER_SPEED_SHAPE["head_dim"])
                          & (main["causal"] == PAPER_SPEED_SHAPE["causal"])]["ratio_to_fp16"]
    where, main = (("D=64, non-causal as the paper", at_paper_shape) if len(at_paper_shape)
                   else ("every shape", main["ratio_to_fp16"]))
    paper = [p.value for p in PAPER_SPEEDUP_BY_N.values()]
    fig.tight_layout()
    fig.suptitle(f"{gpus}: {providers[0]} runs at {main.min():.2f}-{main.max():.2f}x the FP16 Triton kernel "
                 f"({where});\nthe paper reports {min(paper)}-{max(paper)}x on an A100", y=1.06)
    caption = (f"Speed relative to {fp16}, the project's FP16 FlashAttention kernel in Triton (the paper's baseline "
               "is the authors' FP16 Triton kernel), both measured in one benchmark run per GPU (the full suite where "
               "present), prefill shapes (Nq = Nk), B=4, H=32. Above 1: faster than FP16. Black: the paper's "
               "full-INT8 speed-ups on an A100, drawn in the shape of the authors' benchmark script (D=64, "
               "non-causal); our GPU differs.")
    return Study(name, frame, fig, caption, findings,
                 {"sources": sorted(frame["source"].unique()) if "source" in frame else [],
                  "providers": list(providers), "baseline": fp16})
