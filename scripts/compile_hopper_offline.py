"""Compile the Gluon Hopper kernel for sm_90a without a GPU: errors, registers, spills, warp roles, hot-loop SASS.

    python scripts/compile_hopper_offline.py [paper:128:2:1:0 ...] [--head-dims 64 128] [--causal 0 1]
                                             [--tl paper:64:4:3:1 ...] [--dump DIR]

A variant is ``config:block_m:num_stages:ws:overlap[:cvt]`` (:class:`HopperVariant`).
Uses :func:`compile_offline.offline` (the active driver swapped for one that reports the H100, launches turned
into compile-only warm-ups on CPU tensors): Gluon kernels are JIT functions too, so the same switch compiles them.
Prints, per variant, the resource usage (cuobjdump; with warp specialization the registers are the launch's, the
partitions' come from setmaxnreg, and the highest register the SASS names shows what the consumers use), integer
wgmma (IGMMA, never the 16x8 IMMA), ptxas's performance advisories (a serialized wgmma shows there), and the
instructions per score of the consumer's hot loop, and for an overlapped loop how many instructions (and exp2)
run while P8 @ V8 is in flight (:func:`overlap_window`); ``--tl`` adds tl-kernel variants (scripts/variants.py's
``config:block_m:num_warps:num_stages:tma``) counted the same way.

The loop is found by scripts/sass_histogram.py's :func:`loops_with`: branches after the kernel's first
unpredicated EXIT are not back edges (out-of-line mbarrier retry blocks), and the hot loop is the first innermost
one, the unmasked key tiles.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_offline import offline, resources_of, sass_of
from sass_histogram import FAMILIES, _instructions, format_table, loops_with


def loop_per_score(sass: str, block_m: int, block_n: int, num_warps: int) -> dict:
    """Thread-instructions per score of the first innermost wgmma loop: the unmasked key tiles, the hot loop."""
    loops = loops_with(sass)
    if not loops:
        return {}
    body = loops[0]
    factor = 32 * num_warps / (block_m * block_n)
    return {op: n * factor for op, n in body.items()}


def ptxas_warnings(kernel, arch: str = "sm_90a") -> list[str]:
    """ptxas's performance advisories (C7xxx lines, e.g. wgmma serialization) for the kernel's PTX, re-assembled.

    Triton does not surface them; a serialized wgmma (C7510-C7515) means the asynchronous products the kernel
    issues run one after the other.
    """
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.TemporaryDirectory() as tmp:
        ptx = Path(tmp) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        result = subprocess.run([str(tool), f"-arch={arch}", "-v", str(ptx), "-o", str(Path(tmp) / "k.cubin")],
                                capture_output=True, text=True, check=False)
    return [line.split(": ", 1)[-1] for line in (result.stdout + result.stderr).splitlines() if "(C7" in line]


@dataclasses.dataclass(frozen=True)
class HopperVariant:
    """A launch of the Gluon kernel: ``config:block_m:num_stages:ws:overlap[:cvt]``.

    config is a QuantConfig constructor name (paper, recommended); ws is 0 (one partition loads and computes),
    1 (a producer warp and one consumer partition per 64-row warpgroup) or 2 (a producer warp and one cooperative
    consumer partition); a trailing ``:cvt`` sets int_cvt. E.g. paper:128:2:1:0 = 128 rows, 2 stages,
    warp-specialized, no overlap.
    """

    config_name: str
    block_m: int
    num_stages: int
    ws: int
    overlap: bool
    int_cvt: bool = False

    @classmethod
    def parse(cls, text: str) -> HopperVariant:
        fields = text.split(":")
        if len(fields) not in (5, 6) or (len(fields) == 6 and fields[5] != "cvt") or fields[3] not in "012":
            raise argparse.ArgumentTypeError(
                f"variant: expected config:block_m:num_stages:ws(0/1/2):overlap[:cvt], got {text!r}")
        name, block_m, stages, ws, overlap = fields[:5]
        return cls(name, int(block_m), int(stages), int(ws), overlap == "1", len(fields) == 6)

    def __str__(self) -> str:
        return (f"{self.config_name}:{self.block_m}:{self.num_stages}:{self.ws}:{int(self.overlap)}"
                + (":cvt" if self.int_cvt else ""))

    @property
    def config(self):
        import sim

        return getattr(sim.QuantConfig, self.config_name)()

    @property
    def launch(self) -> dict:
        """hopper_forward's keyword arguments."""
        return {"block_m": self.block_m, "num_stages": self.num_stages, "warp_specialize": self.ws > 0,
                "cooperative": self.ws == 2, "overlap": self.overlap, "int_cvt": self.int_cvt}

    @property
    def consumer_rows_and_warps(self) -> tuple[int, int]:
        """Query rows and warps of one consumer partition (the loop's per-score normalisation)."""
        rows = 64 if self.ws == 1 else self.block_m
        return rows, rows // 16


