"""Run one variant of the INT8 prefill kernel once, for Nsight Compute to profile (scripts/profile_int8.sh).

    python scripts/profile_int8.py paper:128:8:3:0 --head-dim 128 --seq 16384 [--causal]

The variant is compiled and run once before the profiled launch, so that ``ncu -k regex:_attn_fwd
--launch-skip 1 -c 1`` captures a warm launch of the attention kernel alone (not the quantization kernels).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variants import Variant, run_variant  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", type=Variant.parse)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--seq", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--causal", action="store_true")
    args = parser.parse_args(argv)
    q, k, v = (torch.randn(args.batch, args.heads, args.seq, args.head_dim, device="cuda", dtype=torch.float16)
               for _ in range(3))
    run = run_variant(args.variant, q, k, v, causal=args.causal)
    run()  # compile, warm
    run()  # the launch ncu profiles
    torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
