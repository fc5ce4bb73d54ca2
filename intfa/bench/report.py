"""What a benchmark run reports: speed-ups within the run, the printed table, the CSV/JSON files, the figures.

No GPU and no torch here: the tests feed it made-up rows.

CSV columns (public contract; new ones are appended): ``heads`` is the query heads (Hq), ``kv_heads`` the key
and value heads (Hkv); ``ms`` the median time with ``ms_p20``/``ms_p80``; ``tflops`` counts 4 B Hq Nq Nk D
operations (halved if causal) for every provider, so that ratios of TOP/s are ratios of speed; ``gbytes`` the
bytes the provider must move at the least (its operands read once, its output written once: an INT8 cache's
codes and scales, float16 for the others) and ``gbytes_per_s`` those over ``ms``; ``copy_gbytes_per_s`` the
device-to-device copy measured in the same run and ``fraction_of_copy`` the ratio; ``speedup_vs_<backend>``
the SDPA backend's time over the provider's on the same shape, and ``best_sdpa`` / ``speedup_vs_best_sdpa`` the
same against the fastest SDPA backend that ran that shape; ``timing`` how ``ms`` was taken ("gpu": the GPU's time,
the host's launch latency hidden; "eager": ``triton.testing.do_bench``, which counts the host's latency where it
exceeds the L2 flush) and ``host_ms`` the host's median time to issue one call; ``flush`` how the L2 was emptied
before each call ("zero": a 256 MB buffer zeroed, leaving the L2 dirty; "read": read, leaving it clean;
:func:`intfa.bench.time_calls`); ``error`` "skipped: ..." or the first line of the
exception, the other measurements then empty.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .providers import PROVIDERS, sdpa_providers
from .shapes import SUITES, suite_shapes

__all__ = [
    "CSV_COLUMNS", "DECODE_SECTIONS", "PREFILL_SECTIONS", "QUANTIZE_COLUMNS", "add_speedups", "format_quantize_table",
    "format_table", "plot_results", "read_rows", "replot", "sanitize_gpu_name", "shape_key", "write_results",
]

CSV_COLUMNS = (
    "gpu", "provider", "batch", "heads", "seq_q", "seq_k", "head_dim", "causal", "ms", "ms_p20", "ms_p80",
    "tflops", "speedup_vs_cudnn", "speedup_vs_flash", "rel_l2_vs_sdpa", "error",
    # added with the decode suite (issue 10)
    "kv_heads", "gbytes", "gbytes_per_s", "copy_gbytes_per_s", "fraction_of_copy", "best_sdpa",
    "speedup_vs_best_sdpa",
    # added with the GPU timing (host launch overhead hidden, docs/performance.md)
    "timing", "host_ms",
    # added with the choice of L2 flush (a zeroed buffer's dirty lines cost small decode calls their write-back)
    "flush",
)
QUANTIZE_COLUMNS = (
    "gpu", "granularity", "batch", "heads", "seq", "head_dim", "ms", "gbytes", "gbytes_per_s",
    "copy_gbytes_per_s", "fraction_of_copy", "error",
)
#: The printed table's sections, (title, column, format): prefill suites are compute-bound (TOP/s), decoding
#: is bound by reading the cache (GB/s against the copy).
PREFILL_SECTIONS = (
    ("TOP/s (TFLOP/s for fp16)", "tflops", "{:.1f}"),
    ("speed-up over sdpa-cudnn (same run)", "speedup_vs_cudnn", "{:.2f}x"),
    ("speed-up over sdpa-flash (same run)", "speedup_vs_flash", "{:.2f}x"),
)
DECODE_SECTIONS = (
    ("ms (median)", "ms", "{:.3f}"),
    ("GB/s (bytes the provider must move / time)", "gbytes_per_s", "{:.0f}"),
    ("fraction of the device-to-device copy's GB/s (same run)", "fraction_of_copy", "{:.0%}"),
    ("speed-up over the fastest SDPA backend of each shape (same run)", "speedup_vs_best_sdpa", "{:.2f}x"),
)


def sanitize_gpu_name(name: str) -> str:
    """A filesystem-safe GPU name: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    safe = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    return safe or "unknown-gpu"


