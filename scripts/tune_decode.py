"""Sweep the decode kernel's split count and launch parameters on the GPU (issue 10), one CSV row per variant.

    python scripts/tune_decode.py [--batch 1 8] [--heads-kv 32 8] [--seq-k 32768 131072] [--seq-q 1 16]
                                  [--block-n 64 128] [--warps 4 8] [--stages 2 3 4] [--tiles-in-flight 1 2]
                                  [--cross] [--out DIR]

For each decode shape (Hq = 32, D = 128, non-causal: every query sees the whole cache) it times, with
``intfa.bench.measure.time_calls`` (median, L2 flushed before each call; ``--timing gpu``, the default, hides the
host's launch latency, which ``--timing eager`` = ``triton.testing.do_bench`` counts where it exceeds the flush):

1. the device-to-device copy bandwidth (once per run: 2 x bytes / time, as ``intfa.bench`` counts it);
2. torch SDPA on the fp16 cache, every backend that runs (flash, efficient, cuDNN); the fastest is the yardstick;
3. the decode kernel on a pre-quantized INT8 cache in the paper's configuration (K per token, V per (batch, head), V
   stored sequence-contiguous), first over split counts (the heuristic's choice, and SPLIT_CANDIDATES: 1 to 64) with the
   API's launch for each (the table's parameters and its tiles in flight for that split length), then, at the best
   split count of each block_n, over num_warps x num_stages x --tiles-in-flight; with ``--cross``, every split count
   (``--splits``; 0 is the heuristic's) x num_warps x num_stages x tiles in flight instead (fewer warps may want
   more splits);
4. the best variant again on a paged copy of the cache (pages of --page-size keys, shuffled), with the pipeline
   depths of --paged-stages (default: the launch table's for paged caches): the paged path should be within 10%
   of the contiguous one.

GB/s is the INT8 cache's bytes (K and V codes, K's per-token scales) over the time; ``fraction_of_copy`` divides it
by the copy bandwidth (issue 10's target: >= 0.85); ``speedup_vs_sdpa`` is the fastest SDPA's time over ours
(target: >= 1.8 at Nk >= 16k). block_n is a QuantConfig field (it changes the numbers); the kernel's launch
parameters and the table in intfa/kernels/dispatch.py (decode_launch) do not. ``rel_l2_vs_sdpa`` checks each
variant's output. Writes <--name>.csv (default tune_decode.csv) under --out (default results/<gpu>/tune). Needs
CUDA. The whole default sweep may exceed ten minutes: split it by --seq-k (and --name) if a run is time-limited.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import re
import sys
import time
from pathlib import Path

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import intfa
from intfa.bench.measure import FLUSHES, TIMINGS, time_calls
from intfa.kernels import attention_forward
from intfa.kernels import decode as decode_kernels
from intfa.kernels.dispatch import (PAGED_STAGES, DecodeLaunch, decode_launch, decode_splits, decode_tiles_in_flight,
                                    device_arch)
from sim import QuantConfig

SDPA_BACKENDS = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION}
SPLIT_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
COLUMNS = ["gpu", "batch", "heads_q", "heads_kv", "seq_q", "seq_k", "head_dim", "provider", "block_n", "block_m",
           "num_warps", "num_stages", "kv_splits", "kv_splits_default", "paged", "ms", "cache_gbytes",
           "gbytes_per_s", "copy_gbytes_per_s", "fraction_of_copy", "speedup_vs_sdpa", "rel_l2_vs_sdpa", "error",
           "timing", "host_ms", "flush", "combine_chunk", "tiles_in_flight"]


TIMING = ["gpu", "zero"]  # --timing and --flush: intfa.bench's method (time_calls), set once in main


def bench_ms(fn, row: dict | None = None) -> float:
    """Median ms of one call (intfa.bench.measure.time_calls: L2 flushed; with "gpu" timing the host's launch
    latency hidden); the host's time per call goes to ``row["host_ms"]``."""
    times = time_calls([fn], 25, 100, *TIMING)
    if row is not None:
        row["host_ms"] = times["host_ms"]
    return times["ms"]


def copy_bandwidth(gbytes: float = 2.0) -> float:
    """Device-to-device copy bandwidth, GB/s: a ``gbytes`` buffer read and written once (2 x bytes / time)."""
    src = torch.empty(int(gbytes * 1e9) // 2, dtype=torch.float16, device="cuda").normal_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda: dst.copy_(src))
    return 2 * src.numel() * src.element_size() / (ms * 1e-3) / 1e9


def relative_l2(out, ref) -> float:
    return (torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref)).item()


