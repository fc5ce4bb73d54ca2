"""The project's benchmark: attention per provider, ratios measured in one run, bandwidth against a copy.

    python -m intfa.bench --suite paper                 # B=4, H=32, D=64, N 1k..16k, non-causal (as the paper)
    python -m intfa.bench --suite full                  # D 64/128, causal and not, N 1k..32k, and decode shapes
    python -m intfa.bench --suite decode                # decoding against a long cache: B, GQA, Nk 4k..128k (issue 10)
    python -m intfa.bench --suite full --providers sdpa-cudnn int8-full --out results
    python -m intfa.bench --suite decode --list         # print the shapes and exit (no GPU needed)

Each suite runs its default providers (``--providers`` names others); the names, the suites, the CSV columns
and the result paths are public contract. The decode suite runs every torch SDPA backend on the float16 cache
(``sdpa-flash``, ``sdpa-efficient``, ``sdpa-cudnn``, and ``sdpa-math`` where its scratch is small; GQA through
``enable_gqa``) and ``int8-full`` on the pre-quantized INT8 cache; each row carries ``best_sdpa`` and
``speedup_vs_best_sdpa`` (the fastest SDPA backend of that shape, same run), its GB/s and the fraction of the
device-to-device copy's GB/s measured in the same run.

Writes ``<out>/<gpu>/bench-<suite>.csv`` (one row per shape and provider; failures are rows with ``error`` set,
and the run goes on), ``quantize-<suite>.csv`` (intfa.quantize against the copy), ``bench-<suite>.json``
(provenance: :func:`intfa.provenance.provenance`, the settings, the copy bandwidth) and the figures: prefill
TOP/s in ``bench-<suite>.png``, decode latency and GB/s against Nk in ``bench-<suite>-decode.png`` (in
``bench-decode.png`` for the decode suite).

Modules, one role each:

- :mod:`.shapes`: :class:`Shape`, the suites, FLOPs and the bytes each operand format occupies (no torch).
- :mod:`.providers`: the registry, name -> :class:`Provider` (how to prepare a timed call, its bytes, its suites).
- :mod:`.measure`: inputs, timing, memory, the copy bandwidth; the attention and quantize runs (GPU).
- :mod:`.report`: speed-ups, the table, CSV/JSON, the figures (no torch).
- :mod:`.cli`: the command line.
"""

from .cli import build_parser, main, parse_providers
from .measure import (
    L2_BYTES_H100,
    MAX_INPUT_SETS,
    QUANTIZE_BLOCK_SIZE,
    QUANTIZE_GRANULARITIES,
    QUANTIZE_SHAPE,
    TIMINGS,
    FLUSHES,
    l2_flusher,
    bytes_needed,
    measure_attention,
    measure_copy,
    measure_quantize,
    n_input_sets,
    percentile,
    time_calls,
)
from .providers import PROVIDERS, Provider, default_providers, get_provider, register, sdpa_providers
from .report import (
    CSV_COLUMNS,
    DECODE_SECTIONS,
    PREFILL_SECTIONS,
    QUANTIZE_COLUMNS,
    add_speedups,
    format_quantize_table,
    format_table,
    plot_results,
    read_rows,
    replot,
    sanitize_gpu_name,
    shape_key,
    write_results,
)
from .shapes import (
    DECODE_BATCHES,
    DECODE_CACHE_LENS,
    DECODE_HEAD_DIMS,
    DECODE_HEADS,
    DECODE_KV_HEADS,
    DECODE_SEQ_K,
    DECODE_SEQ_Q,
    FULL_SEQS,
    PAPER_SEQS,
    SUITES,
    Shape,
    attention_flops,
    float_bytes,
    int8_bytes,
    suite_shapes,
)

__all__ = [
    "CSV_COLUMNS", "DECODE_BATCHES", "DECODE_CACHE_LENS", "DECODE_HEADS", "DECODE_HEAD_DIMS", "DECODE_KV_HEADS",
    "DECODE_SECTIONS", "DECODE_SEQ_K", "DECODE_SEQ_Q", "FULL_SEQS", "L2_BYTES_H100", "MAX_INPUT_SETS",
    "PAPER_SEQS", "PREFILL_SECTIONS", "PROVIDERS", "Provider", "QUANTIZE_BLOCK_SIZE", "QUANTIZE_COLUMNS",
    "QUANTIZE_GRANULARITIES", "QUANTIZE_SHAPE", "SUITES", "Shape", "TIMINGS", "FLUSHES", "add_speedups",
    "attention_flops", "build_parser", "l2_flusher",
    "bytes_needed", "default_providers", "float_bytes", "format_quantize_table", "format_table", "get_provider",
    "int8_bytes", "main", "measure_attention", "measure_copy", "measure_quantize", "n_input_sets",
    "parse_providers", "percentile", "plot_results", "read_rows", "register", "replot", "sanitize_gpu_name",
    "sdpa_providers", "shape_key", "suite_shapes", "time_calls", "write_results",
]