def shape_key(row: dict) -> tuple:
    """(batch, heads, kv_heads, seq_q, seq_k, head_dim, causal) of a row; kv_heads defaults to heads."""
    return (row["batch"], row["heads"], row.get("kv_heads", row["heads"]), row["seq_q"], row["seq_k"],
            row["head_dim"], bool(row["causal"]))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _measured(row: dict | None) -> bool:
    return row is not None and not row.get("error") and _is_number(row.get("ms"))


def add_speedups(rows: list[dict]) -> list[dict]:
    """Fill the speed-ups: an SDPA backend's time over the provider's, same shape, same run.

    speedup_vs_cudnn, speedup_vs_flash : against sdpa-cudnn and sdpa-flash. best_sdpa, speedup_vs_best_sdpa :
    against the fastest SDPA backend measured on the shape (None / NaN where none was). NaN where either side
    has no measurement. Modifies and returns ``rows``.
    """
    sdpa = set(sdpa_providers())
    by_shape: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        by_shape.setdefault(shape_key(row), {})[row["provider"]] = row
    for row in rows:
        same_shape = by_shape[shape_key(row)]
        for column, reference in (("speedup_vs_cudnn", "sdpa-cudnn"), ("speedup_vs_flash", "sdpa-flash")):
            ref = same_shape.get(reference)
            row[column] = ref["ms"] / row["ms"] if _measured(row) and _measured(ref) else math.nan
        timed = [r for name, r in same_shape.items() if name in sdpa and _measured(r)]
        best = min(timed, key=lambda r: r["ms"], default=None)
        row["best_sdpa"] = best["provider"] if best is not None else None
        row["speedup_vs_best_sdpa"] = best["ms"] / row["ms"] if best is not None and _measured(row) else math.nan
    return rows


def _cell(row: dict | None, column: str, fmt: str) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return "skip" if str(row["error"]).startswith("skipped") else "err"
    value = row.get(column)
    return fmt.format(value) if _is_number(value) else "-"


def format_table(rows: list[dict], providers: list[str] | None = None, sections=PREFILL_SECTIONS) -> str:
    """Plain-text table: one section per (title, column, format) of ``sections``, a line per shape, a column
    per provider (default: in order of appearance). A column Hkv appears where some shape has grouped heads.

    Cells read "err" for a provider that failed, "skip" for one skipped (memory, unsupported), "-" for nothing
    measured.
    """
    if providers is None:
        providers = list(dict.fromkeys(row["provider"] for row in rows))
    shapes: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        shapes.setdefault(shape_key(row), {})[row["provider"]] = row
    grouped = any(key[1] != key[2] for key in shapes)
    head = ["B", "H", *(["Hkv"] if grouped else []), "Nq", "Nk", "D", "causal"]
    widths = [2, 3, *([3] if grouped else []), 6, 6, 4, 6] + [max(len(p), 7) for p in providers]

    def line(cells):
        return "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))

    out = []
    for title, column, fmt in sections:
        out += ["", title, line(head + list(providers)), line(["-" * w for w in widths])]
        for (b, h, hkv, nq, nk, d, causal), by_provider in shapes.items():
            cells = [b, h, *([hkv] if grouped else []), nq, nk, d, "yes" if causal else "no"]
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


# --- figures ------------------------------------------------------------------------------------------------------


def _log2_seq_axis(ax, ticks) -> None:
    import matplotlib.ticker

    ax.set_xscale("log", base=2)
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xticks(ticks, [f"{n // 1024}k" if n >= 1024 else str(n) for n in ticks])


def _two_and_five(y: float, _position) -> str:
    """A minor tick's label on a log axis: the value where it is 2 or 5 times a power of ten, else nothing."""
    if y <= 0:
        return ""
    mantissa = round(y / 10 ** math.floor(math.log10(y)), 6)
    return f"{y:g}" if mantissa in (2, 5) else ""


def _values(part, column) -> str:
    return "/".join(str(v) for v in sorted(part[column].unique()))


