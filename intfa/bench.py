"""The project's benchmark: attention TOP/s per provider, ratios measured in one run, and quantization bandwidth.

    python -m intfa.bench --suite paper                 # B=4, H=32, D=64, N 1k..16k, non-causal (as the paper)
    python -m intfa.bench --suite full                  # D 64/128, causal and not, N 1k..32k, and decode shapes
    python -m intfa.bench --suite full --providers sdpa-cudnn int8-full --out results
    python -m intfa.bench --suite full --list           # print the shapes and exit (no GPU needed)

Providers (names are public contract):

- ``sdpa-flash``, ``sdpa-cudnn``: torch SDPA restricted to one backend with ``torch.nn.attention.sdpa_kernel``.
- ``triton-fp16``: :func:`intfa.kernels.baselines.flash_attention_fp16`, the project's own FP16 kernel.
- ``triton-fp8``: :func:`intfa.kernels.baselines.flash_attention_fp8` on operands cast to e4m3 beforehand
  (V sequence-contiguous): attention alone is timed.
- ``int8-half``: :func:`intfa.scaled_dot_product_attention` with ``QuantConfig.half_int8()`` (quantization of
  Q and K included, as a user calls it).
- ``int8-full``: :func:`intfa.attention_int8` on operands quantized beforehand with the paper's configuration,
  V codes stored sequence-contiguous (an INT8 KV cache kept in the layout Hopper's 8-bit wgmma wants).
- ``int8-full-e2e``: :func:`intfa.scaled_dot_product_attention` with the paper's configuration: fp16 in,
  quantization plus attention.
- ``int8-rec``, ``int8-rec-e2e``: the same two with ``QuantConfig.recommended()`` (issue #6; for the
  pre-quantized one, K is smoothed before it is quantized, as the API does).

Method: every provider runs on the same fp16 inputs of each shape. Each is called once on every input set
before timing (compilation and autotuning stay out of the numbers), then timed by ``triton.testing.do_bench``
(CUDA events; it also flushes L2 before each call) cycling through enough input sets to exceed L2 several
times; the median is reported with the 20th/80th percentiles. FLOPs are 4 * B * H * Nq * Nk * D (two matrix
products of 2 * Nq * Nk * D each per head), halved for causal; TOP/s counts the same operations for every
provider, so that ratios of TOP/s are ratios of speed. Each output is also compared with torch SDPA's (default
backend) on the same inputs by relative L2 (``rel_l2_vs_sdpa``): a fast wrong kernel shows.

Writes ``<out>/<gpu>/bench-<suite>.csv`` (one row per shape and provider; failures are rows with ``error``
set, and the run goes on), ``quantize-<suite>.csv`` (intfa.quantize against a device-to-device copy measured in
the same run), ``bench-<suite>.json`` (provenance) and ``bench-<suite>.png`` (+ ``-decode.png``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROVIDERS = ("sdpa-flash", "sdpa-cudnn", "triton-fp16", "triton-fp8", "int8-half", "int8-full", "int8-full-e2e",
             "int8-rec", "int8-rec-e2e")
SUITES = ("paper", "full")
CSV_COLUMNS = (
    "gpu", "provider", "batch", "heads", "seq_q", "seq_k", "head_dim", "causal", "ms", "ms_p20", "ms_p80",
    "tflops", "speedup_vs_cudnn", "speedup_vs_flash", "rel_l2_vs_sdpa", "error",
)
QUANTIZE_COLUMNS = (
    "gpu", "granularity", "batch", "heads", "seq", "head_dim", "ms", "gbytes", "gbytes_per_s",
    "copy_gbytes_per_s", "fraction_of_copy", "error",
)
QUANTIZE_GRANULARITIES = ("token", "tensor", "channel", "block", "block_channel")
QUANTIZE_BLOCK_SIZE = 64
QUANTIZE_SHAPE = (4, 32, 8192, 128)  # 268 MB of fp16: far beyond L2, a Q or K of the paper's largest shapes

L2_BYTES_H100 = 50 * 2**20
MAX_INPUT_SETS = 8


# --- shapes and FLOPs ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shape:
    """One attention call: q (batch, heads, seq_q, head_dim), k and v (batch, heads, seq_k, head_dim)."""

    batch: int
    heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    causal: bool

    @property
    def flops(self) -> float:
        return attention_flops(self.batch, self.heads, self.seq_q, self.seq_k, self.head_dim, self.causal)

    @property
    def decode(self) -> bool:
        return self.seq_q < self.seq_k

    def label(self) -> str:
        mask = "causal" if self.causal else "full"
        return f"B{self.batch} H{self.heads} Nq{self.seq_q} Nk{self.seq_k} D{self.head_dim} {mask}"


def attention_flops(batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int, causal: bool) -> float:
    """Operations of the attention forward: S = Q K^T and O = P V, 2 * Nq * Nk * D each per (batch, head).

    Causal attention counts half (the convention of FlashAttention's and Triton's benchmarks), whatever the
    exact fraction of the mask (slightly over half when Nq == Nk).
    """
    for name, value in (("batch", batch), ("heads", heads), ("seq_q", seq_q), ("seq_k", seq_k),
                        ("head_dim", head_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    flops = 4.0 * batch * heads * seq_q * seq_k * head_dim
    return flops / 2 if causal else flops


PAPER_SEQS = (1024, 2048, 4096, 8192, 16384)
FULL_SEQS = (1024, 2048, 4096, 8192, 16384, 32768)
DECODE_SEQ_Q = (1, 4, 16)
DECODE_SEQ_K = (8192, 32768)


def suite_shapes(suite: str) -> list[Shape]:
    """The shapes of a suite, in the order they are measured.

    paper: B=4, H=32, D=64, N = 1k..16k, non-causal (the paper's figure).
    full:  B=4, H=32, D in (64, 128), causal and not, N = 1k..32k; then decode-shaped calls, Nq in (1, 4, 16)
           against Nk in (8k, 32k), non-causal only: torch's causal mask is top-left aligned, so with Nq < Nk
           it would let query 0 see key 0 alone, which is no decoding step.
    """
    if suite == "paper":
        return [Shape(4, 32, n, n, 64, False) for n in PAPER_SEQS]
    if suite == "full":
        prefill = [Shape(4, 32, n, n, d, c) for d in (64, 128) for c in (False, True) for n in FULL_SEQS]
        decode = [Shape(4, 32, nq, nk, d, False) for d in (64, 128) for nk in DECODE_SEQ_K for nq in DECODE_SEQ_Q]
        return prefill + decode
    raise ValueError(f"suite: expected one of {SUITES}, got {suite!r}")


# --- naming and provenance ----------------------------------------------------------------------------------------


def sanitize_gpu_name(name: str) -> str:
    """A filesystem-safe GPU name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    safe = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return safe or "unknown-gpu"


def _command_output(args) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def provenance(suite: str, argv: list[str], settings: dict) -> dict:
    """Where the numbers came from: GPU, driver, CUDA, library versions, date, command line, git commit."""
    import torch
    import triton

    repo = Path(__file__).resolve().parents[1]
    props = torch.cuda.get_device_properties(0) if torch.cuda.is_available() else None
    dirty = _command_output(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {
        "suite": suite,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([sys.executable, "-m", "intfa.bench", *argv]),
        "git_commit": _command_output(["git", "-C", str(repo), "rev-parse", "HEAD"]),
        "git_dirty": bool(dirty),
        "gpu": torch.cuda.get_device_name(0) if props else None,
        "gpu_multiprocessors": props.multi_processor_count if props else None,
        "gpu_memory_bytes": props.total_memory if props else None,
        "gpu_l2_bytes": getattr(props, "L2_cache_size", None) if props else None,
        "driver": _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"]),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "settings": settings,
    }


# --- results: speed-ups, table, files -----------------------------------------------------------------------------


def shape_key(row: dict) -> tuple:
    return (row["batch"], row["heads"], row["seq_q"], row["seq_k"], row["head_dim"], bool(row["causal"]))


def _measured(row: dict | None) -> bool:
    return row is not None and not row.get("error") and _is_number(row.get("ms"))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def add_speedups(rows: list[dict]) -> list[dict]:
    """Fill speedup_vs_cudnn and speedup_vs_flash: the SDPA backend's time over the provider's, same shape, same run.

    NaN where either side has no measurement. Modifies and returns ``rows``.
    """
    by_shape: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        by_shape.setdefault(shape_key(row), {})[row["provider"]] = row
    for row in rows:
        same_shape = by_shape[shape_key(row)]
        for column, reference in (("speedup_vs_cudnn", "sdpa-cudnn"), ("speedup_vs_flash", "sdpa-flash")):
            ref = same_shape.get(reference)
            row[column] = ref["ms"] / row["ms"] if _measured(row) and _measured(ref) else math.nan
    return rows


def _cell(row: dict | None, column: str, fmt: str) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return "skip" if str(row["error"]).startswith("skipped") else "err"
    value = row.get(column)
    return fmt.format(value) if _is_number(value) else "-"


def format_table(rows: list[dict], providers=None) -> str:
    """Three aligned sections, one line per shape: TOP/s, speed-up over sdpa-cudnn, speed-up over sdpa-flash.

    Cells read "err" for a provider that failed, "skip" for one skipped (memory), "-" for nothing measured.
    """
    if providers is None:
        providers = list(dict.fromkeys(row["provider"] for row in rows))
    shapes: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        shapes.setdefault(shape_key(row), {})[row["provider"]] = row
    head = ["B", "H", "Nq", "Nk", "D", "causal"]
    widths = [2, 3, 6, 6, 4, 6] + [max(len(p), 7) for p in providers]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    out = []
    for title, column, fmt in (("TOP/s (TFLOP/s for fp16)", "tflops", "{:.1f}"),
                               ("speed-up over sdpa-cudnn (same run)", "speedup_vs_cudnn", "{:.2f}x"),
                               ("speed-up over sdpa-flash (same run)", "speedup_vs_flash", "{:.2f}x")):
        out += ["", title, line(head + list(providers)), line(["-" * w for w in widths])]
        for (b, h, nq, nk, d, causal), by_provider in shapes.items():
            cells = [b, h, nq, nk, d, "yes" if causal else "no"]
            out.append(line(cells + [_cell(by_provider.get(p), column, fmt) for p in providers]))
    return "\n".join(out[1:])


def format_quantize_table(rows: list[dict]) -> str:
    header = f"{'granularity':>14}  {'ms':>8}  {'GB/s':>7}  {'copy GB/s':>9}  {'of copy':>7}"
    out = ["intfa.quantize vs device-to-device copy (bytes read + written; issue 4 target: >= 80% of copy)", header]
    for row in rows:
        if row.get("error"):
            out.append(f"{row['granularity']:>14}  error: {row['error']}")
        else:
            out.append(f"{row['granularity']:>14}  {row['ms']:8.3f}  {row['gbytes_per_s']:7.0f}  "
                       f"{row['copy_gbytes_per_s']:9.0f}  {row['fraction_of_copy']:7.0%}")
    return "\n".join(out)


def write_results(rows: list[dict], quantize_rows: list[dict], meta: dict, directory: Path, suite: str) -> dict:
    """Write the CSVs and the provenance JSON; returns their paths by kind. ``directory`` is <out>/<gpu>."""
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    paths = {"csv": directory / f"bench-{suite}.csv", "json": directory / f"bench-{suite}.json"}
    pd.DataFrame(rows, columns=list(CSV_COLUMNS)).to_csv(paths["csv"], index=False)
    if quantize_rows:
        paths["quantize_csv"] = directory / f"quantize-{suite}.csv"
        pd.DataFrame(quantize_rows, columns=list(QUANTIZE_COLUMNS)).to_csv(paths["quantize_csv"], index=False)
    paths["json"].write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return paths


def plot_results(rows: list[dict], directory: Path, suite: str, gpu: str) -> list[Path]:
    """TOP/s against sequence length per provider, faceted by head_dim (columns) and causal (rows).

    Prefill shapes (Nq == Nk) go to bench-<suite>.png; decode shapes, if any, to bench-<suite>-decode.png
    (x: Nk, line style: Nq). Returns the paths written.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame([r for r in rows if _measured(r)], columns=list(CSV_COLUMNS))
    frame["tflops"] = frame["tflops"].astype(float)
    frame["causal"] = frame["causal"].map({True: "causal", False: "non-causal"})
    written = []
    for kind, part in (("", frame[frame.seq_q == frame.seq_k]), ("-decode", frame[frame.seq_q < frame.seq_k])):
        if part.empty:
            continue
        grid = sns.relplot(
            data=part, x="seq_k", y="tflops", hue="provider", kind="line", marker="o",
            hue_order=[p for p in PROVIDERS if p in set(part.provider)],
            col="head_dim", row="causal" if kind == "" else None, style="seq_q" if kind else None,
            facet_kws={"sharey": False}, height=3.6, aspect=1.3,
        )
        grid.set(xlabel="sequence length Nk (tokens)", ylabel="TOP/s (4 B H Nq Nk D / time, halved if causal)")
        ticks = sorted(part.seq_k.unique())
        for ax in grid.axes.flat:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xticks(ticks, [f"{n // 1024}k" if n >= 1024 else str(n) for n in ticks])
        what = "decode-shaped attention (Nq << Nk)" if kind else "attention forward"
        grid.figure.suptitle(f"{what} on {gpu}: TOP/s by provider ({suite} suite, B=4, H=32)", y=1.02)
        path = directory / f"bench-{suite}{kind}.png"
        grid.figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(grid.figure)
        written.append(path)
    return written


# --- measurement (CUDA only) --------------------------------------------------------------------------------------


def _n_input_sets(set_bytes: int, l2_bytes: int) -> int:
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


class _Inputs:
    """fp16 q, k, v for one shape: ``sets`` independent draws (normal, std 1), allocated once per shape."""

    def __init__(self, shape: Shape, n_sets: int, device):
        import torch

        self.sets = []
        for _ in range(n_sets):
            q = torch.randn(shape.batch, shape.heads, shape.seq_q, shape.head_dim, device=device, dtype=torch.float16)
            k = torch.randn(shape.batch, shape.heads, shape.seq_k, shape.head_dim, device=device, dtype=torch.float16)
            v = torch.randn_like(k)
            self.sets.append((q, k, v))


def _prepare(provider: str, q, k, v, causal: bool):
    """A zero-argument callable running ``provider`` on one input set (anything precomputed is done here)."""
    import torch.nn.functional as F

    if provider in ("sdpa-flash", "sdpa-cudnn"):
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    if provider == "triton-fp16":
        from intfa.kernels.baselines import flash_attention_fp16

        return lambda: flash_attention_fp16(q, k, v, is_causal=causal)
    if provider == "triton-fp8":
        from intfa.kernels.baselines import flash_attention_fp8, fp8_operands

        q8, k8, v8 = fp8_operands(q, k, v)
        return lambda: flash_attention_fp8(q8, k8, v8, is_causal=causal)

    import intfa

    if provider == "int8-half":
        config = intfa.QuantConfig.half_int8()
        return lambda: intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, config=config)
    if provider in ("int8-full-e2e", "int8-rec-e2e"):
        config = intfa.QuantConfig.paper() if provider == "int8-full-e2e" else intfa.QuantConfig.recommended()
        return lambda: intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, config=config)
    if provider in ("int8-full", "int8-rec"):
        config = intfa.QuantConfig.paper() if provider == "int8-full" else intfa.QuantConfig.recommended()
        if config.k_smoothing:
            k = intfa.smooth_keys(k)

        def block(granularity, size):
            return size if granularity in ("block", "block_channel") else None

        q_codes, q_scale = intfa.quantize(q, config.q_granularity, block_size=block(config.q_granularity,
                                                                                     config.block_m))
        k_codes, k_scale = intfa.quantize(k, config.k_granularity, block_size=block(config.k_granularity,
                                                                                     config.block_n))
        v_gran = config.v_quant_granularity
        v_codes, v_scale = intfa.quantize(v, v_gran, block_size=block(v_gran, config.block_n))
        # The KV cache keeps V sequence-contiguous: the K-major operand Hopper's 8-bit wgmma reads for P @ V.
        v_codes = v_codes.transpose(-1, -2).contiguous().transpose(-1, -2)
        return lambda: intfa.attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale,
                                            is_causal=causal, config=config)
    raise ValueError(f"provider: expected one of {PROVIDERS}, got {provider!r}")


def _backend_context(provider: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if provider == "sdpa-flash":
        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)
    if provider == "sdpa-cudnn":
        return sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
    return contextlib.nullcontext()


def _relative_l2(out, ref) -> float:
    import torch

    diff = torch.linalg.vector_norm(out.float() - ref.float()).item()
    return diff / max(torch.linalg.vector_norm(ref.float()).item(), 1e-30)


def _bytes_needed(shape: Shape, n_sets: int) -> int:
    """Device memory for one provider on one shape: the fp16 input sets, a reference and a provider output, and
    the provider's own copies (8-bit operands, fp32 scratch) counted generously as one more fp16 set."""
    qo = shape.batch * shape.heads * shape.seq_q * shape.head_dim * 2
    kv = shape.batch * shape.heads * shape.seq_k * shape.head_dim * 2
    return n_sets * (qo + 2 * kv) + 2 * qo + (qo + 2 * kv) + 2 * qo


def measure_attention(shapes, providers, *, gpu: str, warmup_ms: float, rep_ms: float, progress) -> list[dict]:
    import torch

    device = torch.device("cuda")
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", L2_BYTES_H100) or L2_BYTES_H100
    rows = []
    for shape in shapes:
        base = {"gpu": gpu, **dataclasses.asdict(shape)}
        set_bytes = 2 * (shape.batch * shape.heads * (shape.seq_q + 2 * shape.seq_k) * shape.head_dim)
        n_sets = _n_input_sets(set_bytes, l2)
        free, _ = torch.cuda.mem_get_info()
        need = _bytes_needed(shape, n_sets)
        if need > 0.9 * free:
            for provider in providers:
                rows.append(dict(base, provider=provider, error=f"skipped: needs {need / 1e9:.1f} GB, "
                                                                f"{free / 1e9:.1f} GB free"))
                progress.update(1)
            continue
        inputs = _Inputs(shape, n_sets, device)
        try:
            reference = torch.nn.functional.scaled_dot_product_attention(*inputs.sets[0], is_causal=shape.causal)
        except Exception as exc:  # noqa: BLE001 - recorded in every row's comparison as NaN
            progress.write(f"{shape.label()}: no SDPA reference ({_first_line(exc)})")
            reference = None
        for provider in providers:
            progress.set_postfix_str(f"{provider} {shape.label()}")
            row = dict(base, provider=provider)
            try:
                with _backend_context(provider):
                    fns = [_prepare(provider, q, k, v, shape.causal) for q, k, v in inputs.sets]
                    outputs = [fn() for fn in fns]  # compile, autotune, allocate: before any timing
                    torch.cuda.synchronize()
                    row["rel_l2_vs_sdpa"] = _relative_l2(outputs[0], reference) if reference is not None else math.nan
                    outputs = None
                    ms, p20, p80 = _time_ms(fns, warmup_ms, rep_ms)
                row.update(ms=ms, ms_p20=p20, ms_p80=p80, tflops=shape.flops / (ms * 1e-3) / 1e12)
            except torch.cuda.OutOfMemoryError as exc:
                row["error"] = f"skipped: out of memory ({_first_line(exc)[:120]})"
            except Exception as exc:  # noqa: BLE001 - a failing provider is a row, and the run goes on
                row["error"] = _first_line(exc)
                progress.write(f"{provider} {shape.label()}: {row['error']}")
            finally:
                fns = outputs = None  # free this provider's operands before the next one allocates
                torch.cuda.empty_cache()
            rows.append(row)
            progress.update(1)
        del inputs, reference
        torch.cuda.empty_cache()
    return add_speedups(rows)


def measure_quantize(*, gpu: str, warmup_ms: float, rep_ms: float) -> list[dict]:
    """intfa.quantize bandwidth per granularity against a device-to-device copy of the same fp16 tensor.

    Bytes counted are the fewest any quantizer moves: x read once, codes and float32 scales written once (a
    per-tensor scale needs the global max first; a second read of x shows as a lower fraction of copy).
    """
    import torch

    b, h, n, d = QUANTIZE_SHAPE
    x = torch.randn(b, h, n, d, device="cuda", dtype=torch.float16)
    copy_dst = torch.empty_like(x)
    copy_ms, _, _ = _time_ms([lambda: copy_dst.copy_(x)], warmup_ms, rep_ms)
    copy_gbps = 2 * x.numel() * x.element_size() / (copy_ms * 1e-3) / 1e9
    rows = []
    for granularity in QUANTIZE_GRANULARITIES:
        row = {"gpu": gpu, "granularity": granularity, "batch": b, "heads": h, "seq": n, "head_dim": d,
               "copy_gbytes_per_s": copy_gbps}
        try:
            import intfa

            block = QUANTIZE_BLOCK_SIZE if granularity in ("block", "block_channel") else None
            codes, scales = intfa.quantize(x, granularity, block_size=block)
            moved = x.numel() * x.element_size() + codes.numel() * codes.element_size() + scales.numel() * 4
            del codes, scales
            ms, _, _ = _time_ms([lambda g=granularity, bs=block: intfa.quantize(x, g, block_size=bs)], warmup_ms,
                                rep_ms)
            gbps = moved / (ms * 1e-3) / 1e9
            row.update(ms=ms, gbytes=moved / 1e9, gbytes_per_s=gbps, fraction_of_copy=gbps / copy_gbps)
        except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
            row["error"] = _first_line(exc)
        rows.append(row)
    return rows


# --- command line -------------------------------------------------------------------------------------------------


def _parse_providers(values) -> list[str]:
    names = [name for value in values for name in value.replace(",", " ").split()]
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown provider(s) {unknown}; expected names from {list(PROVIDERS)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m intfa.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=SUITES, default="paper")
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), metavar="NAME",
                        help=f"any of {', '.join(PROVIDERS)} (space- or comma-separated; default: all)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results)")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up time per measurement")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions per measurement")
    parser.add_argument("--no-quantize", action="store_true", help="skip the quantization bandwidth measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--list", action="store_true", help="print the suite's shapes and exit (no GPU needed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        providers = _parse_providers(args.providers)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--providers: {exc}")
    shapes = suite_shapes(args.suite)
    if args.list:
        for shape in shapes:
            print(f"{shape.label():<40} {shape.flops / 1e12:9.3f} TFLOP")
        return 0

    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        print("intfa.bench: TRITON_INTERPRET=1 is set; the benchmark times compiled kernels. Unset it.", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("intfa.bench: no CUDA GPU is available; the benchmark measures GPU kernels and needs one "
              "(use --list to see the shapes).", file=sys.stderr)
        return 2
    from tqdm.auto import tqdm

    gpu_name = torch.cuda.get_device_name(0)
    gpu = sanitize_gpu_name(gpu_name)
    directory = args.out / gpu
    settings = {"providers": providers, "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms,
                "shapes": [dataclasses.asdict(s) for s in shapes]}
    meta = provenance(args.suite, argv, settings)
    started = time.perf_counter()
    torch.manual_seed(0)
    with tqdm(total=len(shapes) * len(providers), desc=f"bench {args.suite}", unit="run") as progress:
        rows = measure_attention(shapes, providers, gpu=gpu, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                                 progress=progress)
    quantize_rows = [] if args.no_quantize else measure_quantize(gpu=gpu, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms)
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    paths = write_results(rows, quantize_rows, meta, directory, args.suite)
    if not args.no_plot:
        plot_results(rows, directory, args.suite, gpu_name)
    print(f"\n{gpu_name}, suite {args.suite}, {meta['elapsed_s']} s\n")
    print(format_table(rows, providers))
    if quantize_rows:
        print("\n" + format_quantize_table(quantize_rows))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}" + ("" if args.no_plot else " and the PNG(s)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