def compile_variant(variant: HopperVariant, head_dim: int, causal: bool):
    """Compile one variant offline for sm_90a on small CPU operands; returns the compiled kernel."""
    import numpy as np
    import torch

    import sim
    from intfa.kernels.hopper import hopper_forward

    cfg = variant.config
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 256, head_dim)).astype(np.float16) for _ in range(3))
    ops = sim.quantize_operands(q, k, v, cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)  # V sequence-contiguous
    scales = [torch.from_numpy(np.ascontiguousarray(x)) for x in (ops.q_scale, ops.k_scale, ops.v_scale)]
    with offline() as compiled:
        hopper_forward(*codes, *scales, config=cfg, scale=head_dim ** -0.5, is_causal=causal,
                       out_dtype=torch.float16, return_lse=False, **variant.launch)
    return [kernel for kernel in compiled if kernel is not None][-1]


def overlap_window(sass: str) -> tuple[int, int] | None:
    """(instructions, MUFU.EX2) between the overlapped loop's P8 @ V8 issue and the wait that retires it.

    The overlapped hot loop is the one that waits with one group outstanding (``DEPBAR.LE gsb0, 0x1``: Q8 @ K8^T
    of tile j done, P8 @ V8 of tile j - 1 in flight); its product is the last register-A IGMMA before that wait
    (``IGMMA ... R<a>, R<p>, gdesc``), retired by the next ``DEPBAR.LE gsb0, 0x0``. The exp2 inside the window are
    the softmax work that runs beside the product. None without an overlapped loop. The search takes the first
    such wait in the kernel: in this kernel only the overlapped loop waits with one group outstanding (the
    prologue's Q8 @ K8^T and the epilogue's last product wait for all).
    """
    lines = [text for _, op, text in _instructions(sass) if op]
    one_out = next((i for i, line in enumerate(lines) if "DEPBAR.LE gsb0, 0x1" in line), None)
    if one_out is None:
        return None
    issue = max((i for i in range(one_out) if re.search(r"IGMMA\S*\s+R\d+, R\d+, gdesc", lines[i])), default=None)
    retire = next((i for i in range(one_out, len(lines)) if "DEPBAR.LE gsb0, 0x0" in lines[i]), None)
    if issue is None or retire is None:
        return None
    window = lines[issue + 1:retire]
    return len(window), sum("MUFU.EX2" in line for line in window)


