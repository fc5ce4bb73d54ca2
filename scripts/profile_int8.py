"""Run one variant of the INT8 prefill kernel once, for Nsight Compute to profile (scripts/profile_int8.sh).

    python scripts/profile_int8.py paper:128:8:3:0 --head-dim 128 --seq 16384 [--causal]
    python scripts/profile_int8.py --gluon paper:128:3:2:1:cvt --head-dim 128 --seq 16384

A tl-kernel variant is scripts/variants.py's ``config:block_m:num_warps:num_stages:tma[:cvt]``; with ``--gluon``
a Gluon Hopper kernel variant, scripts/compile_hopper_offline.py's ``config:block_m:num_stages:ws:overlap[:cvt]``.

The variant is compiled and run once before the profiled launch, so that ``ncu -k regex:_attn_fwd
--launch-skip 1 -c 1`` captures a warm launch of the attention kernel alone (not the quantization kernels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_hopper_offline import HopperVariant  # noqa: E402
from variants import Variant, run_variant  # noqa: E402


def gluon_run(variant: HopperVariant, q, k, v, *, causal: bool):
    """A no-argument callable launching the Gluon kernel variant on q, k, v quantized beforehand (as run_variant)."""
    import intfa
    from intfa.kernels.hopper import hopper_forward

    config = variant.config
    ops = intfa.quantize_operands(q, k, v, config)
    return lambda: hopper_forward(*ops, config=config, scale=q.shape[-1] ** -0.5, is_causal=causal,
                                  out_dtype=torch.float16, return_lse=False, **variant.launch)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--gluon", action="store_true", help="the variant is a Gluon kernel launch (HopperVariant)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--seq", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args(argv)
    try:  # the two syntaxes differ in their fields: parse here, with the flag known
        variant = HopperVariant.parse(args.variant) if args.gluon else Variant.parse(args.variant)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    q, k, v = (torch.randn(args.batch, args.heads, args.seq, args.head_dim, device="cuda", dtype=torch.float16)
               for _ in range(3))
    if args.gluon:
        run = gluon_run(variant, q, k, v, causal=args.causal)
    else:
        run = run_variant(variant, q, k, v, causal=args.causal)
    run()  # compile, warm
    run()  # the launch ncu profiles
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
