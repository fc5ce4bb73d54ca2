"""What the attention and quantization kernels share: jit numerics, and host-side operand preparation.

Jit helpers (called from inside kernels; each is one or two exact operations, identical in Triton's
interpreter and compiled):

- :func:`int_to_f32`: int32 -> float32 by the magic-number add (no conversion instruction).
- :func:`round_half_even`: float32 -> nearest integer, ties to even, as int32 (``sim.round_half_even``).
- :func:`round_clip`: ``clip(round_half_even(y), -QMAX, QMAX)``, the quantizer's code rule.
- :func:`round_to_bf16`: float32 -> nearest bfloat16 value (ties to even), kept in float32.

The magic number 12582912.0 = 1.5 * 2**23 (bit pattern 0x4B400000, ``sim.quant.ROUND_MAGIC``): for |x| < 2**22,
x + 1.5 * 2**23 holds x in its low mantissa bits, so integer <-> float conversions become one integer add and one
float add, full-rate ALU work on the GPU, where conversion instructions run at a quarter rate in the same pipe as
exp2. Written as literals in the jit functions below. |Q8 K8^T| <= 127**2 * D < 2**22 needs D <= 256; |P8 V8| <=
255 * 127 * block_n < 2**22 needs block_n <= 128 (above, the kernels convert with an instruction: same value).

Host helpers: :func:`tile_column_sums` (the signed255 P correction's per-tile V column sums) and
:func:`scale_strides` (one stride convention for every scale granularity).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sim.config import n_blocks

#: 1.5 * 2**23 and its float32 bit pattern (docstring above).
ROUND_MAGIC = 12582912.0
ROUND_MAGIC_BITS = 0x4B400000


@triton.jit
def int_to_f32(x):
    """int32 -> float32, exactly, for |x| < 2**22 (the value is unchanged: no spec change)."""
    return (x + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0


@triton.jit
def round_half_even(y):
    """sim.round_half_even: float32 |y| < 2**22 -> nearest integer (ties to even) as int32.

    One IEEE add (whose rounding is the rule) and an integer subtract; no float-to-int conversion.
    """
    return (y + 12582912.0).to(tl.int32, bitcast=True) - 0x4B400000


@triton.jit
def round_clip(y, QMAX: tl.constexpr):
    """clip(round_half_even(y), -QMAX, QMAX) as int32: the quantizer's code rule (sim.quantize).

    The clip is taken in float32 first: the bounds are integers, so it commutes with the rounding.
    """
    return round_half_even(tl.minimum(tl.maximum(y, -QMAX * 1.0), QMAX * 1.0))


@triton.jit
def round_to_bf16(x):
    """float32 -> nearest bfloat16 value (ties to even), kept in float32. Finite inputs only.

    Adds 0x7FFF plus the lowest kept bit, then clears the 16 dropped bits: the textbook RNE on the
    bit pattern. Integer operations, so identical in the interpreter and compiled (the interpreter's own
    float32 -> bfloat16 cast truncates).
    """
    bits = x.to(tl.int32, bitcast=True)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
    return rounded.to(tl.float32, bitcast=True)


def tile_column_sums(v_codes: torch.Tensor, block_n: int) -> torch.Tensor:
    """Column sums of each key tile of the V codes: (B, Hkv, n_tiles, D) int32, contiguous.

    ``signed255`` P codes are ``w - 128``; the kernels restore ``sum_t w_t v_t`` by adding
    ``128 * colsum(V8 tile)``, which is the same for every query tile: computed once here (exact
    integers; ``sum(dtype=int32)`` widens per element, with no int32 copy of V).
    """
    b, h, n, d = v_codes.shape
    full = n // block_n
    sums = torch.empty((b, h, n_blocks(n, block_n), d), dtype=torch.int32, device=v_codes.device)
    if full:
        sums[:, :, :full] = v_codes[:, :, : full * block_n].unflatten(2, (full, block_n)).sum(3, dtype=torch.int32)
    if n % block_n:
        sums[:, :, full] = v_codes[:, :, full * block_n:].sum(2, dtype=torch.int32)
    return sums


def scale_strides(scale: torch.Tensor, per_tensor: bool) -> tuple:
    """The 4 strides a kernel indexes a scale tensor with: 0 along every dimension it broadcasts over.

    A dimension of size 1 gets stride 0, so the kernels may index it with any position (a per-(batch, head)
    scale of shape (B, H, 1, 1) is read at every key and channel); one scale per tensor has all strides 0.
    """
    if per_tensor:
        return (0, 0, 0, 0)
    return tuple(stride if size > 1 else 0 for stride, size in zip(scale.stride(), scale.shape))


#: What a trace buffer holds where the kernel wrote nothing (a key tile it skipped, a padded column).
TRACE_SENTINEL = -(2**31)


def trace_buffers(enabled: bool, b: int, hq: int, nq: int, n_tiles: int, block_n: int, d: int,
                  placeholder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """The per-tile trace every kernel writes with ``trace=True``, and the 7 strides it is indexed with.

    qk and p_codes (B, Hq, Nq, n_tiles * block_n) int32, pv (B, Hq, n_tiles, Nq, D) int32, all TRACE_SENTINEL
    until written; strides (qk's b, h, m; pv's b, h, tile, m). Disabled: ``placeholder`` three times (any valid
    pointer) and zero strides.
    """
    if not enabled:
        return placeholder, placeholder, placeholder, (0,) * 7
    device = placeholder.device
    qk = torch.full((b, hq, nq, n_tiles * block_n), TRACE_SENTINEL, dtype=torch.int32, device=device)
    p_codes = torch.full_like(qk, TRACE_SENTINEL)
    pv = torch.full((b, hq, n_tiles, nq, d), TRACE_SENTINEL, dtype=torch.int32, device=device)
    return qk, p_codes, pv, (*qk.stride()[:3], *pv.stride()[:4])
