"""Opcode counts of the compiled INT8 attention kernel's SASS, per configuration (docs/performance.md).

    python scripts/sass_histogram.py [--head-dim 128] [--configs paper paper+vblock paper+s255 recommended]

Compiles the kernel once per configuration on a small input (the code does not depend on N), reads the
SASS Triton keeps (``kernel.asm["sass"]``, via cuobjdump), and prints how many of each opcode family the
kernel holds, with registers and spills: a static count (instructions in the binary, not executed), which is
what tells whether an option adds conversions, MUFU work or local-memory traffic to the loop. Needs CUDA.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune_int8 import named_config, operands  # noqa: E402

from intfa.kernels import Launch, attention_forward, prefill  # noqa: E402

FAMILIES = ("HGMMA", "IGMMA", "IMMA", "QGMMA", "MUFU", "I2F", "I2FP", "F2I", "F2IP", "F2F", "I2I", "FMUL", "FADD", "FFMA", "FMNMX", "FSETP",
            "IADD3", "IMAD", "LOP3", "PRMT", "SHF", "LDG", "LDS", "STS", "LDL", "STL", "BAR", "SYNCS", "WARPGROUP")


def compiled_kernels():
    for device_cache in prefill._attn_fwd.device_caches.values():
        yield from device_cache[0].values()


def histogram(sass: str) -> collections.Counter:
    """Opcode families of SASS as Triton prints it (``<control> <predicate>? OPCODE.modifiers operands;``)."""
    counts = collections.Counter()
    for line in sass.splitlines():
        for token in line.split():
            if ":" in token or token.startswith(("/*", "@", ".")):
                continue  # control codes, addresses, predicates, labels
            if re.fullmatch(r"[A-Z][A-Z0-9_]*(\.\S+)?", token):
                counts[token.split(".")[0]] += 1
            break
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--configs", nargs="+", default=["paper", "paper+vblock", "paper+s255", "recommended"])
    parser.add_argument("--warps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("sass_histogram: needs a CUDA GPU", file=sys.stderr)
        return 2
    d = args.head_dim
    q, k, v = (torch.randn(1, 2, 512, d, device="cuda", dtype=torch.float16) for _ in range(3))
    table = {}
    for name in args.configs:
        cfg = named_config(name)
        before = {id(kernel) for kernel in compiled_kernels()}
        attention_forward(*operands(q, k, v, cfg), config=cfg, scale=d ** -0.5,
                          launch=Launch(block_m=128, num_warps=args.warps, num_stages=3))
        torch.cuda.synchronize()
        new = [kernel for kernel in compiled_kernels() if id(kernel) not in before]
        kernel = new[-1]
        counts = histogram(kernel.asm["sass"])  # disassembled on first access (cuobjdump)
        table[name] = (counts, kernel.n_regs, kernel.n_spills)
    header = f"{'opcode':10s}" + "".join(f"{name:>16s}" for name in table)
    lines = [f"D={d}, {args.warps} warps, block_n 128: static SASS opcode counts", header]
    for family in FAMILIES:
        lines.append(f"{family:10s}" + "".join(f"{counts[family]:16d}" for counts, _, _ in table.values()))
    others = collections.Counter()
    for counts, _, _ in table.values():
        others.update({op: n for op, n in counts.items() if op not in FAMILIES})
    for family, _ in others.most_common(12):
        lines.append(f"{family:10s}" + "".join(f"{counts[family]:16d}" for counts, _, _ in table.values()))
    lines.append(f"{'total':10s}" + "".join(f"{sum(c.values()):16d}" for c, _, _ in table.values()))
    lines.append(f"{'registers':10s}" + "".join(f"{regs:16d}" for _, regs, _ in table.values()))
    lines.append(f"{'spills':10s}" + "".join(f"{spills:16d}" for _, _, spills in table.values()))
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
