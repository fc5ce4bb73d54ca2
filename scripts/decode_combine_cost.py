"""What the decode combine costs on a call's critical path (issue 10; an experiment, not a benchmark).

    python scripts/decode_combine_cost.py > combine-cost.txt

At B=1 decode shapes (Hq=32, one query, paper configuration, the API's split count, V sequence-contiguous) it
times ``attention_forward`` (``intfa.bench.measure.time_calls``, GPU timing, zeroed-L2 flush) three ways: as it
is; with the combine kernel's launch replaced by nothing (the output is then garbage: timing only); and with it
replaced by a 64-entry ``torch.zeros`` (what a combine folded into the split kernel would need per call for its
arrival counters). The first difference bounds what folding the combine could save; the second shows whether a
per-call memset would eat it. Beside them, SDPA on the fp16 cache with PyTorch's own choice of backend (not the
fastest backend, the suite's yardstick in ``python -m intfa.bench --suite decode``). Needs CUDA.
"""
from __future__ import annotations

import argparse
import sys

import torch

import intfa
from intfa.bench.measure import time_calls
from intfa.kernels import attention_forward
from intfa.kernels import decode as decode_kernels
from intfa.kernels.dispatch import decode_splits
from sim import QuantConfig

#: (kv heads, keys) at B=1, Hq=32, one query.
SHAPES = ((8, 16384), (8, 32768), (8, 131072), (32, 16384), (32, 131072))


class _NoLaunch:
    """In place of the combine kernel: no launch."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _MemsetOnly:
    """In place of the combine kernel: a per-call zeroed counter buffer, as a folded combine would need."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: torch.zeros(64, dtype=torch.int32, device="cuda")


def time_us(fn) -> float:
    return time_calls([fn], 25, 200)["ms"] * 1e3


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    if not torch.cuda.is_available():
        print("decode_combine_cost: needs a CUDA GPU", file=sys.stderr)
        return 2
    combine = decode_kernels._decode_combine
    cfg = QuantConfig.paper()
    print("B Hkv Nk D splits with_combine_us without_us memset_instead_us sdpa_us")
    for d in (128, 64):
        for hkv, nk in SHAPES:
            q = torch.randn(1, 32, 1, d, device="cuda", dtype=torch.float16)
            k = torch.randn(1, hkv, nk, d, device="cuda", dtype=torch.float16)
            v = torch.randn_like(k)
            q8, qs = intfa.quantize(q, cfg.q_granularity)
            k8, ks = intfa.quantize(k, cfg.k_granularity)
            v8, vs = intfa.quantize(v, cfg.v_quant_granularity)
            v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)  # sequence-contiguous, as the benchmark's
            splits = decode_splits(1, 32, hkv, 1, nk, cfg, q.device, head_dim=d)

            def run():
                return attention_forward(q8, k8, v8, qs, ks, vs, config=cfg, scale=d ** -0.5, kv_splits=splits)

            def sdpa():
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != 32)

            times = {"with": time_us(run), "sdpa": time_us(sdpa)}
            try:
                decode_kernels._decode_combine = _NoLaunch()
                times["without"] = time_us(run)
                decode_kernels._decode_combine = _MemsetOnly()
                times["memset"] = time_us(run)
            finally:
                decode_kernels._decode_combine = combine
            print(1, hkv, nk, d, splits, f"{times['with']:.1f} {times['without']:.1f} {times['memset']:.1f} "
                  f"{times['sdpa']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
