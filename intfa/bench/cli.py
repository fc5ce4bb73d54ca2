"""The command line: ``python -m intfa.bench --suite {paper,full,decode} [--providers ...] [--list]``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

from ..provenance import provenance
from ..runtime import cuda_available, interpreted
from .measure import FLUSHES, TIMINGS, measure_attention, measure_copy, measure_quantize
from .providers import PROVIDERS, default_providers, sdpa_providers
from .report import (
    DECODE_SECTIONS,
    PREFILL_SECTIONS,
    format_quantize_table,
    format_table,
    plot_results,
    replot,
    sanitize_gpu_name,
    write_results,
)
from .shapes import SUITES, float_bytes, int8_bytes, suite_shapes

__all__ = ["build_parser", "main", "parse_providers"]


def parse_providers(values) -> list[str]:
    """Provider names from ``--providers`` values (space- or comma-separated), deduplicated in order.

    Raises argparse.ArgumentTypeError naming the unknown ones.
    """
    names = [name for value in values for name in value.replace(",", " ").split()]
    unknown = [name for name in names if name not in PROVIDERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown provider(s) {unknown}; expected names from {list(PROVIDERS)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    from . import __doc__ as package_doc

    parser = argparse.ArgumentParser(prog="python -m intfa.bench", description=package_doc.split("\n\n")[0])
    parser.add_argument("--suite", choices=SUITES, default="paper")
    parser.add_argument("--providers", nargs="+", default=None, metavar="NAME",
                        help=f"any of {', '.join(PROVIDERS)} (space- or comma-separated; default: the suite's: "
                             + "; ".join(f"{s}: {' '.join(default_providers(s))}" for s in SUITES) + ")")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default: results)")
    parser.add_argument("--warmup-ms", type=float, default=25.0, help="do_bench warm-up time per measurement")
    parser.add_argument("--rep-ms", type=float, default=100.0, help="do_bench timed repetitions per measurement")
    parser.add_argument("--timing", choices=TIMINGS, default="gpu",
                        help="gpu (default): the GPU's time per call, the host's launch latency hidden behind a spin "
                             "kernel; eager: triton.testing.do_bench, which counts the host's latency where it "
                             "exceeds the L2 flush (calls of tens of microseconds)")
    parser.add_argument("--flush", choices=FLUSHES, default="zero",
                        help="how the L2 is emptied before each call: zero (default, as triton.testing.do_bench: a "
                             "256 MB buffer zeroed, which leaves the L2 full of dirty lines whose write-back the call "
                             "pays) or read (the buffer read: a clean L2 of unrelated data)")
    parser.add_argument("--no-quantize", action="store_true", help="skip the quantization bandwidth measurement")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--seq-k", type=int, nargs="+", default=None, metavar="NK",
                        help="only the suite's shapes with these key lengths (a subset that fits a time budget; "
                             "written as bench-<suite>-subset.*)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, metavar="B",
                        help="only the suite's shapes with these batch sizes")
    parser.add_argument("--seq-q", type=int, nargs="+", default=None, metavar="NQ",
                        help="only the suite's shapes with these query lengths")
    parser.add_argument("--head-dim", type=int, nargs="+", default=None, metavar="D",
                        help="only the suite's shapes with these head dims")
    parser.add_argument("--list", action="store_true", help="print the suite's shapes and exit (no GPU needed)")
    parser.add_argument("--replot", type=Path, default=None, metavar="CSV",
                        help="redraw the figures of a bench-<suite>.csv already written, beside it, and exit "
                             "(no GPU needed)")
    return parser


def _list_line(shape) -> str:
    from sim import QuantConfig

    return (f"{shape.label():<44} {shape.flops / 1e9:10.1f} GFLOP  {float_bytes(shape) / 1e9:8.3f} GB fp16  "
            f"{int8_bytes(shape, QuantConfig.paper()) / 1e9:8.3f} GB int8 cache")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        providers = default_providers(args.suite) if args.providers is None else parse_providers(args.providers)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--providers: {exc}")
    if args.replot is not None:
        try:
            written = replot(args.replot)
        except (OSError, ValueError) as err:
            parser.error(f"--replot: {err}")
        for path in written:
            print(f"wrote {path}")
        return 0
    filters = {"seq_k": args.seq_k, "batch": args.batch, "seq_q": args.seq_q, "head_dim": args.head_dim}
    filters = {name: values for name, values in filters.items() if values is not None}
    shapes = [shape for shape in suite_shapes(args.suite)
              if all(getattr(shape, name) in values for name, values in filters.items())]
    if not shapes:
        wanted = ", ".join(f"{name} in {values}" for name, values in filters.items())
        parser.error(f"--seq-k / --batch / --seq-q / --head-dim: no shape of the {args.suite} suite has {wanted} "
                     f"(use --list to see the shapes)")
    if args.list:
        for shape in shapes:
            print(_list_line(shape))
        return 0

    if not cuda_available():
        print("intfa.bench: no CUDA GPU is available; the benchmark measures GPU kernels and needs one "
              "(use --list to see the shapes).", file=sys.stderr)
        return 2
    if interpreted():
        print("intfa.bench: TRITON_INTERPRET=1 is set; the benchmark times compiled kernels. Unset it.",
              file=sys.stderr)
        return 2
    import torch
    from tqdm.auto import tqdm

    gpu_name = torch.cuda.get_device_name(0)
    gpu = sanitize_gpu_name(gpu_name)
    directory = args.out / gpu
    settings = {"providers": providers, "warmup_ms": args.warmup_ms, "rep_ms": args.rep_ms, "timing": args.timing,
                "flush": args.flush, "shapes": [dataclasses.asdict(s) for s in shapes]}
    meta = {"suite": args.suite,
            **provenance(command=shlex.join([sys.executable, "-m", "intfa.bench", *argv])),
            "settings": settings}
    if meta["git"]["dirty"]:
        print("intfa.bench: tracked files differ from the git commit; results to be committed must be measured "
              "from a clean commit (the JSON records git.dirty = true)", file=sys.stderr)
    started = time.perf_counter()
    torch.manual_seed(0)
    copy_gbps = measure_copy(warmup_ms=args.warmup_ms, rep_ms=args.rep_ms, timing=args.timing, flush=args.flush)
    meta["copy_gbytes_per_s"] = copy_gbps
    with tqdm(total=len(shapes) * len(providers), desc=f"bench {args.suite}", unit="run") as progress:
        rows = measure_attention(shapes, providers, gpu=gpu, warmup_ms=args.warmup_ms, rep_ms=args.rep_ms,
                                 progress=progress, copy_gbytes_per_s=copy_gbps, timing=args.timing,
                                 flush=args.flush)
    quantize_rows = [] if args.no_quantize else measure_quantize(gpu=gpu, warmup_ms=args.warmup_ms,
                                                                 rep_ms=args.rep_ms, copy_gbytes_per_s=copy_gbps,
                                                                 timing=args.timing, flush=args.flush)
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    # A subset (--seq-k, --batch, --seq-q, --head-dim) is written beside the suite's files, never over them.
    name = args.suite if not filters else f"{args.suite}-subset"
    paths = write_results(rows, quantize_rows, meta, directory, name)
    if not args.no_plot:
        paths |= {f"png{i}": path for i, path in enumerate(plot_results(rows, directory, name, gpu_name))}
    sections = DECODE_SECTIONS if all(shape.decode for shape in shapes) else PREFILL_SECTIONS
    sdpa = [name for name in providers if name in sdpa_providers()]  # the table shows torch's backends first
    columns = sdpa + [name for name in providers if name not in sdpa]
    print(f"\n{gpu_name}, suite {args.suite}, {meta['elapsed_s']} s, device-to-device copy {copy_gbps:.0f} GB/s\n")
    print(format_table(rows, columns, sections))
    if quantize_rows:
        print("\n" + format_quantize_table(quantize_rows))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    return 0