def _plot_prefill(part, suite: str, gpu: str):
    """TOP/s against N per provider, faceted by head_dim (columns) and causal (rows)."""
    import seaborn as sns

    part = part.assign(causal=part["causal"].map({True: "causal", False: "non-causal"}))
    grid = sns.relplot(
        data=part, x="seq_k", y="tflops", hue="provider", kind="line", marker="o",
        hue_order=[p for p in PROVIDERS if p in set(part.provider)], col="head_dim", row="causal",
        facet_kws={"sharey": False}, height=3.6, aspect=1.3,
    )
    grid.set(xlabel="sequence length Nk (tokens)", ylabel="TOP/s (4 B H Nq Nk D / time, halved if causal)")
    for ax in grid.axes.flat:
        _log2_seq_axis(ax, sorted(part.seq_k.unique()))
    grid.figure.suptitle(f"attention forward on {gpu}: TOP/s by provider ({suite} suite, "
                         f"B={_values(part, 'batch')}, H={_values(part, 'heads')})", y=1.02)
    return grid.figure


def _plot_decode(part, suite: str, gpu: str):
    """Latency (ms, log) and GB/s against the cache length Nk per provider; rows: batch and K/V heads, columns:
    metric and head_dim, line style: Nq; dashed on the GB/s panels: the run's device-to-device copy."""
    import matplotlib.ticker
    import pandas as pd
    import seaborn as sns

    metrics = {"latency (ms)": "ms", "GB/s": "gbytes_per_s"}
    long = pd.concat([part.assign(metric=name, value=part[column].astype(float)) for name, column in metrics.items()],
                     ignore_index=True)
    long["panel"] = long["metric"] + ", D=" + long["head_dim"].astype(str)
    long["cache"] = "B=" + long["batch"].astype(str) + ", Hkv=" + long["kv_heads"].astype(str)
    cols = [f"{m}, D={d}" for d in sorted(part.head_dim.unique()) for m in metrics]
    rows = [f"B={b}, Hkv={h}" for b, h in sorted({(b, h) for b, h in zip(part.batch, part.kv_heads)},
                                                key=lambda bh: (bh[0], -bh[1]))]
    grid = sns.relplot(
        data=long, x="seq_k", y="value", hue="provider", style="seq_q", kind="line", marker="o",
        hue_order=[p for p in PROVIDERS if p in set(part.provider)], col="panel", col_order=cols, row="cache",
        row_order=rows, facet_kws={"sharey": False}, height=2.6, aspect=1.3,
    )
    grid.set_titles("{row_name} | {col_name}")
    copy = part["copy_gbytes_per_s"].astype(float).median() if "copy_gbytes_per_s" in part else math.nan
    ticks = sorted(part.seq_k.unique())
    for (_, panel), ax in grid.axes_dict.items():
        _log2_seq_axis(ax, ticks)
        ax.set_xlabel("cache length Nk (tokens)")
        if panel.startswith("latency"):
            ax.set_yscale("log")
            # Plain numbers (0.2, not 2x10^-1); between the decades only 2 and 5 are labelled.
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_two_and_five))
            ax.set_ylabel("ms")
        else:
            ax.set_ylabel("GB/s (bytes moved / time)")
            if _is_number(copy):
                ax.axhline(copy, color="0.4", linestyle="--", linewidth=1)
    grid.figure.subplots_adjust(wspace=0.35)  # room for each panel's own y label
    grid.figure.suptitle(f"decoding on {gpu}: latency and GB/s by provider ({suite} suite, "
                         f"Hq={_values(part, 'heads')}, non-causal; dashed: device-to-device copy, same run)", y=1.01)
    return grid.figure