def describe(kernel, variant: HopperVariant) -> tuple[dict, str]:
    """(hot-loop thread-instructions per score, one line of resources and warnings) of a compiled variant."""
    sass = sass_of(kernel)
    rows, warps = variant.consumer_rows_and_warps
    loop = loop_per_score(sass, rows, variant.config.block_n, warps)
    whole = collections.Counter(op for _, op, _ in _instructions(sass) if op)
    registers = sorted({int(r) for r in re.findall(r"\bR(\d+)\b", sass)})
    setmaxnreg = sorted(set(re.findall(r"setmaxnreg\.(inc|dec)\.sync\.aligned\.u32\s+(\d+)", kernel.asm["ptx"])))
    warnings = ptxas_warnings(kernel)
    window = overlap_window(sass)
    line = (f"{resources_of(kernel)}, highest register R{registers[-1] if registers else -1}, "
            f"setmaxnreg {[f'{k} {n}' for k, n in setmaxnreg] or 'none'}, IGMMA {whole['IGMMA']}, IMMA {whole['IMMA']}, "
            f"loop {sum(loop.values()):.2f}/score, LDL+STL in loop {loop.get('LDL', 0) + loop.get('STL', 0):.2f}/score"
            + (f", P8 @ V8 in flight over {window[0]} instructions with {window[1]} MUFU.EX2" if window else "")
            + (f", ptxas: {'; '.join(warnings)}" if warnings else ""))
    return loop, line


def compile_tl_variant(variant, head_dim: int, causal: bool):
    """Compile a tl-kernel variant (variants.Variant) offline for sm_90a; returns the compiled prefill kernel."""
    import numpy as np
    import torch

    import sim
    from intfa.kernels import attention_forward

    cfg = variant.config
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 256, head_dim)).astype(np.float16) for _ in range(3))
    ops = sim.quantize_operands(q, k, v, cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)
    scales = [torch.from_numpy(np.ascontiguousarray(x)) for x in (ops.q_scale, ops.k_scale, ops.v_scale)]
    with offline() as compiled:
        attention_forward(*codes, *scales, config=cfg, scale=head_dim ** -0.5, is_causal=causal,
                          out_dtype=torch.float16, launch=variant.launch)
    return [kernel for kernel in compiled if kernel is not None and "attn_fwd" in kernel.name][-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", type=HopperVariant.parse, nargs="*",
                        default=[HopperVariant.parse(v) for v in ("paper:128:2:0:0", "paper:128:2:1:0",
                                                                  "paper:128:3:1:1")])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[128])
    parser.add_argument("--causal", type=int, nargs="+", default=[0])
    parser.add_argument("--tl", nargs="*", default=[], help="tl-kernel variants to count beside (scripts/variants.py syntax)")
    parser.add_argument("--dump", type=Path, default=None, help="write each variant's SASS and PTX into this folder")
    args = parser.parse_args(argv)
    columns, notes = {}, []
    from variants import Variant

    for spec in args.tl:
        variant = Variant.parse(spec)
        for d in args.head_dims:
            for causal in args.causal:
                tag = f"tl {spec} d{d}{' causal' if causal else ''}"
                kernel = compile_tl_variant(variant, d, bool(causal))
                columns[tag] = loop_per_score(sass_of(kernel), variant.block_m, variant.config.block_n,
                                              variant.num_warps)
                notes.append(f"{tag}: {resources_of(kernel)}, loop {sum(columns[tag].values()):.2f}/score")
    for variant in args.variants:
        for d in args.head_dims:
            for causal in args.causal:
                tag = f"{variant} d{d}{' causal' if causal else ''}"
                try:
                    kernel = compile_variant(variant, d, bool(causal))
                except Exception as exc:  # noqa: BLE001 - report and go on
                    notes.append(f"{tag}: FAILED {type(exc).__name__}: {str(exc).strip()[-1500:]}")
                    continue
                if args.dump:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    stem = tag.replace(":", "-").replace(" ", "-")
                    (args.dump / f"{stem}.sass").write_text(sass_of(kernel))
                    (args.dump / f"{stem}.ptx").write_text(kernel.asm["ptx"])
                columns[tag], line = describe(kernel, variant)
                notes.append(f"{tag}: {line}")
    if columns:
        print("sm_90a: hot loop of one consumer partition, thread-instructions per score")
        print(format_table(columns, rows=FAMILIES, fmt="{:.2f}"))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
