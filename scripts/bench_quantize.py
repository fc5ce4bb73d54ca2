"""Bandwidth of INT8 quantization against a device-to-device copy, on one CUDA GPU (issue #4: >= 80% of copy).

Usage (device machine, repo root): ``PYTHONPATH=$PWD python scripts/bench_quantize.py [--sweep] [--before FILE]``

Prints, for x of shape (4, 32, 8192, 128) fp16 (the bench's QUANTIZE_SHAPE):

- the bench's own table (:func:`intfa.bench.measure_quantize`: public ``intfa.quantize`` per granularity,
  bytes = x read once + codes + scales written once, against ``copy_`` of x in the same run);
- V's path in ``scaled_dot_product_attention`` (codes stored sequence-contiguous, with the fused finiteness
  flag read back), per V granularity;
- with ``--sweep``: tile size and warps of the kernels, to justify the defaults;
- with ``--before FILE``: a previous ``intfa/kernels/quantize.py`` (e.g. ``git show HEAD:...``) timed the
  way the previous ``intfa.quantize`` ran it (``torch.isfinite(x).all()`` first).
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
import triton.testing

import intfa
from intfa.bench import (
    QUANTIZE_BLOCK_SIZE,
    QUANTIZE_GRANULARITIES,
    QUANTIZE_SHAPE,
    format_quantize_table,
    measure_quantize,
)
from intfa.kernels.quantize import quantize_int8


def gbytes_per_s(fn, moved: int) -> float:
    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    return moved / (ms * 1e-3) / 1e9


def bytes_moved(x: torch.Tensor, granularity: str) -> int:
    codes, scales = intfa.quantize(x, granularity, block_size=block_of(granularity))
    return x.numel() * x.element_size() + codes.numel() + scales.numel() * 4


def block_of(granularity: str):
    return QUANTIZE_BLOCK_SIZE if granularity in ("block", "block_channel") else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time tile sizes and warps")
    parser.add_argument("--before", help="path of a previous intfa/kernels/quantize.py to time as it ran")
    args = parser.parse_args()

    gpu = torch.cuda.get_device_name()
    rows = measure_quantize(gpu=gpu, warmup_ms=25, rep_ms=200)
    print(format_quantize_table(rows))
    copy_gbps = rows[0]["copy_gbytes_per_s"]

    x = torch.randn(*QUANTIZE_SHAPE, device="cuda", dtype=torch.float16)
    print(f"\nV path of scaled_dot_product_attention (seq_contiguous codes, finiteness flag read back); copy "
          f"{copy_gbps:.0f} GB/s")
    for granularity in ("tensor", "channel", "block_channel"):
        def v_path(g=granularity):
            flag = torch.zeros(1, dtype=torch.int32, device="cuda")
            quantize_int8(x, g, block_size=block_of(g), seq_contiguous=True, nonfinite_flag=flag)
            return flag.item()
        gbps = gbytes_per_s(v_path, bytes_moved(x, granularity))
        print(f"{granularity:>14}  {gbps:7.0f} GB/s  {gbps / copy_gbps:6.0%} of copy")

    if args.sweep:
        print("\nsweep: kernels alone (no flag), GB/s by tile elements x warps")
        for granularity, seq_contiguous in (("token", False), ("channel", False), ("block", False),
                                            ("block_channel", False), ("block_channel", True)):
            moved = bytes_moved(x, granularity)
            for tile in ((4096, 8192, 16384) if granularity in ("token", "channel") else (None,)):
                cells = []
                for warps in (1, 2, 4, 8, 16):
                    def fn(g=granularity, seq=seq_contiguous, tile=tile, warps=warps):
                        return quantize_int8(x, g, block_size=block_of(g), seq_contiguous=seq, tile_elements=tile,
                                             num_warps=warps)
                    cells.append(f"w{warps} {gbytes_per_s(fn, moved):6.0f}")
                print(f"{granularity:>13} seq_contiguous={seq_contiguous!s:5} tile {tile or 'block':>5}: " + "  ".join(cells))

    print("\nhost overhead: one intfa.quantize call on a (1, 1, 16, 128) tensor, flag read back included")
    tiny = torch.randn(1, 1, 16, 128, device="cuda", dtype=torch.float16)
    for granularity in QUANTIZE_GRANULARITIES:
        us = 1e3 * triton.testing.do_bench(lambda g=granularity: intfa.quantize(tiny, g, block_size=block_of(g)),
                                           warmup=25, rep=100, return_mode="median")
        print(f"{granularity:>14}  {us:6.1f} us")

    if args.before:
        spec = importlib.util.spec_from_file_location("quantize_before", args.before)
        before = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(before)
        print("\nbefore (isfinite check + previous kernels), GB/s")
        for granularity in QUANTIZE_GRANULARITIES:
            def old(g=granularity):
                if not bool(torch.isfinite(x).all()):
                    raise ValueError("x: expected finite values")
                return before.quantize_int8(x, g, block_size=block_of(g))
            gbps = gbytes_per_s(old, bytes_moved(x, granularity))
            print(f"{granularity:>14}  {gbps:7.0f} GB/s  {gbps / copy_gbps:6.0%} of copy")


if __name__ == "__main__":
    main()
