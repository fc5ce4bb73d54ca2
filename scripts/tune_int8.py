"""Time variants of the INT8 prefill kernel against SDPA in one run (issue 9), one CSV row per variant and shape.

    python scripts/tune_int8.py --variants paper:128:8:3:0 paper:64:4:3:1 [--seq 4096 16384] [--head-dims 64 128]
                                [--causal 0 1] [--jobs 8] [--out DIR]

A variant is ``config:block_m:num_warps:num_stages:tma``: a named QuantConfig (``paper``, ``recommended``,
``half_int8``, an ablation ``paper+vblock``, ``paper+s255``, ``paper+tilemax``, ``paper+qnorm``, or a variant of the
recommended one ``recommended+vchannel``, ``recommended+vtensor``, ``recommended+fixedp``), the tile
height, warps, software-pipeline depth, and 1/0 for K and V tiles through TMA descriptors or pointers (the
``intfa.kernels.Launch`` fields). Version 6 of docs/performance.md used a bit set of experimental code paths in
this last field (its CSV says which); the winners became the kernel's only path. The kernel alone is timed, on operands quantized beforehand by
``intfa.quantize_operands``, with ``triton.testing.do_bench`` (median), beside SDPA's cuDNN and flash backends
measured in the same run; each output is compared with SDPA's (``rel_l2_vs_sdpa``), and each variant's registers,
spills and hot-loop thread-instructions per score (scripts/sass_histogram.py) go into the same row.

Compilation dominates a sweep: ``--jobs N`` compiles every variant first in N worker processes (they fill Triton's
on-disk cache), then one process times them in turn. Needs CUDA.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import multiprocessing
import re
import sys
import time
from pathlib import Path

from variants import Variant, run_variant

COLUMNS = ["gpu", "batch", "heads", "seq", "head_dim", "causal", "variant", "config", "block_m", "num_warps",
           "num_stages", "use_tma", "ms", "tops", "speedup_vs_cudnn", "rel_l2_vs_sdpa", "registers", "spills",
           "loop_per_score", "loop_alu_per_score", "loop_mufu_per_score", "error"]


def _compile_worker(job):
    """Compile one (variant, head_dim, causal) on a small input; returns an error line or None."""
    spec, d, causal = job
    import torch

    try:
        q, k, v = (torch.randn(1, 2, 512, d, device="cuda", dtype=torch.float16) for _ in range(3))
        run_variant(Variant.parse(spec), q, k, v, causal=causal)()
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # noqa: BLE001 - reported, the sweep goes on
        return f"{spec} D={d} causal={causal}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


def precompile(variants, head_dims, causals, jobs: int) -> None:
    work = [(str(v), d, bool(c)) for v, d, c in itertools.product(variants, head_dims, causals)]
    started = time.time()
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for error in pool.imap_unordered(_compile_worker, work):
            if error:
                print(f"compile failed: {error}", flush=True)
    print(f"precompiled {len(work)} kernels in {time.time() - started:.0f} s with {jobs} workers", flush=True)


def loop_stats(kernel, variant: Variant) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sass_histogram import hot_loop, per_score

    counts = per_score(hot_loop(kernel.asm["sass"]), variant.block_m, variant.config.block_n, variant.num_warps)
    not_alu = {"IGMMA", "HGMMA", "QGMMA", "WARPGROUP", "MUFU", "BAR", "SYNCS", "BRA", "LDG", "LDGSTS", "LDS", "STS",
               "LDSM", "UTMALDG"}
    return dict(loop_per_score=sum(counts.values()),
                loop_alu_per_score=sum(n for op, n in counts.items() if op not in not_alu),
                loop_mufu_per_score=counts.get("MUFU", 0.0))


def main(argv=None) -> int:
    import torch
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sass_histogram import compiled_kernel_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=Variant.parse, nargs="+", required=True)
    parser.add_argument("--seq", type=int, nargs="+", default=[16384])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--causal", type=int, nargs="+", default=[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=0, help="compile in this many processes first (0: no)")
    parser.add_argument("--rep-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, required=True, help="folder for tune.csv")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_int8: needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.jobs:
        precompile(args.variants, args.head_dims, args.causal, args.jobs)

    def bench(fn):
        return triton.testing.do_bench(fn, warmup=25, rep=args.rep_ms, return_mode="median")

    rows, stats = [], {}
    started = time.time()
    for n, d, causal in itertools.product(args.seq, args.head_dims, args.causal):
        causal = bool(causal)
        b, h = args.batch, args.heads
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.float16) for _ in range(3))
        flops = 4 * b * h * n * n * d / (2 if causal else 1)
        base = dict(gpu=gpu, batch=b, heads=h, seq=n, head_dim=d, causal=causal)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            cudnn_ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
        rows.append(dict(base, variant="sdpa-cudnn", ms=cudnn_ms, tops=flops / cudnn_ms / 1e9, speedup_vs_cudnn=1.0))
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal))
        rows.append(dict(base, variant="sdpa-flash", ms=ms, tops=flops / ms / 1e9, speedup_vs_cudnn=cudnn_ms / ms))
        print(f"N={n} D={d} causal={causal}: cudnn {flops / cudnn_ms / 1e9:.0f} flash {flops / ms / 1e9:.0f} TOP/s",
              flush=True)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal).float()
        for variant in args.variants:
            row = dict(base, variant=str(variant), config=variant.config_name, block_m=variant.block_m,
                       num_warps=variant.num_warps, num_stages=variant.num_stages, use_tma=variant.use_tma)
            try:
                run = run_variant(variant, q, k, v, causal=causal)
                kernel = compiled_kernel_for(run)
                key = (str(variant), d, causal)
                if key not in stats:
                    stats[key] = dict(registers=kernel.n_regs, spills=kernel.n_spills, **loop_stats(kernel, variant))
                out = run().float()
                err = (torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref)).item()
                ms = bench(run)
                row.update(ms=ms, tops=flops / ms / 1e9, speedup_vs_cudnn=cudnn_ms / ms, rel_l2_vs_sdpa=err,
                           **stats[key])
                print(f"  {str(variant):28s} {ms:8.3f} ms {row['tops']:7.1f} TOP/s {row['speedup_vs_cudnn']:.2f}x "
                      f"err {err:.2e} regs {row['registers']} spills {row['spills']} "
                      f"loop {row['loop_per_score']:.2f}/score (alu {row['loop_alu_per_score']:.2f})", flush=True)
            except Exception as exc:  # noqa: BLE001 - a variant that does not compile is a row
                row["error"] = _first_line(exc)
                print(f"  {str(variant):28s} FAILED {row['error']}", flush=True)
            rows.append(row)
        del q, k, v, ref
        torch.cuda.empty_cache()
    with open(args.out / "tune.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"tune_int8: {len(rows)} rows in {time.time() - started:.0f} s -> {args.out / 'tune.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
