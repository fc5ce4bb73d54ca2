"""SASS opcode counts of the compiled INT8 prefill kernel: the whole kernel, and its hot loop per score.

    python scripts/sass_histogram.py [--head-dim 128] [--variants paper:128:8:3:0 paper:64:4:3:1 ...] [--out F]

A variant is ``config:block_m:num_warps:num_stages:tma`` (scripts/variants.py). Each is compiled once on a
small input (the code does not depend on N), its SASS read from Triton's cache (``kernel.asm["sass"]``, via
cuobjdump), and two tables printed:

- static counts over the whole kernel (instructions in the binary, not executed);
- the hot loop, normalised per score: the body of the loop that holds the tensor-core instructions, as
  thread-instructions per score = instructions in the body x 32 x num_warps / (block_m x block_n). At 128
  thread-instructions per clock per SM (4 schedulers x 32 lanes), ``128 / per-score`` bounds the scores per clock
  an SM can issue; the ALU work of the loop is the quantity the INT8 kernel must cut (docs/performance.md).

Needs CUDA. The functions are used by scripts/tune_int8.py too.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

FAMILIES = ("IGMMA", "HGMMA", "QGMMA", "WARPGROUP", "MUFU", "I2F", "I2FP", "F2I", "F2IP", "F2F", "I2I", "FMUL", "FADD",
            "FFMA", "FMNMX", "FSETP", "FSEL", "IADD3", "IMAD", "LOP3", "PRMT", "SHF", "SEL", "ISETP", "LDG", "LDGSTS",
            "UTMALDG", "LDS", "STS", "LDSM", "LDL", "STL", "BAR", "SYNCS", "SHFL", "MOV", "BRA")

_OPCODE = re.compile(r"[A-Z][A-Z0-9_]*(\.\S+)?")
# Labels and branch targets as cuobjdump (".L_x_5:", "BRA `(.L_x_5)") and nvdisasm via triton.tools.disasm
# ("LBB5:", "BRA LBB5") print them.
_LABEL = re.compile(r"^\s*(\.L_x_\d+|LBB\d+):")
_BRANCH_TARGET = re.compile(r"BRA\s+(?:`\()?(\.L_x_\d+|LBB\d+)")


def _instructions(sass: str):
    """(line index, opcode family, text) of every instruction; labels as (index, None, label)."""
    for index, line in enumerate(sass.splitlines()):
        label = _LABEL.match(line)
        if label:
            yield index, None, label.group(1)
            continue
        for token in line.split():
            if ":" in token or token.startswith(("/*", "@", ".", "{", "}")):
                continue  # control codes, addresses, predicates, labels
            if _OPCODE.fullmatch(token):
                yield index, token.split(".")[0], line
            break


def histogram(sass: str) -> collections.Counter:
    """Opcode families over the whole kernel."""
    return collections.Counter(op for _, op, _ in _instructions(sass) if op is not None)


def loops_with(sass: str, marker: str = "IGMMA") -> list[collections.Counter]:
    """Opcode counts of every innermost backward-branch loop holding ``marker``, in program order.

    A loop is a label and a later branch back to it. Innermost: its body holds no other such loop that has the
    marker. Out-of-line blocks placed after the kernel's exit that branch back into a loop body (mbarrier retry
    blocks, subroutines) are not loops of the program and are skipped: their span would contain the loop they
    return to.
    """
    items = list(_instructions(sass))
    label_at = {text: pos for pos, (_, op, text) in enumerate(items) if op is None}
    exit_line = next((i for i, line in enumerate(sass.splitlines())
                      if re.search(r"\sEXIT\s*;", line) and "@" not in line), None)
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


def hot_loop(sass: str, marker: str = "IGMMA") -> collections.Counter:
    """The first innermost loop holding ``marker`` (:func:`loops_with`): the unmasked key tiles, the hot loop.
    An empty Counter when there is none."""
    loops = loops_with(sass, marker)
    return loops[0] if loops else collections.Counter()


def per_score(loop: collections.Counter, block_m: int, block_n: int, num_warps: int) -> dict:
    """Thread-instructions per score of each family in a loop body that processes one block_m x block_n tile."""
    factor = 32 * num_warps / (block_m * block_n)
    return {op: n * factor for op, n in loop.items()}


def format_table(columns: dict, rows=FAMILIES, fmt="{:12d}") -> str:
    """One column per variant (name -> Counter or dict), one row per opcode family, totals last."""
    names = list(columns)
    others = collections.Counter()
    for counts in columns.values():
        others.update({op: 1 for op in counts if op not in rows})
    ordered = [r for r in rows if any(columns[n].get(r, 0) for n in names)] + [op for op, _ in others.most_common()]
    width = max(14, *(len(n) + 2 for n in names))
    lines = ["opcode".ljust(10) + "".join(n.rjust(width) for n in names)]
    for op in ordered:
        lines.append(op.ljust(10) + "".join(_fmt(columns[n].get(op, 0), fmt).rjust(width) for n in names))
    lines.append("total".ljust(10) + "".join(_fmt(sum(columns[n].values()), fmt).rjust(width) for n in names))
    return "\n".join(lines)


def _fmt(value, fmt):
    return fmt.format(value) if isinstance(value, int) and "d" in fmt else f"{value:.2f}"


def compiled_kernel_for(run):
    """Run ``run()`` once and return the prefill kernel it compiled (or found cached) last."""
    import torch

    from intfa.kernels import prefill

    def kernels():
        for device_cache in prefill._attn_fwd.device_caches.values():
            yield from device_cache[0].values()

    before = {id(kernel) for kernel in kernels()}
    run()
    torch.cuda.synchronize()
    new = [kernel for kernel in kernels() if id(kernel) not in before]
    return (new or list(kernels()))[-1]


def main(argv=None) -> int:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from variants import Variant, run_variant  # noqa: E402

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=["paper:128:8:3:0", "paper:64:4:3:1", "recommended:64:4:3:0"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sass_histogram: needs a CUDA GPU", file=sys.stderr)
        return 2
    d = args.head_dim
    q, k, v = (torch.randn(1, 2, 512, d, device="cuda", dtype=torch.float16) for _ in range(3))
    whole, loops, meta = {}, {}, []
    for spec in args.variants:
        variant = Variant.parse(spec)
        kernel = compiled_kernel_for(lambda: run_variant(variant, q, k, v, causal=False)())
        sass = kernel.asm["sass"]
        whole[spec] = histogram(sass)
        loops[spec] = per_score(hot_loop(sass), variant.block_m, variant.config.block_n, variant.num_warps)
        meta.append(f"{spec}: {kernel.n_regs} registers, {kernel.n_spills} spills")
    text = "\n".join([
        f"D={d}: static SASS opcode counts of the whole kernel", format_table(whole), "",
        f"D={d}: hot loop, thread-instructions per score (x 32 x warps / (block_m x block_n))",
        format_table(loops, fmt="{:.2f}"), "", *meta,
    ])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
