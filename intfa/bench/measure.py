"""Measurement on the GPU: inputs, timing, memory, the copy bandwidth, and the attention and quantize runs.

Method: every provider runs on the same float16 inputs of each shape. Each is called once on every input set
before timing (compilation and autotuning stay out of the numbers), then timed by ``triton.testing.do_bench``
(CUDA events; it also flushes L2 before each call) cycling through enough input sets to exceed L2 several
times; the median is reported with the 20th/80th percentiles. Each output is compared with torch SDPA's
(default backend) on the same inputs by relative L2 (``rel_l2_vs_sdpa``): a fast wrong kernel shows.

Bandwidth: a provider's GB/s divides the bytes it must move at the least (:attr:`Provider.bytes_moved`: its
operands read once, the output written once) by its time; the device-to-device copy of a large float16 tensor,
timed in the same run, is the yardstick (``fraction_of_copy``). A copy reads and writes, so its GB/s counts
both.

Only :func:`n_input_sets`, :func:`percentile` and :func:`bytes_needed` run without a GPU; torch and Triton are
imported inside the functions that time.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics

from .providers import get_provider
from .report import add_speedups
from .shapes import Shape

__all__ = [
    "L2_BYTES_H100", "MAX_INPUT_SETS", "QUANTIZE_BLOCK_SIZE", "QUANTIZE_GRANULARITIES", "QUANTIZE_SHAPE",
    "bytes_needed", "measure_attention", "measure_copy", "measure_quantize", "n_input_sets", "percentile",
]

QUANTIZE_GRANULARITIES = ("token", "tensor", "channel", "block", "block_channel")
QUANTIZE_BLOCK_SIZE = 64
QUANTIZE_SHAPE = (4, 32, 8192, 128)  # 268 MB of fp16: far beyond L2, a Q or K of the paper's largest shapes

L2_BYTES_H100 = 50 * 2**20
MAX_INPUT_SETS = 8


def n_input_sets(set_bytes: int, l2_bytes: int) -> int:
    """Input sets to cycle through so that one cycle streams at least 3x the L2 (1 when one set already does)."""
    return max(1, min(MAX_INPUT_SETS, math.ceil(3 * l2_bytes / max(set_bytes, 1))))


def percentile(values, fraction: float) -> float:
    """Linear-interpolation percentile of a non-empty sequence (``fraction`` in [0, 1])."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("values: expected at least one timing, got none")
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _time_ms(fns, warmup_ms: float, rep_ms: float) -> tuple[float, float, float]:
    """Median, 20th and 80th percentile (ms) of one call, cycling through ``fns`` (one per input set)."""
    import triton.testing

    calls = itertools.cycle(fns)
    times = triton.testing.do_bench(lambda: next(calls)(), warmup=warmup_ms, rep=rep_ms, return_mode="all")
    return statistics.median(times), percentile(times, 0.2), percentile(times, 0.8)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _set_bytes(shape: Shape) -> int:
    """Bytes of one float16 input set: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D)."""
    return 2 * shape.batch * shape.head_dim * (shape.heads * shape.seq_q + 2 * shape.kv_heads * shape.seq_k)


def bytes_needed(shape: Shape, n_sets: int) -> int:
    """Device memory for one provider on one shape: the float16 input sets, a reference and a provider output,
    and the provider's own copies of every set (8-bit operands, float32 scratch) counted generously as one
    float16 set each."""
    out = 2 * shape.batch * shape.heads * shape.seq_q * shape.head_dim
    return 2 * n_sets * _set_bytes(shape) + 2 * out


def _inputs(shape: Shape, n_sets: int, device) -> list[tuple]:
    """``n_sets`` independent float16 draws (normal, std 1) of q, k, v for ``shape``."""
    import torch

    sets = []
    for _ in range(n_sets):
        q = torch.randn(shape.batch, shape.heads, shape.seq_q, shape.head_dim, device=device, dtype=torch.float16)
        k = torch.randn(shape.batch, shape.kv_heads, shape.seq_k, shape.head_dim, device=device, dtype=torch.float16)
        v = torch.randn_like(k)
        sets.append((q, k, v))
    return sets


def _relative_l2(out, ref) -> float:
    import torch

    diff = torch.linalg.vector_norm(out.float() - ref.float()).item()
    return diff / max(torch.linalg.vector_norm(ref.float()).item(), 1e-30)


def measure_copy(*, warmup_ms: float, rep_ms: float, shape: tuple = QUANTIZE_SHAPE) -> float:
    """GB/s of a device-to-device copy of a float16 tensor of ``shape`` (bytes read plus bytes written)."""
    import torch

    def timed_copy() -> float:
        x = torch.randn(*shape, device="cuda", dtype=torch.float16)
        destination = torch.empty_like(x)
        ms, _, _ = _time_ms([lambda: destination.copy_(x)], warmup_ms, rep_ms)
        return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9

    gbytes_per_s = timed_copy()
    torch.cuda.empty_cache()  # give the two tensors back: later shapes check the free memory
    return gbytes_per_s