def int8_cache(q, k, v, config: QuantConfig):
    """The paper-configuration INT8 operands (V sequence-contiguous) and the cache's bytes."""
    q8, qs = intfa.quantize(q, config.q_granularity)
    k8, ks = intfa.quantize(k, config.k_granularity)
    v8, vs = intfa.quantize(v, config.v_quant_granularity)
    v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)
    cache_bytes = k8.numel() + v8.numel() + 4 * (ks.numel() + vs.numel())
    return (q8, k8, v8, qs, ks, vs), cache_bytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--heads-q", type=int, default=32)
    parser.add_argument("--heads-kv", type=int, nargs="+", default=[32, 8])
    parser.add_argument("--seq-k", type=int, nargs="+", default=[32768, 131072])
    parser.add_argument("--seq-q", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-n", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="split counts to time, 0 for the heuristic's (default: the heuristic's and SPLIT_CANDIDATES)")
    parser.add_argument("--page-size", type=int, default=256)
    parser.add_argument("--paged-stages", type=int, nargs="+", default=None,
                        help="pipeline depths for the paged run (default: the launch table's, PAGED_STAGES)")
    parser.add_argument("--combine-chunk", type=int, default=None,
                        help="splits the combine kernel reads per round (default: decode.COMBINE_SPLIT_CHUNK); an "
                             "experiment's knob, recorded in the CSV")
    parser.add_argument("--timing", choices=TIMINGS, default="gpu", help="as python -m intfa.bench's --timing")
    parser.add_argument("--flush", choices=FLUSHES, default="zero", help="as python -m intfa.bench's --flush")
    parser.add_argument("--out", type=Path, default=None, help="default results/<gpu>/tune")
    parser.add_argument("--tiles-in-flight", type=int, nargs="+", default=[1], choices=(1, 2),
                        help="key tiles per iteration of the split programs' loop (DecodeLaunch.tiles_in_flight)")
    parser.add_argument("--cross", action="store_true",
                        help="time every (split count, warps, stages) instead of the launch table's parameters over "
                             "the split counts and then warps x stages at the best count (fewer warps may want more "
                             "splits)")
    parser.add_argument("--name", default="tune_decode", help="the CSV's name (<name>.csv), to keep split runs apart")
    args = parser.parse_args(argv)
    TIMING[:] = [args.timing, args.flush]
    if args.combine_chunk is not None:
        if args.combine_chunk < 1 or args.combine_chunk & (args.combine_chunk - 1):
            parser.error(f"--combine-chunk: expected a power of two >= 1, got {args.combine_chunk}")
        decode_kernels.COMBINE_SPLIT_CHUNK = args.combine_chunk  # read by decode_forward at each call
    if not torch.cuda.is_available():
        print("tune_decode: needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    if args.out is None:
        args.out = Path("results") / re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") / "tune"
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    copy_gbps = copy_bandwidth()
    print(f"{gpu}: device-to-device copy {copy_gbps:.0f} GB/s", flush=True)
    rows = []
    hq, d = args.heads_q, args.head_dim
    for b, hkv, nk, nq in itertools.product(args.batch, args.heads_kv, args.seq_k, args.seq_q):
        torch.manual_seed(0)
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn_like(k)
        base = dict(gpu=gpu, timing=args.timing, flush=args.flush, combine_chunk=decode_kernels.COMBINE_SPLIT_CHUNK,
                    batch=b, heads_q=hq, heads_kv=hkv, seq_q=nq, seq_k=nk, head_dim=d, copy_gbytes_per_s=copy_gbps)
        label = f"B={b} Hkv={hkv} Nk={nk} Nq={nq}"
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != hq).float()
        sdpa_ms = float("inf")
        for name, backend in SDPA_BACKENDS.items():
            row = dict(base, provider=name)
            try:
                with sdpa_kernel(backend):
                    fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != hq)  # noqa: E731
                    fn()
                    row["ms"] = bench_ms(fn, row)
                sdpa_ms = min(sdpa_ms, row["ms"])
                print(f"{label} {name:40s} {row['ms']:8.3f} ms", flush=True)
            except Exception as exc:  # noqa: BLE001 - a backend that does not run this shape is a row
                row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            rows.append(row)

        def measure(ops, cfg, launch, kv_splits, cache_bytes, paged=None):
            """One variant: a row with its time and bandwidth (or its error)."""
            row = dict(base, provider="int8-decode", block_n=cfg.block_n, block_m=launch.block_m,
                       num_warps=launch.num_warps, num_stages=launch.num_stages,
                       tiles_in_flight=launch.tiles_in_flight, kv_splits=kv_splits,
                       paged=paged is not None, cache_gbytes=cache_bytes / 1e9)
            extra = {} if paged is None else dict(block_table=paged[0], seq_lens=paged[1])
            try:
                def run():
                    return attention_forward(*ops, config=cfg, scale=d ** -0.5, launch=launch, kv_splits=kv_splits,
                                             **extra)
                row["rel_l2_vs_sdpa"] = relative_l2(run(), ref)
                row["ms"] = bench_ms(run, row)
                row["gbytes_per_s"] = cache_bytes / (row["ms"] * 1e-3) / 1e9
                row["fraction_of_copy"] = row["gbytes_per_s"] / copy_gbps
                row["speedup_vs_sdpa"] = sdpa_ms / row["ms"]
                print(f"{label} int8 bn{cfg.block_n} bm{launch.block_m} w{launch.num_warps} s{launch.num_stages} "
                      f"t{launch.tiles_in_flight} "
                      f"splits {kv_splits:3d}{' paged' if paged else '':6s} {row['ms']:8.3f} ms "
                      f"{row['gbytes_per_s']:7.0f} GB/s ({row['fraction_of_copy']:.2f} of copy) "
                      f"{row['speedup_vs_sdpa']:.2f}x SDPA err {row['rel_l2_vs_sdpa']:.1e}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a variant that does not compile or fit is a row
                row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                print(f"{label} int8 bn{cfg.block_n} splits {kv_splits} FAILED {row['error']}", flush=True)
            rows.append(row)
            return row

        best = None
        for bn in args.block_n:
            cfg = QuantConfig.paper().replace(block_n=bn)
            ops, cache_bytes = int8_cache(q, k, v, cfg)
            table = decode_launch(device_arch(q.device), d, nq, hq // hkv)
            default = decode_splits(b, hq, hkv, nq, nk, cfg, q.device, head_dim=d)
            key_tiles = triton.cdiv(nk, bn)
            # --splits 0 stands for the heuristic's count
            candidates = sorted({default if s == 0 else s for s in args.splits} if args.splits
                                else {default, *(s for s in SPLIT_CANDIDATES if s <= key_tiles)})
            if args.cross:
                by_splits = []
            else:  # the API's launch for each count: the table's, with its tiles in flight for that split length
                by_splits = [measure(ops, cfg, dataclasses.replace(
                    table, tiles_in_flight=decode_tiles_in_flight(table.block_m, nk, s)), s, cache_bytes)
                    for s in candidates]
            for row in by_splits:
                row["kv_splits_default"] = default
            timed = [row for row in by_splits if "ms" in row]
            if not timed and not args.cross:
                continue
            best_splits = [min(timed, key=lambda row: row["ms"])["kv_splits"]] if timed else []
            for warps, stages, tiles, splits in itertools.product(args.warps, args.stages, args.tiles_in_flight,
                                                                  candidates if args.cross else best_splits):
                launch = DecodeLaunch(block_m=table.block_m, num_warps=warps, num_stages=stages,
                                      tiles_in_flight=tiles)
                row = measure(ops, cfg, launch, splits, cache_bytes)
                row["kv_splits_default"] = default
                if "ms" in row and (best is None or row["ms"] < best[0]["ms"]):
                    best = (row, cfg, launch)
            del ops
        if best is not None:  # the best variant on a paged copy of the same cache
            row, cfg, launch = best
            ops, cache_bytes = int8_cache(q, k, v, cfg)
            paged_cache = intfa.page_operands(intfa.Operands(*ops), cfg, args.page_size)
            paged_ops, table, seq_lens = paged_cache.args, paged_cache.block_table, paged_cache.seq_lens
            del ops
            for stages in args.paged_stages or [PAGED_STAGES]:
                paged_launch = DecodeLaunch(block_m=launch.block_m, num_warps=launch.num_warps, num_stages=stages,
                                            tiles_in_flight=launch.tiles_in_flight)
                paged = measure(paged_ops, cfg, paged_launch, row["kv_splits"], cache_bytes, paged=(table, seq_lens))
                paged["kv_splits_default"] = row["kv_splits_default"]
                if "ms" in paged:
                    print(f"{label} paged ({stages} stages) / contiguous time: {paged['ms'] / row['ms']:.3f} "
                          "(target <= 1.10)", flush=True)
            del paged_ops, paged_cache
        del q, k, v, ref
        torch.cuda.empty_cache()
    path = args.out / f"{args.name}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"tune_decode: {len(rows)} rows in {time.time() - t0:.0f} s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