def plot_results(rows: list[dict], directory: Path, suite: str, gpu: str) -> list[Path]:
    """The suite's figures; returns the paths written.

    Prefill shapes (Nq == Nk): TOP/s against N, ``bench-<suite>.png``. Decode shapes (Nq < Nk): latency and GB/s
    against Nk, ``bench-<suite>-decode.png``, or ``bench-<suite>.png`` for a suite of decode shapes only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame([r for r in rows if _measured(r)], columns=list(CSV_COLUMNS))
    frame["kv_heads"] = frame["kv_heads"].fillna(frame["heads"]).astype(int)
    for column in ("tflops", "ms", "gbytes_per_s"):
        frame[column] = frame[column].astype(float)
    decode_only = suite in SUITES and all(shape.decode for shape in suite_shapes(suite))
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for part, draw, name in ((frame[frame.seq_q == frame.seq_k], _plot_prefill, f"bench-{suite}.png"),
                             (frame[frame.seq_q < frame.seq_k], _plot_decode,
                              f"bench-{suite}.png" if decode_only else f"bench-{suite}-decode.png")):
        if part.empty:
            continue
        path = directory / name
        figure = draw(part, suite, gpu)
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


# --- figures from a CSV already written ---------------------------------------------------------------------------


def read_rows(csv_path: Path) -> list[dict]:
    """The rows of a benchmark CSV, with what a CSV written before the decode suite lacks filled in.

    ``kv_heads`` defaults to ``heads``; ``gbytes`` and ``gbytes_per_s`` are derived, where empty, from each
    provider's byte count at this commit (:attr:`.providers.Provider.bytes_moved`) and the measured ``ms``;
    ``copy_gbytes_per_s`` and ``fraction_of_copy``, where empty, from the device-to-device copy that the same run
    recorded in ``quantize-<suite>.csv`` beside it, if there is one. Nothing measured is changed.
    """
    import pandas as pd

    from .providers import get_provider
    from .shapes import Shape

    csv_path = Path(csv_path)
    frame = pd.read_csv(csv_path)
    for column in CSV_COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    frame["kv_heads"] = frame["kv_heads"].fillna(frame["heads"]).astype(int)
    copy = math.nan
    quantize_csv = csv_path.with_name(csv_path.name.replace("bench-", "quantize-", 1))
    if quantize_csv.exists():
        copies = pd.read_csv(quantize_csv).get("copy_gbytes_per_s", pd.Series(dtype=float)).dropna()
        copy = float(copies.median()) if len(copies) else math.nan
    rows = []
    for row in frame.to_dict("records"):
        if not isinstance(row["error"], str):  # an empty cell reads as NaN, which is truthy
            row["error"] = None
        if _measured(row) and not _is_number(row.get("gbytes")):
            shape = Shape(int(row["batch"]), int(row["heads"]), int(row["seq_q"]), int(row["seq_k"]),
                          int(row["head_dim"]), bool(row["causal"]), int(row["kv_heads"]))
            row["gbytes"] = get_provider(row["provider"]).bytes_moved(shape) / 1e9
        if _measured(row) and not _is_number(row.get("gbytes_per_s")):
            row["gbytes_per_s"] = row["gbytes"] / (row["ms"] * 1e-3)
        if _measured(row) and not _is_number(row.get("copy_gbytes_per_s")) and _is_number(copy):
            row["copy_gbytes_per_s"] = copy
            row["fraction_of_copy"] = row["gbytes_per_s"] / copy
        rows.append(row)
    return rows


def replot(csv_path: Path, directory: Path | None = None) -> list[Path]:
    """Redraw the figures of a benchmark CSV (``results/<gpu>/bench-<suite>.csv``) without a GPU, into
    ``directory`` (default: beside the CSV); the GPU's name comes from the JSON beside it, else the CSV's."""
    csv_path = Path(csv_path)
    match = re.fullmatch(r"bench-(.+)\.csv", csv_path.name)
    if not match:
        raise ValueError(f"csv_path: expected a file named bench-<suite>.csv, got {csv_path.name!r}")
    suite = match.group(1)
    rows = read_rows(csv_path)
    meta_path = csv_path.with_suffix(".json")
    gpu = json.loads(meta_path.read_text()).get("gpu") if meta_path.exists() else None
    gpu = gpu or (rows[0]["gpu"] if rows else "unknown GPU")
    return plot_results(rows, directory or csv_path.parent, suite, gpu)
