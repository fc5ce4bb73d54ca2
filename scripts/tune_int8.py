"""Sweep the INT8 attention kernel's launch parameters on the GPU (issue #4), one line per variant.

    python scripts/tune_int8.py [--seq 16384] [--head-dims 64 128] [--configs paper recommended] [--out DIR]

Times ``intfa.kernels.attention_forward`` alone (operands quantized beforehand, V codes
sequence-contiguous) for tile heights, num_warps, num_stages and FMA contraction, against SDPA's cuDNN and
flash backends measured in the same run. The key tile width is the config's ``block_n`` (it changes the
result); the tile height may differ from ``block_m`` when Q is not block-scaled (rows are independent).
Writes tune.csv under --out. Needs CUDA.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import re
import sys
import time
from pathlib import Path

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

import intfa
from intfa.kernels import Launch, attention_forward
from sim import QuantConfig


#: Single-option departures from the paper's configuration, to see what each of the recommended
#: configuration's options costs.
ABLATIONS = {
    "paper+vblock": dict(v_granularity="block"),
    "paper+s255": dict(p_quant="signed255"),
    "paper+tilemax": dict(p_scale="tile_max"),
    "paper+qnorm": dict(normalizer="quantized"),
}


def named_config(name: str) -> QuantConfig:
    if name in ABLATIONS:
        return QuantConfig.paper().replace(**ABLATIONS[name])
    return getattr(QuantConfig, name)()


def kernel_resources() -> str:
    """Registers and spills of every compiled variant of the attention kernel so far."""
    from intfa.kernels.prefill import _attn_fwd

    lines = []
    for device_cache in getattr(_attn_fwd, "device_caches", {}).values():
        for key, kernel in device_cache[0].items():
            lines.append(f"regs {getattr(kernel, 'n_regs', '?')} spills {getattr(kernel, 'n_spills', '?')} "
                         f"shared {getattr(kernel.metadata, 'shared', '?')} warps {kernel.metadata.num_warps}")
    return "\n".join(lines)


def flops(b, h, n, d, causal):
    return 4 * b * h * n * n * d / (2 if causal else 1)


def bench_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def operands(q, k, v, cfg):
    return tuple(intfa.quantize_operands(q, k, v, cfg))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--seq", type=int, nargs="+", default=[16384])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--causal", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=["paper", "recommended"])
    parser.add_argument("--block-n", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--block-m", type=int, nargs="+", default=[128])
    parser.add_argument("--warps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--fusion", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=None, help="default results/<gpu>/tune")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_int8: needs a CUDA GPU", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    if args.out is None:
        args.out = Path("results") / re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") / "tune"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.time()
    for n, d, causal in itertools.product(args.seq, args.head_dims, args.causal):
        b, h = args.batch, args.heads
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.float16) for _ in range(3))
        fl = flops(b, h, n, d, bool(causal))
        base = dict(gpu=gpu, batch=b, heads=h, seq=n, head_dim=d, causal=causal)
        for name, backend in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel(backend):
                ms = bench_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)))
            rows.append(dict(base, variant=name, ms=ms, tops=fl / ms / 1e9))
            print(f"N={n} D={d} causal={causal} {name:40s} {ms:8.3f} ms {fl / ms / 1e9:7.1f} TOP/s", flush=True)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=bool(causal)).float()
        for cname, bn in itertools.product(args.configs, args.block_n):
            cfg = named_config(cname).replace(block_n=bn)
            ops = operands(q, k, v, cfg)
            for bm, warps, stages, fusion in itertools.product(args.block_m, args.warps, args.stages, args.fusion):
                variant = f"{cname} bm{bm} bn{bn} w{warps} s{stages} fma{fusion}"
                try:
                    def run():
                        # token-granular Q: the tile height block_m does not change the result
                        return attention_forward(*ops, config=cfg, scale=d ** -0.5, is_causal=bool(causal),
                                                 launch=Launch(block_m=bm, num_warps=warps, num_stages=stages),
                                                 fp_fusion=bool(fusion))
                    out = run()
                    err = (torch.linalg.vector_norm(out.float() - ref) / torch.linalg.vector_norm(ref)).item()
                    ms = bench_ms(run)
                    rows.append(dict(base, variant=variant, ms=ms, tops=fl / ms / 1e9, rel_l2_vs_sdpa=err))
                    print(f"N={n} D={d} causal={causal} {variant:40s} {ms:8.3f} ms {fl / ms / 1e9:7.1f} TOP/s "
                          f"err {err:.2e}", flush=True)
                except Exception as exc:  # noqa: BLE001 - a variant that does not compile is a row
                    msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                    rows.append(dict(base, variant=variant, error=msg))
                    print(f"N={n} D={d} causal={causal} {variant:40s} FAILED {msg}", flush=True)
            del ops
        del q, k, v, ref
        torch.cuda.empty_cache()
    try:
        print(kernel_resources())
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        print(f"kernel resources unavailable: {exc}")
    columns = ["gpu", "batch", "heads", "seq", "head_dim", "causal", "variant", "ms", "tops", "rel_l2_vs_sdpa", "error"]
    with open(args.out / "tune.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"tune_int8: {len(rows)} rows in {time.time() - t0:.0f} s -> {args.out / 'tune.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
