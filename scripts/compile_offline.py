"""Compile Triton kernels for a GPU architecture on a machine without one: SASS, registers, spills, for free.

    python scripts/compile_offline.py paper:64:4:3:1 recommended:64:4:3:0 [--head-dim 128] [--arch 90]

Triton compiles through ptxas for any target without a GPU; only loading and launching need one. This swaps the
active driver for one that reports the target (sm_90 by default, the H100), makes every kernel launch a
compile-only warm-up on CPU tensors, and reads the cubin's SASS (nvdisasm) and resource usage (cuobjdump) with the
tools Triton ships. Compilation errors that Triton's interpreter cannot see show here, and the hot loop's
instructions per score (scripts/sass_histogram.py) can be counted before any device time is spent.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile, do not interpret


class _OfflineDriver:
    """Just enough of triton.runtime.driver's active driver to compile (never to launch)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


@contextlib.contextmanager
def offline(arch: int = 90):
    """Within this block, kernel launches compile for ``arch`` and return without running; yields the kernels."""
    import triton
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    compiled = []
    original_run = JITFunction.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        kernel = original_run(self, *args, grid=grid, warmup=True, **kwargs)
        compiled.append(kernel)
        return kernel

    previous = getattr(driver, "_active", None)  # None on a machine without a GPU driver
    driver.set_active(_OfflineDriver(arch))
    JITFunction.run = compile_only
    try:
        yield compiled
    finally:
        JITFunction.run = original_run
        driver._active = previous
    del triton


def sass_of(kernel) -> str:
    from triton.tools.disasm import get_sass

    return get_sass(kernel.asm["cubin"])


def resources_of(kernel) -> dict:
    """Registers and stack frame (spills) of a compiled kernel, from cuobjdump --dump-resource-usage."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    found = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", text))
    return {"registers": int(found.get("REG", -1)), "stack_bytes": int(found.get("STACK", -1)),
            "local_bytes": int(found.get("LOCAL", -1))}


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    import numpy as np

    import sim
    from intfa.kernels import attention_forward
    from sass_histogram import format_table, hot_loop, per_score
    from variants import Variant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=Variant.parse, nargs="+")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--dump", type=Path, default=None, help="write each variant's SASS into this folder")
    args = parser.parse_args(argv)
    d = args.head_dim
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 256, d)).astype(np.float16) for _ in range(3))
    loops, meta = {}, []
    for variant in args.variants:
        cfg = variant.config
        # Operands from sim (the device's quantizer is not needed to compile attention), in the kernels' layout.
        ops = sim.quantize_operands(q, k, v, cfg)
        codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
        codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)  # V sequence-contiguous
        scales = [torch.from_numpy(np.ascontiguousarray(x)) for x in (ops.q_scale, ops.k_scale, ops.v_scale)]
        with offline(args.arch) as compiled:
            try:
                attention_forward(*codes, *scales, config=cfg, scale=d ** -0.5, is_causal=args.causal,
                                  out_dtype=torch.float16, launch=variant.launch)
            except Exception as exc:  # noqa: BLE001 - report and go on
                meta.append(f"{variant}: FAILED {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}")
                continue
        kernel = [kern for kern in compiled if kern is not None and "attn_fwd" in kern.name][-1]
        sass = sass_of(kernel)
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{str(variant).replace(':', '-')}-d{d}.sass").write_text(sass)
        loops[str(variant)] = per_score(hot_loop(sass), variant.block_m, variant.config.block_n, variant.num_warps)
        meta.append(f"{variant}: {resources_of(kernel)}")
    if loops:
        print(f"D={d}, sm_{args.arch}: hot loop, thread-instructions per score")
        print(format_table(loops, fmt="{:.2f}"))
    print("\n".join(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
