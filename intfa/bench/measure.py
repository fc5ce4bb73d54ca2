"""Measurement on the GPU: inputs, timing, memory, the copy bandwidth, and the attention and quantize runs.

Method: every provider runs on the same float16 inputs of each shape. Each is called once on every input set
before timing (compilation and autotuning stay out of the numbers), then timed call by call between CUDA events,
L2 flushed before each, cycling through enough input sets to exceed L2 several times; the median is reported
with the 20th/80th percentiles. By default (``--timing gpu``) the GPU spins before each call for longer than the
host needs to issue it, so the times are the GPU's, not the host's launch latency (:func:`time_calls`); the host's
time per call is the ``host_ms`` column. Each output is compared with torch SDPA's
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
    "FLUSH_BYTES", "L2_BYTES_H100", "MAX_INPUT_SETS", "QUANTIZE_BLOCK_SIZE", "QUANTIZE_GRANULARITIES", "QUANTIZE_SHAPE",
    "FLUSHES", "TIMINGS", "bytes_needed", "l2_flusher", "measure_attention", "measure_copy", "measure_quantize",
    "n_input_sets", "percentile", "time_calls",
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


#: How the attention and quantize calls are timed (``--timing``): see :func:`time_calls`.
TIMINGS = ("gpu", "eager")
#: The L2 flush of every timed call: a 256 MB buffer, zeroed or read (``--flush``: see :func:`time_calls`).
FLUSH_BYTES = 256 * 2**20
#: How the L2 is flushed before each timed call (``--flush``): see :func:`time_calls`.
FLUSHES = ("zero", "read")


def l2_flusher(flush: str = "zero"):
    """A callable that empties the L2 the way ``flush`` (one of :data:`FLUSHES`) says, :func:`time_calls` describes
    how; it holds its 256 MB buffer on the current CUDA device as long as it lives. ValueError for another name,
    before any CUDA work."""
    if flush not in FLUSHES:
        raise ValueError(f"flush: expected one of {FLUSHES}, got {flush!r}")
    import torch

    buffer = torch.zeros(FLUSH_BYTES // 4, dtype=torch.int32, device="cuda")
    return buffer.zero_ if flush == "zero" else buffer.max


def time_calls(fns, warmup_ms: float, rep_ms: float, timing: str = "gpu", flush: str = "zero") -> dict:
    """One call's time (ms: median, 20th and 80th percentiles) and its host time, cycling through ``fns``.

    Each timed call starts from a flushed L2 (below) and is bracketed by CUDA events. What the events see
    depends on ``timing``:

    - "eager": ``triton.testing.do_bench``'s method (L2 flush, events, no spin). The start event fires when the flush ends (~0.1 ms on an
      H100); if the host needs longer than that to launch the call (Python checks, Triton's launcher, several
      kernels), the GPU idles between the events and the idle time is counted: calls of a few tens of
      microseconds measure the host, not the kernel.
    - "gpu" (default): the GPU's time per call, as a CUDA graph or a serving engine's steady state sees it. After
      the flush the GPU spins (``torch.cuda._sleep``) for longer than the host needs to issue the call, so the
      call is queued before the start event fires (NVBench's "blocking kernel"). Where the host is faster than
      the flush both give the same number. A call that waits for the GPU itself (``intfa.quantize`` reads a flag
      back) cannot be queued ahead: the spin then hides nothing, and the time includes the host's wake-up after
      that wait (tens of microseconds), in either method.

    The flush, by ``flush``:

    - "zero" (default): the 256 MB buffer is zeroed, as ``triton.testing.do_bench`` (and NVBench, with an L2-sized
      buffer) do. It leaves the whole L2 full of dirty lines: the timed call's reads evict them, and their write-back
      to HBM (up to the L2's 50 MB on an H100) shares the memory bus with the call's reads. For a call that reads
      tens of megabytes (decode at B = 1) that is a fixed cost of the same order as the call itself.
    - "read": the buffer is read (a max-reduction) instead, which leaves the L2 full of clean lines of unrelated data:
      nothing of the call's operands is cached and nothing has to be written back, closer to a decode step in a
      model, where the L2 holds the weights the previous layer read.

    ``host_ms`` is the host's median time to issue one call (perf_counter around the call, no synchronisation):
    the latency floor of an eager call, reported beside the GPU time.
    Returns dict(ms, ms_p20, ms_p80, host_ms).
    """
    import time

    import torch

    if timing not in TIMINGS:
        raise ValueError(f"timing: expected one of {TIMINGS}, got {timing!r}")
    flush_l2 = l2_flusher(flush)
    calls = itertools.cycle(fns)
    next(calls)()
    torch.cuda.synchronize()

    # Host time per call, and a first estimate of the GPU time (events around 5 calls, no flush).
    host = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        t0 = time.perf_counter()
        next(calls)()
        host.append((time.perf_counter() - t0) * 1e3)
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end) / 5, 1e-3)
    host_ms = statistics.median(host)

    sleep_ms = sleep_cycles = 0
    if timing == "gpu":
        # Spin for twice the host's median time per call (plus 20 us for the start event), in clock cycles: the
        # median, so that one stalled sample (garbage collection, the scheduler) does not lengthen every call.
        sleep_ms = 2 * host_ms + 0.02
        sleep_cycles = int(sleep_ms * _cycles_per_ms())
    per_call_ms = estimate_ms + sleep_ms + 0.1  # the flush: ~0.1 ms
    n_warmup = max(1, int(warmup_ms / per_call_ms))
    n_repeat = max(10, int(rep_ms / per_call_ms))
    for _ in range(n_warmup):
        next(calls)()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    for i in range(n_repeat):
        fn = next(calls)
        flush_l2()
        if sleep_cycles:
            torch.cuda._sleep(sleep_cycles)
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    times = [s.elapsed_time(e) for s, e in zip(starts, ends)]
    del flush_l2  # gives its 256 MB back
    return dict(ms=statistics.median(times), ms_p20=percentile(times, 0.2), ms_p80=percentile(times, 0.8),
                host_ms=host_ms)


_CYCLES_PER_MS: list[float] = []


def _cycles_per_ms() -> float:
    """GPU clock cycles per millisecond, as ``torch.cuda._sleep`` counts them (measured once per process)."""
    import torch

    if not _CYCLES_PER_MS:
        cycles = 2_000_000
        torch.cuda._sleep(cycles)  # warm up
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        torch.cuda.synchronize()
        _CYCLES_PER_MS.append(cycles / max(start.elapsed_time(end), 1e-3))
    return _CYCLES_PER_MS[0]


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


def measure_copy(*, warmup_ms: float, rep_ms: float, shape: tuple = QUANTIZE_SHAPE, timing: str = "gpu",
                 flush: str = "zero") -> float:
    """GB/s of a device-to-device copy of a float16 tensor of ``shape`` (bytes read plus bytes written)."""
    import torch

    def timed_copy() -> float:
        x = torch.randn(*shape, device="cuda", dtype=torch.float16)
        destination = torch.empty_like(x)
        ms = time_calls([lambda: destination.copy_(x)], warmup_ms, rep_ms, timing, flush)["ms"]
        return 2 * x.numel() * x.element_size() / (ms * 1e-3) / 1e9

    gbytes_per_s = timed_copy()
    torch.cuda.empty_cache()  # give the two tensors back: later shapes check the free memory
    return gbytes_per_s


def measure_attention(shapes, providers, *, gpu: str, warmup_ms: float, rep_ms: float, progress,
                      copy_gbytes_per_s: float = math.nan, timing: str = "gpu", flush: str = "zero") -> list[dict]:
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
                    times = time_calls(fns, warmup_ms, rep_ms, timing, flush)
                ms = times["ms"]
                moved = provider.bytes_moved(shape)
                row.update(times, timing=timing, flush=flush, tflops=shape.flops / (ms * 1e-3) / 1e12,
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


def measure_quantize(*, gpu: str, warmup_ms: float, rep_ms: float, copy_gbytes_per_s: float | None = None,
                     timing: str = "gpu", flush: str = "zero") -> list[dict]:
    """intfa.quantize bandwidth per granularity against a device-to-device copy of the same fp16 tensor.

    Bytes counted are the fewest any quantizer moves: x read once, codes and float32 scales written once (a
    per-tensor scale needs the global max first; a second read of x shows as a lower fraction of copy).
    copy_gbytes_per_s : the run's copy bandwidth (measured here on x's shape when None).
    """
    import torch

    import intfa

    b, h, n, d = QUANTIZE_SHAPE
    if copy_gbytes_per_s is None:
        copy_gbytes_per_s = measure_copy(warmup_ms=warmup_ms, rep_ms=rep_ms, timing=timing, flush=flush)
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
            ms = time_calls([lambda g=granularity, bs=block: intfa.quantize(x, g, block_size=bs)], warmup_ms, rep_ms,
                          timing, flush)["ms"]
            gbps = moved / (ms * 1e-3) / 1e9
            row.update(ms=ms, gbytes=moved / 1e9, gbytes_per_s=gbps, fraction_of_copy=gbps / copy_gbytes_per_s)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            row["error"] = _first_line(exc)
        rows.append(row)
    return rows
