"""Time the Gluon Hopper kernel's variants beside the tl kernel and cuDNN's FP16 SDPA, in one run (issue 9, route 2).

    python scripts/bench_hopper.py [paper:128:2:1:0 paper:128:2:0:0 ...] [--seqs 4096 16384] [--head-dims 64 128]
                                   [--causal 0 1] [--batch 4] [--heads 32] [--tl paper:64:4:3:1] [--jobs 8]
                                   [--out results.csv]

Variants are scripts/compile_hopper_offline.py's ``config:block_m:num_stages:ws:overlap[:cvt]``; ``--tl``
takes scripts/variants.py's ``config:block_m:num_warps:num_stages:tma`` for the tl kernel. The kernels alone are
timed (``triton.testing.do_bench``, median) on operands quantized beforehand by ``intfa.quantize_operands``;
TOP/s count 4 B H N^2 D operations (half of them causal), as ``python -m intfa.bench``.

Every Gluon variant runs in child processes only (an int8 wgmma under warp specialization can abort the process
that compiles it: Triton issue 11586): first all (variant, head dim, causality) specializations compile in
parallel children (``--jobs``; they fill Triton's cache), then this process times cuDNN and the tl kernel, then
each Gluon variant is timed in its own child, one after the other. A variant whose child fails is reported as
such. Each Gluon row also gives its output's relative L2 distance to the first tl variant's on the same operands
(same configuration), which must be far below the quantization error (~1e-2): same arithmetic.
Needs CUDA.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

from compile_hopper_offline import HopperVariant


def make_operands(batch: int, heads: int, seq: int, head_dim: int, config_name: str, seed: int = 0):
    """fp16 Q, K, V ~ N(0, 1) on the GPU and their INT8 operands for the named configuration."""
    import torch

    import intfa
    import sim

    generator = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.float16, generator=generator)
               for _ in range(3))
    config = getattr(sim.QuantConfig, config_name)()
    return (q, k, v), intfa.quantize_operands(q, k, v, config), config


def time_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=100, rep=400, return_mode="median"))


def gluon_runs(variant: HopperVariant, shapes, batch: int, heads: int, time_it: bool, tl_spec: str | None):
    """Child process: run (and time) one Gluon variant on every shape; prints one JSON line per shape.

    With tl_spec (a tl-kernel variant already compiled by the parent), the row carries the relative L2 distance of
    the Gluon output to that kernel's on the same operands.
    """
    import torch
    from variants import Variant

    from intfa.kernels import attention_forward
    from intfa.kernels.hopper import hopper_forward

    for seq, head_dim, causal in shapes:
        _, ops, config = make_operands(batch, heads, seq, head_dim, variant.config_name)

        call = functools.partial(hopper_forward, *ops, config=config, scale=head_dim ** -0.5, is_causal=causal,
                                 out_dtype=torch.float16, return_lse=False, **variant.launch)

        out = call().float()
        torch.cuda.synchronize()
        row = {"seq": seq, "head_dim": head_dim, "causal": causal}
        if time_it:
            row["ms"] = time_ms(call)
        if tl_spec is not None and Variant.parse(tl_spec).config_name == variant.config_name:
            reference = attention_forward(*ops, config=config, scale=head_dim ** -0.5, is_causal=causal,
                                          out_dtype=torch.float16, launch=Variant.parse(tl_spec).launch).float()
            row["rel_l2_vs_tl"] = float((out - reference).norm() / reference.norm())
        print("ROW " + json.dumps(row), flush=True)


def tl_runs(spec: str, shapes, batch: int, heads: int) -> None:
    """Child process: run a tl-kernel variant once on every shape (compiles it into Triton's cache)."""
    import torch
    from variants import Variant

    from intfa.kernels import attention_forward

    variant = Variant.parse(spec)
    for seq, head_dim, causal in shapes:
        _, ops, config = make_operands(batch, heads, seq, head_dim, variant.config_name)
        attention_forward(*ops, config=config, scale=head_dim ** -0.5, is_causal=causal, out_dtype=torch.float16,
                          launch=variant.launch)
        torch.cuda.synchronize()


def run_child(variant, shapes, batch: int, heads: int, time_it: bool, tl_spec: str | None = None):
    """(rows, error text or None) of a child process running gluon_runs (a HopperVariant) or tl_runs (a str)."""
    code = f"import sys; sys.path[:0] = [{str(SCRIPTS)!r}, {str(SCRIPTS.parent)!r}]\nimport bench_hopper as b\n"
    if isinstance(variant, str):
        code += f"b.tl_runs({variant!r}, {shapes!r}, {batch}, {heads})\n"
    else:
        code += (f"b.gluon_runs(b.HopperVariant.parse({str(variant)!r}), {shapes!r}, {batch}, {heads}, {time_it}, "
                 f"{tl_spec!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600, check=False)
    rows = [json.loads(line[4:]) for line in result.stdout.splitlines() if line.startswith("ROW ")]
    error = None if result.returncode == 0 else f"exit {result.returncode}: {(result.stdout + result.stderr)[-1500:]}"
    return rows, error


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=HopperVariant.parse, nargs="*",
                        default=[HopperVariant.parse(v) for v in (
                            "paper:128:2:0:0", "paper:64:2:0:0", "paper:128:2:1:0", "paper:128:2:1:0:cvt",
                            "paper:128:2:2:0", "paper:128:3:2:1", "paper:128:3:2:1:cvt",
                            "paper:128:4:1:1:cvt")])  # the last: dispatch.gluon_launch's (the API's)
    parser.add_argument("--seqs", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--causal", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--tl", nargs="*", default=["paper:64:4:3:1"], help="tl-kernel variants (scripts/variants.py syntax)")
    parser.add_argument("--jobs", type=int, default=8, help="compiling children at once")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as CSV")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_hopper: needs a CUDA GPU", file=sys.stderr)
        return 2
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from variants import Variant

    from intfa.bench.shapes import attention_flops
    from intfa.kernels import attention_forward

    shapes = [(n, d, bool(c)) for d in args.head_dims for c in args.causal for n in args.seqs]
    # 1. Compile every specialization in parallel children, the tl kernel's too (N does not change them: both
    # sequence lengths are multiples of 16).
    first_seq = {(d, c): min(n for n, d2, c2 in shapes if (d2, c2) == (d, c)) for _, d, c in shapes}
    warm = [(v, [(first_seq[key], *key)]) for v in [*args.variants, *args.tl] for key in first_seq]
    failed = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = pool.map(lambda task: run_child(task[0], task[1], args.batch, args.heads, False), warm)
        for (variant, _), (_, error) in zip(warm, outcomes):
            if error:
                failed[str(variant)] = error
    # 2. The tl kernel and cuDNN here; each Gluon variant in its own child.
    rows = []
    for seq, head_dim, causal in shapes:
        flops = attention_flops(args.batch, args.heads, seq, seq, head_dim, causal)
        (q, k, v), _, _ = make_operands(args.batch, args.heads, seq, head_dim, "paper")
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = time_ms(functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v, is_causal=causal))
        rows.append({"seq": seq, "head_dim": head_dim, "causal": causal, "provider": "sdpa-cudnn", "ms": ms})
        for spec in args.tl:
            tl_variant = Variant.parse(spec)
            _, ops, config = make_operands(args.batch, args.heads, seq, head_dim, tl_variant.config_name)

            call = functools.partial(attention_forward, *ops, config=config, scale=head_dim ** -0.5,
                                     is_causal=causal, out_dtype=torch.float16, launch=tl_variant.launch)
            call()
            rows.append({"seq": seq, "head_dim": head_dim, "causal": causal, "provider": f"tl {spec}",
                         "ms": time_ms(call)})
        for row in rows[-1 - len(args.tl):]:
            row["tops"] = flops / row["ms"] / 1e9
    for variant in args.variants:
        if str(variant) in failed:
            continue
        child_rows, error = run_child(variant, shapes, args.batch, args.heads, True, args.tl[0] if args.tl else None)
        if error:
            failed[str(variant)] = error
        for row in child_rows:
            flops = attention_flops(args.batch, args.heads, row["seq"], row["seq"], row["head_dim"], row["causal"])
            row.update(provider=f"gluon {variant}", tops=flops / row["ms"] / 1e9)
            rows.append(row)

    cudnn = {(r["seq"], r["head_dim"], r["causal"]): r["tops"] for r in rows if r["provider"] == "sdpa-cudnn"}
    print(f"{torch.cuda.get_device_name()}, B={args.batch}, H={args.heads}, fp16 cuDNN vs INT8 kernels (TOP/s)")
    print(f"{'D':>4} {'N':>6} {'causal':>6}  {'provider':<28} {'ms':>8} {'TOP/s':>7} {'x cuDNN':>8} {'rel L2 vs tl':>13}")
    for row in sorted(rows, key=lambda r: (r["head_dim"], r["causal"], r["seq"])):
        ratio = row["tops"] / cudnn[(row["seq"], row["head_dim"], row["causal"])]
        distance = f"{row['rel_l2_vs_tl']:.1e}" if "rel_l2_vs_tl" in row else ""
        print(f"{row['head_dim']:>4} {row['seq']:>6} {int(row['causal']):>6}  {row['provider']:<28} "
              f"{row['ms']:>8.3f} {row['tops']:>7.1f} {ratio:>7.2f}x {distance:>13}")
    for name, error in failed.items():
        print(f"gluon {name}: FAILED {error}")
    if args.out:
        import csv

        fields = ["head_dim", "seq", "causal", "provider", "ms", "tops", "rel_l2_vs_tl"]
        with args.out.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
