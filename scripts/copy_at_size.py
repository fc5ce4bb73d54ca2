"""What a device-to-device copy reaches when it moves as few bytes as a decode call reads (issue 10's yardstick).

    python scripts/copy_at_size.py [--bench results/<gpu>/bench-decode.csv] [--min-seq-k 16384] [--out CSV]

Issue 10 asks decode calls to read their INT8 cache at >= 85% of the device-to-device copy bandwidth measured in
the same run; ``python -m intfa.bench`` measures that copy on a large tensor (``copy_gbytes_per_s``, ~2960 GB/s
on the H100). A call that reads 17 MB cannot amortise a kernel's start, its ramp to full bandwidth and its tail
the way a 1 GB copy does; neither can a copy of 17 MB. This script times, in one run with the benchmark's own
method (``intfa.bench.measure.time_calls``: GPU timing, L2 zeroed before each call), a copy that moves the same
number of bytes as each distinct INT8 cache of the committed decode benchmark (half read, half written, as the
yardstick counts both), beside the large copy. Rows: ``gbytes`` (the INT8 call's bytes), ``copy_same_ms``,
``copy_same_gbytes_per_s``, ``copy_gbytes_per_s`` (the large copy, this run), ``same_over_large``; then, per
decode shape of the committed CSV, the INT8 call's ``fraction_of_copy`` (its run) and
``fraction_of_same_size_copy`` (its GB/s over this run's same-size copy: two runs, so a few percent either way).
Needs CUDA.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from intfa.bench.measure import measure_copy

ROOT = Path(__file__).resolve().parent.parent


def copy_gbytes_per_s(moved_bytes: int, *, warmup_ms: float, rep_ms: float) -> tuple[float, float]:
    """(ms, GB/s) of a device-to-device copy moving ``moved_bytes`` (read plus written): the benchmark's own
    :func:`~intfa.bench.measure.measure_copy` on a float16 tensor of a quarter of those bytes, GPU timing."""
    numel = max(moved_bytes // 4, 16)
    gbps = measure_copy(warmup_ms=warmup_ms, rep_ms=rep_ms, shape=(numel,), timing="gpu", flush="zero")
    return 4 * numel / (gbps * 1e9) * 1e3, gbps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=ROOT / "results/nvidia-h100-80gb-hbm3/bench-decode.csv")
    parser.add_argument("--min-seq-k", type=int, default=16384)
    parser.add_argument("--warmup-ms", type=float, default=25.0)
    parser.add_argument("--rep-ms", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=None, help="CSV of the per-shape rows")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("copy_at_size: needs CUDA", file=sys.stderr)
        return 2

    bench = pd.read_csv(args.bench)
    calls = bench[(bench["provider"] == "int8-full") & (bench["seq_k"] >= args.min_seq_k) & bench["ms"].notna()]
    large = measure_copy(warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, timing="gpu", flush="zero")
    sizes = {}
    for gbytes in sorted(calls["gbytes"].round(4).unique()):
        ms, gbps = copy_gbytes_per_s(int(gbytes * 1e9), warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
        sizes[gbytes] = (ms, gbps)
        print(f"{gbytes * 1e3:9.1f} MB: copy {ms * 1e3:8.1f} us, {gbps:6.0f} GB/s = {gbps / large:.2f} of the "
              f"large copy ({large:.0f} GB/s)", flush=True)

    rows = calls[["batch", "kv_heads", "seq_q", "seq_k", "head_dim", "ms", "gbytes", "gbytes_per_s",
                  "fraction_of_copy", "speedup_vs_best_sdpa"]].copy()
    key = rows["gbytes"].round(4)
    rows["copy_same_ms"] = [sizes[g][0] for g in key]
    rows["copy_same_gbytes_per_s"] = [sizes[g][1] for g in key]
    rows["copy_gbytes_per_s_this_run"] = large
    rows["same_over_large"] = rows["copy_same_gbytes_per_s"] / large
    rows["fraction_of_same_size_copy"] = rows["gbytes_per_s"] / rows["copy_same_gbytes_per_s"]
    rows["gpu"] = torch.cuda.get_device_name()
    if args.out is not None:
        rows.to_csv(args.out, index=False)
    missed = rows[(rows["fraction_of_copy"] < 0.85)]
    print(f"\n{len(rows)} shapes with Nk >= {args.min_seq_k}; {len(missed)} below 85% of the large copy; of those, "
          f"{int((missed['same_over_large'] < 0.85).sum())} where a copy of the same bytes is itself below 85% of "
          f"it, and {int((missed['fraction_of_same_size_copy'] >= 0.85).sum())} where the INT8 call reads at >= 85% "
          "of the same-size copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
