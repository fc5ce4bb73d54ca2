"""Where a decode call's GPU time goes: each kernel's duration and the gaps, under each L2 flush (issue 10).

    python scripts/decode_timeline.py [--batch 1 8] [--heads-kv 8 32] [--seq-k 16384 32768] [--seq-q 1]
                                      [--out DIR] [--name decode_timeline]

For each decode shape (Hq = 32, D = 128, paper configuration, pre-quantized INT8 cache, the API's split count) and
each flush of :data:`intfa.bench.FLUSHES` it reports:

1. the call's time as ``python -m intfa.bench`` takes it (:func:`intfa.bench.time_calls`, GPU timing), and the
   fastest SDPA backend's on the fp16 cache, timed the same way;
2. the durations of the decode call's own kernels (the split kernel, the combine kernel), from the CUDA profiler
   (torch.profiler's CUPTI activity), one flush and spin before each call as in the timing: their sum against
   the timed call shows the launch gaps; the split kernel's time against the cache's bytes shows how close the
   reads come to the bandwidth. Where the combine is a programmatic dependent launch (Hopper, since 2b8451b) it
   starts while the split kernel runs and its duration includes its wait: then ``combine_kernel_ms`` is about the
   split kernel's and ``gap_ms`` negative, and only ``int8_ms - split_kernel_ms`` (the combine's tail and the
   gaps together) means something.

The question it answers: is a small decode call's time the cache's bytes, the fixed costs of two launches, or
the flush's dirty lines written back (see time_calls' docstring)? Writes <name>.csv under --out (default
results/<gpu>/tune). Needs CUDA.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import re
import statistics
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import intfa
from intfa.bench.measure import FLUSHES, l2_flusher, time_calls
from intfa.kernels import attention_forward
from intfa.kernels.dispatch import decode_splits
from sim import QuantConfig

COLUMNS = ["gpu", "batch", "heads_q", "heads_kv", "seq_q", "seq_k", "head_dim", "flush", "kv_splits",
           "cache_gbytes", "int8_ms", "sdpa_ms", "sdpa_backend", "speedup", "split_kernel_ms", "combine_kernel_ms",
           "kernels_ms", "gap_ms", "split_gbytes_per_s"]
SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def kernel_times(fn, flush: str, calls: int = 30) -> dict[str, float]:
    """Median duration (ms) of each kernel ``fn`` launches, by kernel name, from the CUDA profiler; each call
    preceded by the flush and a spin, as in :func:`time_calls`."""
    flush_l2 = l2_flusher(flush)
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            flush_l2()
            torch.cuda._sleep(2_000_000)  # ~1 ms: the call is queued before the GPU reaches it
            fn()
        torch.cuda.synchronize()
    durations: dict[str, list[float]] = {}
    for event in prof.events():
        name = event.name
        if "decode" in name:
            durations.setdefault(name, []).append(event.device_time_total / 1e3)
    return {name: statistics.median(values) for name, values in durations.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--heads-kv", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seq-k", type=int, nargs="+", default=[16384, 32768])
    parser.add_argument("--seq-q", type=int, nargs="+", default=[1])
    parser.add_argument("--heads-q", type=int, default=32)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="default results/<gpu>/tune")
    parser.add_argument("--name", default="decode_timeline")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("decode_timeline: needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    if args.out is None:
        args.out = Path("results") / re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") / "tune"
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = QuantConfig.paper()
    hq, d = args.heads_q, args.head_dim
    rows = []
    for b, hkv, nk, nq in itertools.product(args.batch, args.heads_kv, args.seq_k, args.seq_q):
        torch.manual_seed(0)
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        ops = intfa.quantize_operands(q, k, v, cfg)  # the cache as the benchmark's int8-full provider holds it
        cache_bytes = ops.k_codes.numel() + ops.v.numel() + 4 * (ops.k_scale.numel() + ops.v_scale.numel())
        splits = decode_splits(b, hq, hkv, nq, nk, cfg, q.device, head_dim=d)

        def int8_call():
            return attention_forward(*ops, config=cfg, scale=d ** -0.5, kv_splits=splits)

        for flush in FLUSHES:
            sdpa = {}
            for name, backend in SDPA_BACKENDS.items():
                try:
                    with sdpa_kernel(backend):
                        call = lambda: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
                            q, k, v, enable_gqa=hkv != hq)
                        call()
                        sdpa[name] = time_calls([call], 25, 100, "gpu", flush)["ms"]
                except RuntimeError:
                    continue
            backend = min(sdpa, key=sdpa.get)
            int8_ms = time_calls([int8_call], 25, 100, "gpu", flush)["ms"]
            kernels = kernel_times(int8_call, flush)
            split_ms = sum(ms for name, ms in kernels.items() if "split" in name)
            combine_ms = sum(ms for name, ms in kernels.items() if "combine" in name)
            row = dict(gpu=gpu, batch=b, heads_q=hq, heads_kv=hkv, seq_q=nq, seq_k=nk, head_dim=d, flush=flush,
                       kv_splits=splits, cache_gbytes=cache_bytes / 1e9, int8_ms=int8_ms, sdpa_ms=sdpa[backend],
                       sdpa_backend=backend, speedup=sdpa[backend] / int8_ms, split_kernel_ms=split_ms,
                       combine_kernel_ms=combine_ms, kernels_ms=split_ms + combine_ms,
                       gap_ms=int8_ms - split_ms - combine_ms,
                       split_gbytes_per_s=cache_bytes / (split_ms * 1e-3) / 1e9 if split_ms else float("nan"))
            rows.append(row)
            print(f"B={b} Hkv={hkv} Nk={nk} Nq={nq} flush={flush:4s} splits={splits:2d}: int8 {int8_ms * 1e3:7.1f} us "
                  f"(split {split_ms * 1e3:6.1f} + combine {combine_ms * 1e3:5.1f} + gaps {row['gap_ms'] * 1e3:5.1f}; "
                  f"split reads {row['split_gbytes_per_s']:6.0f} GB/s) sdpa-{backend} {sdpa[backend] * 1e3:7.1f} us "
                  f"-> {row['speedup']:.2f}x", flush=True)
        del q, k, v, ops
        torch.cuda.empty_cache()
    path = args.out / f"{args.name}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"decode_timeline: {len(rows)} rows -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
