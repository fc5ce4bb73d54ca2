"""The paper's speed figure, from the benchmark's committed CSVs (``results/<gpu>/bench-<suite>.csv``).

The benchmark itself is ``python -m intfa.bench`` (it needs CUDA); this module only reads what it
wrote, or runs it where a GPU is present.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import seaborn as sns

from ..provenance import REPO_ROOT
from ..runtime import cuda_available
from .figures import Study, fmt

#: Columns every benchmark CSV has (issue #4).
BENCH_COLUMNS = ("gpu", "provider", "batch", "heads", "seq_q", "seq_k", "head_dim", "causal", "ms", "tflops")
#: The paper's speed claim: full INT8 is 72% faster than FP16 FlashAttention (Triton, Ampere).
PAPER_SPEEDUP_VS_FP16 = 1.72


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


def speed_study(bench: pd.DataFrame, *, name="speed/speed_vs_seq_len", int8="int8-full",
                fp16="triton-fp16") -> Study | None:
    """TFLOP/s against N per provider, with each GPU's ``int8`` / ``fp16`` speed ratio; None if ``bench``
    is empty."""
    if bench.empty:
        return None
    # Prefill shapes only (Nq = Nk: decode shapes have their own axis, Nk, and would zig-zag the lines),
    # and one benchmark run per GPU -- the "full" suite where there is one (it holds the paper's shapes
    # too) -- so that every point and every ratio comes from a single run.
    bench = bench[bench["seq_q"] == bench["seq_k"]]
    if "suite" in bench:
        preferred = bench.groupby("gpu")["suite"].agg(lambda s: "full" if "full" in set(s) else sorted(set(s))[0])
        bench = bench[bench["suite"] == bench["gpu"].map(preferred)]
    if bench.empty:
        return None
    findings = []
    ratios = []
    for (gpu, d, causal), group in bench.groupby(["gpu", "head_dim", "causal"]):
        table = group.groupby(["seq_k", "provider"])["tflops"].median().unstack("provider")
        if int8 in table and fp16 in table:
            r = (table[int8] / table[fp16]).dropna()
            ratios.extend(r.tolist())
            findings.append(f"{gpu}, D={d}, causal={causal}: {int8} / {fp16} = {fmt(r.min())}-{fmt(r.max())}x over "
                            f"N={int(r.index.min())}..{int(r.index.max())} (paper: {PAPER_SPEEDUP_VS_FP16}x on Ampere)")
        else:
            findings.append(f"{gpu}, D={d}, causal={causal}: no {int8} and {fp16} pair measured")
    grid = sns.relplot(data=bench, x="seq_k", y="tflops", hue="provider", col="head_dim", row="causal", style="gpu",
                       kind="line", marker="o", height=3, aspect=1.3)
    grid.set(xscale="log")
    grid.set_axis_labels("sequence length N (tokens)", "TFLOP/s (TOP/s for INT8)")
    grid.set_titles("causal={row_name} | D={col_name}")
    title = (f"{int8} runs at {fmt(min(ratios))}-{fmt(max(ratios))}x {fp16} (paper: +72% on Ampere)" if ratios
             else f"Speed vs N (no {int8}/{fp16} pair measured)")
    grid.figure.suptitle(title, y=1.03)
    caption = ("Prefill shapes (Nq = Nk), B=4, H=32, from one benchmark run per GPU (the full suite where present); "
               "the ratio in the title is measured within that run, which is what the paper's claim compares.")
    return Study(name, bench, grid.figure, caption, findings,
                 {"sources": sorted(bench["source"].unique()) if "source" in bench else []})
