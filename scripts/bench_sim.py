"""Wall-clock time of the NumPy simulator (sim.attention), to show it is fast enough for the notebooks.

The target (issue #2): the paper's INT8 configuration at B=1, H=8, N=4096, D=64 in under 10 s on a 2-core
CPU machine. This is a measurement to read, not a test: times depend on the machine and its load.

    .venv/bin/python scripts/bench_sim.py               # the default table
    .venv/bin/python scripts/bench_sim.py --repeat 5    # more repeats per cell (the median is shown)
    .venv/bin/python scripts/bench_sim.py --quick       # small sizes only (a few seconds)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

import sim

TARGET_SECONDS = 10.0  # issue #2: paper INT8 config, B=1, H=8, N=4096, D=64

CONFIGS = {
    "int8 (paper)": sim.QuantConfig.paper(),
    "int8 quantized l": sim.QuantConfig(normalizer="quantized"),
    "int8 P tile_max": sim.QuantConfig(p_scale="tile_max"),
    "half-int8": sim.QuantConfig.half_int8(),
    "fp16": sim.QuantConfig.fp16(),
    "fp8 e4m3": sim.QuantConfig.fp8("e4m3"),
    "float32 (none)": sim.QuantConfig.none(),
}

# (batch, heads, seq, head_dim, is_causal); the first row is the target.
SIZES = [
    (1, 8, 4096, 64, False),
    (1, 8, 4096, 64, True),
    (1, 8, 4096, 128, False),
    (1, 8, 1024, 64, False),
    (4, 8, 1024, 64, False),
]
QUICK_SIZES = [(1, 8, 512, 64, False), (1, 8, 1024, 64, True)]


def time_call(fn, repeat: int) -> float:
    """Median wall-clock seconds of ``repeat`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per cell (median shown)")
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--configs", nargs="*", default=None, choices=list(CONFIGS),
                        help="configurations to time (default: all; the target size always times the paper's)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat: expected a positive int, got {args.repeat}")

    names = args.configs or list(CONFIGS)
    sizes = QUICK_SIZES if args.quick else SIZES
    print(f"sim.attention wall-clock, median of {args.repeat} after a warm-up; numpy {np.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    header = f"{'B':>2} {'H':>2} {'N':>5} {'D':>4} {'causal':>6}  {'config':<18} {'seconds':>8}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for b, h, n, d, causal in sizes:
        q, k, v = (rng.standard_normal((b, h, n, d)).astype(np.float16) for _ in range(3))
        for name in names:
            config = CONFIGS[name]
            seconds = time_call(
                lambda q=q, k=k, v=v, causal=causal, config=config: sim.attention(
                    q, k, v, is_causal=causal, config=config),
                args.repeat)
            note = ""
            if (b, h, n, d, causal) == SIZES[0][:5] and name == "int8 (paper)":
                note = f"  target < {TARGET_SECONDS:.0f} s: {'met' if seconds < TARGET_SECONDS else 'MISSED'}"
            print(f"{b:>2} {h:>2} {n:>5} {d:>4} {causal!s:>6}  {name:<18} {seconds:>8.2f}{note}")


if __name__ == "__main__":
    main()
