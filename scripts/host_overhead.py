"""Where the host's time of one eager ``intfa.attention_int8`` decode call goes, measured without a GPU.

    python scripts/host_overhead.py [--batch 4] [--seq-k 8192] [--kv-splits 4] [--calls 300]

The benchmark's ``host_ms`` column (0.35-0.55 ms per decode call on the H100's host, docs/performance.md) is more
than the decode kernels' GPU time. This splits it, on this machine's CPU, into:

1. the API's checks (``intfa.attention_int8`` with the kernels' dispatch stubbed out and the device check skipped);
2. the dispatch and the decode kernel's host code with Triton's launches turned into compile-only cache hits
   (scripts/compile_offline.py's ``offline``: Triton binds and specializes every argument, finds the compiled
   kernel, and returns before the driver call), with a cProfile of where that time goes.

What it cannot see: the driver's launch itself (``cuLaunchKernel`` through Triton's launcher, a few microseconds
each) and CUDA allocations (torch's caching allocator). The sum is a floor for the eager host time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # the compiled path's host code, not the interpreter's


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    import torch
    from compile_offline import offline

    import intfa
    import intfa.api as api
    import sim
    from intfa.kernels import attention_forward

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--seq-k", type=int, default=8192)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--kv-splits", type=int, default=4, help="> 1: the split kernel and the combine (2 launches)")
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    cfg = sim.QuantConfig()
    b, h, nk, d = args.batch, args.heads, args.seq_k, args.head_dim
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape).astype(np.float16) for shape in ((b, h, 1, d), (b, h, nk, d), (b, h, nk, d)))
    ops = sim.quantize_operands(q, k, v, cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)  # V sequence-contiguous, as the cache keeps it
    scales = [torch.from_numpy(np.ascontiguousarray(x)) for x in (ops.q_scale, ops.k_scale, ops.v_scale)]

    def per_call_us(fn) -> float:
        for _ in range(10):
            fn()
        start = time.perf_counter()
        for _ in range(args.calls):
            fn()
        return (time.perf_counter() - start) / args.calls * 1e6

    # 1. The API's checks alone.
    real_forward, real_device = api.attention_forward, api.check_device
    api.attention_forward = lambda *a, **kw: None
    api.check_device = lambda tensors: None
    try:
        # validate=False: what None means for CUDA tensors (no value checks, no host synchronisation).
        checks = per_call_us(lambda: intfa.attention_int8(*codes, *scales, config=cfg, kv_splits=args.kv_splits,
                                                          validate=False))
    finally:
        api.attention_forward, api.check_device = real_forward, real_device

    # 2. Dispatch, the decode kernel's host code and Triton's binding, launches compile-only.
    def dispatch():
        return attention_forward(*codes, *scales, config=cfg, scale=d ** -0.5, is_causal=False,
                                 out_dtype=torch.float16, kv_splits=args.kv_splits)

    with offline(90):
        dispatch()  # compiles (minutes the first time on a cold Triton cache)
        launch = per_call_us(dispatch)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.calls):
            dispatch()
        profile.disable()
    report = io.StringIO()
    pstats.Stats(profile, stream=report).sort_stats("tottime").print_stats(8)
    print(f"decode call B={b} H={h} Nq=1 Nk={nk} D={d}, kv_splits={args.kv_splits} ({1 + (args.kv_splits > 1)} "
          f"launches), host time per call on this CPU:")
    print(f"  API checks (intfa.attention_int8, dispatch stubbed):           {checks:7.1f} us")
    print(f"  dispatch + decode_forward + Triton binding (compile-only):    {launch:7.1f} us")
    print(f"  sum (a floor: driver launches and CUDA allocations not seen): {checks + launch:7.1f} us")
    print("\nwhere the dispatch's time goes (cProfile, tottime):")
    print("\n".join(report.getvalue().splitlines()[:22]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