def measure_attention(shapes, providers, *, gpu: str, warmup_ms: float, rep_ms: float, progress,
                      copy_gbytes_per_s: float = math.nan) -> list[dict]:
    """One row per (shape, provider): times, TOP/s, GB/s, accuracy against SDPA, or the error that stopped it.

    shapes : :class:`Shape` list; providers : registered names; progress : a tqdm bar (one update per row).
    copy_gbytes_per_s : the copy bandwidth of this run (:func:`measure_copy`), the yardstick of every row's GB/s.
    Rows of a shape that does not fit the free memory, or that a provider does not run, have ``error``
    "skipped: ..."; a provider that raises has its first line. Speed-ups are filled by :func:`add_speedups`.
    """
    import torch

    device = torch.device("cuda")
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", L2_BYTES_H100) or L2_BYTES_H100
    providers = [get_provider(name) for name in providers]
    rows = []
    for shape in shapes:
        base = {"gpu": gpu, **dataclasses.asdict(shape), "copy_gbytes_per_s": copy_gbytes_per_s}
        n_sets = n_input_sets(_set_bytes(shape), l2)
        free, _ = torch.cuda.mem_get_info()
        need = bytes_needed(shape, n_sets)
        if need > 0.9 * free:
            for provider in providers:
                rows.append(dict(base, provider=provider.name, error=f"skipped: needs {need / 1e9:.1f} GB, "
                                                                     f"{free / 1e9:.1f} GB free"))
                progress.update(1)
            continue
        inputs = _inputs(shape, n_sets, device)
        try:
            reference = torch.nn.functional.scaled_dot_product_attention(*inputs[0], is_causal=shape.causal,
                                                                         enable_gqa=shape.gqa)
        except Exception as exc:  # noqa: BLE001 - recorded in every row's comparison as NaN
            progress.write(f"{shape.label()}: no SDPA reference ({_first_line(exc)})")
            reference = None
        for provider in providers:
            progress.set_postfix_str(f"{provider.name} {shape.label()}")
            row = dict(base, provider=provider.name)
            reason = provider.skip_reason(shape)
            if reason is not None:
                row["error"] = f"skipped: {reason}"
                rows.append(row)
                progress.update(1)
                continue
            fns = outputs = None
            try:
                with provider.context():
                    fns = [provider.prepare(q, k, v, shape) for q, k, v in inputs]
                    outputs = [fn() for fn in fns]  # compile, autotune, allocate: before any timing
                    torch.cuda.synchronize()
                    row["rel_l2_vs_sdpa"] = _relative_l2(outputs[0], reference) if reference is not None else math.nan
                    outputs = None
                    ms, p20, p80 = _time_ms(fns, warmup_ms, rep_ms)
                moved = provider.bytes_moved(shape)
                row.update(ms=ms, ms_p20=p20, ms_p80=p80, tflops=shape.flops / (ms * 1e-3) / 1e12,
                           gbytes=moved / 1e9, gbytes_per_s=moved / (ms * 1e-3) / 1e9)
                row["fraction_of_copy"] = row["gbytes_per_s"] / copy_gbytes_per_s
            except torch.cuda.OutOfMemoryError as exc:
                row["error"] = f"skipped: out of memory ({_first_line(exc)[:120]})"
            except Exception as exc:  # noqa: BLE001 - a failing provider is a row, and the run goes on
                row["error"] = _first_line(exc)
                progress.write(f"{provider.name} {shape.label()}: {row['error']}")
            finally:
                fns = outputs = None  # free this provider's operands before the next one allocates
                torch.cuda.empty_cache()
            rows.append(row)
            progress.update(1)
        del inputs, reference
        torch.cuda.empty_cache()
    return add_speedups(rows)


def measure_quantize(*, gpu: str, warmup_ms: float, rep_ms: float, copy_gbytes_per_s: float | None = None
                     ) -> list[dict]:
    """intfa.quantize bandwidth per granularity against a device-to-device copy of the same fp16 tensor.

    Bytes counted are the fewest any quantizer moves: x read once, codes and float32 scales written once (a
    per-tensor scale needs the global max first; a second read of x shows as a lower fraction of copy).
    copy_gbytes_per_s : the run's copy bandwidth (measured here on x's shape when None).
    """
    import torch

    import intfa

    b, h, n, d = QUANTIZE_SHAPE
    if copy_gbytes_per_s is None:
        copy_gbytes_per_s = measure_copy(warmup_ms=warmup_ms, rep_ms=rep_ms)
    x = torch.randn(b, h, n, d, device="cuda", dtype=torch.float16)
    rows = []
    for granularity in QUANTIZE_GRANULARITIES:
        row = {"gpu": gpu, "granularity": granularity, "batch": b, "heads": h, "seq": n, "head_dim": d,
               "copy_gbytes_per_s": copy_gbytes_per_s}
        try:
            block = QUANTIZE_BLOCK_SIZE if granularity in ("block", "block_channel") else None
            codes, scales = intfa.quantize(x, granularity, block_size=block)
            moved = x.numel() * x.element_size() + codes.numel() * codes.element_size() + scales.numel() * 4
            del codes, scales
            ms, _, _ = _time_ms([lambda g=granularity, bs=block: intfa.quantize(x, g, block_size=bs)], warmup_ms,
                                rep_ms)
            gbps = moved / (ms * 1e-3) / 1e9
            row.update(ms=ms, gbytes=moved / 1e9, gbytes_per_s=gbps, fraction_of_copy=gbps / copy_gbytes_per_s)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            row["error"] = _first_line(exc)
        rows.append(row)
    return rows
