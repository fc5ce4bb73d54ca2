"""Compile the Gluon Hopper kernel for sm_90a without a GPU: errors, registers, spills, warp roles, hot-loop SASS.

    python scripts/compile_hopper_offline.py [--configs paper recommended] [--head-dims 64 128] [--causal 0 1]
                                             [--block-m 128] [--stages 2] [--dump DIR]

Uses :func:`compile_offline.offline` (the active driver swapped for one that reports the H100, launches turned
into compile-only warm-ups on CPU tensors): Gluon kernels are JIT functions too, so the same switch compiles them.
Prints, per variant, the resource usage (cuobjdump), the count of integer wgmma (IGMMA) and of register
reallocations (setmaxnreg: one per warp-specialized partition), and the instructions per score of the loop that
holds the wgmma, with the tl kernel's for comparison.

The loop is found by :func:`loops_with` below: sass_histogram.hot_loop can pick a "loop" that spans both stages
of the tl kernel (an out-of-line mbarrier retry block after the exit branches back into a loop body), which
inflates its count (54 instead of 15 thread-instructions per score for paper:64:4:3:1 at D=128); here branches
after the kernel's first unpredicated EXIT are not back edges, and the hot loop is the first innermost one, the
unmasked key tiles.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compile_offline import offline, resources_of, sass_of  # noqa: E402
from sass_histogram import FAMILIES, _BRANCH_TARGET, _instructions, format_table  # noqa: E402


def loops_with(sass: str, marker: str = "IGMMA") -> list[collections.Counter]:
    """Opcode counts of every innermost backward-branch loop holding ``marker``, in program order.

    A loop is a label and a later branch back to it. Innermost: its body holds no other such loop that has the
    marker. Out-of-line blocks placed after the kernel's exit that branch back into a loop body are not loops of
    the program and are skipped (their span would contain the loop they return to).
    """
    items = list(_instructions(sass))
    label_at = {text: pos for pos, (_, op, text) in enumerate(items) if op is None}
    # The first unpredicated EXIT ends the kernel's straight-line code; what follows is out of line (mbarrier retry
    # blocks that branch back, subroutines): their branches are not loop back edges.
    exit_line = next((i for i, line in enumerate(sass.splitlines()) if re.search(r"\s(?<!@)EXIT\s*;", line)
                      and "@" not in line), None)
    end = len(items) if exit_line is None else next(
        (pos for pos, (line, _, _) in enumerate(items) if line > exit_line), len(items))
    spans = []
    for pos, (_, op, text) in enumerate(items[:end]):
        target = _BRANCH_TARGET.search(text) if op == "BRA" else None
        if target and target.group(1) in label_at and label_at[target.group(1)] < pos:
            start = label_at[target.group(1)]
            body = collections.Counter(o for _, o, _ in items[start:pos + 1] if o is not None)
            if body[marker]:
                spans.append((start, pos, body))
    innermost = [s for s in spans if not any(o is not s and s[0] <= o[0] and o[1] <= s[1] for o in spans)]
    return [body for _, _, body in sorted(innermost, key=lambda s: s[0])]


def loop_per_score(sass: str, block_m: int, block_n: int, num_warps: int) -> dict:
    """Thread-instructions per score of the first innermost wgmma loop: the unmasked key tiles, the hot loop."""
    loops = loops_with(sass)
    if not loops:
        return {}
    body = loops[0]
    factor = 32 * num_warps / (block_m * block_n)
    return {op: n * factor for op, n in body.items()}


def main(argv=None) -> int:
    import numpy as np
    import torch

    import sim
    from intfa.kernels.hopper import hopper_forward

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["paper"])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[128])
    parser.add_argument("--causal", type=int, nargs="+", default=[0])
    parser.add_argument("--block-m", type=int, default=128)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--dump", type=Path, default=None, help="write each variant's SASS and PTX into this folder")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    columns, notes = {}, []
    for name in args.configs:
        cfg = getattr(sim.QuantConfig, name)()
        for d in args.head_dims:
            q, k, v = (rng.standard_normal((1, 2, 256, d)).astype(np.float16) for _ in range(3))
            ops = sim.quantize_operands(q, k, v, cfg)
            codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
            codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)  # V sequence-contiguous
            scales = [torch.from_numpy(np.ascontiguousarray(x)) for x in (ops.q_scale, ops.k_scale, ops.v_scale)]
            for causal in args.causal:
                tag = f"{name}-d{d}{'-causal' if causal else ''}"
                with offline() as compiled:
                    try:
                        hopper_forward(*codes, *scales, config=cfg, scale=d ** -0.5, is_causal=bool(causal),
                                       out_dtype=torch.float16, return_lse=False, block_m=args.block_m,
                                       num_stages=args.stages)
                    except Exception as exc:  # noqa: BLE001 - report and go on
                        notes.append(f"{tag}: FAILED {type(exc).__name__}: {str(exc).strip()[-2000:]}")
                        continue
                kernel = [kern for kern in compiled if kern is not None][-1]
                sass = sass_of(kernel)
                if args.dump:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    (args.dump / f"{tag}.sass").write_text(sass)
                    (args.dump / f"{tag}.ptx").write_text(kernel.asm["ptx"])
                    (args.dump / f"{tag}.ttgir").write_text(kernel.asm["ttgir"])
                num_warps = kernel.metadata.num_warps
                columns[tag] = loop_per_score(sass, args.block_m, cfg.block_n, num_warps)
                whole = collections.Counter(op for _, op, _ in _instructions(sass) if op)
                notes.append(f"{tag}: {resources_of(kernel)}, num_warps {num_warps}, IGMMA {whole['IGMMA']}, "
                             f"IMMA {whole['IMMA']}, setmaxnreg {sass.count('SETMAXNREG')}, "
                             f"wgmma loops {len(loops_with(sass))}")
    if columns:
        print("sm_90a: innermost wgmma loop, thread-instructions per score")
        print(format_table(columns, rows=FAMILIES, fmt="{:.2f}"))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
