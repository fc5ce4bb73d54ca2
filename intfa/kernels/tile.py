"""One key tile of INT8 FlashAttention, on chip: the body that every attention kernel's loop calls.

:func:`attend_tile` is sim's ``_tile_loop`` body (docs/spec.md, section 3) from the integer scores of one key
tile to the updated running state. The kernels around it (:mod:`.prefill`, the decode kernel) differ only in
which tiles they visit, how they address K and V, and what they store; the arithmetic lives here once.
Every float32 operation is the one sim performs, in sim's order, so under ``TRITON_INTERPRET=1`` the kernels
reproduce sim to the bit::

    s     = (qk * q_row) * k_scale         qk = Q8 @ K8^T (int32, exact); q_row = q_scale * f32(scale * log2 e)
    s     = s + bias                       (MASK with an additive attn_mask: bias = max(mask * f32(log2 e), -FLT_MAX))
    s     = -inf where not valid           (MASK only)
    m'    = max(m, rowmax(s));  m_sub = m' (0 where m' = -inf: a row with no visible key yet)
    alpha = exp2(m - m_sub);  p = exp2(s - m_sub)
                                       (p_scale "tile_max": p = exp2(s - rowmax(s)), r = exp2(rowmax(s) - m_sub))
    P8    = rne(p * 127)                   ("fixed127")  or  rne(p * 255) - 128 ("signed255")
    row   = rowsum(P weights)              ("quantized") or rowsum(p) ("float")
    pv    = P8 @ V8                        int32 (exact; signed255 adds 128 * colsum(V8) back)
    pv    = pv * v_scale of the tile       (V block-scaled only)
    row, pv = row * r, pv * r              (p_scale "tile_max" only)
    l     = l * alpha + row;  acc = acc * alpha + pv

Half-INT8 (``pv_format`` "float16"/"bfloat16"): p is rounded to the 16-bit format and multiplies V in that
format with float32 accumulation. bf16 rounding is done with integer bit operations (round to nearest even),
identical in the interpreter and on the GPU; the interpreter's own bf16 casts truncate and its bf16 dot reads
raw bits, so there the bf16 product runs in float32 on the (exactly representable) values instead
(``PV_DOT_F32``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import int_to_f32, round_half_even, round_to_bf16

#: Constexpr codes for the P @ V product, by QuantConfig (pv_format, p_quant).
PV_FIXED127, PV_SIGNED255, PV_FP16, PV_BF16 = 0, 1, 2, 3


def pv_mode(config) -> int:
    """The PV_MODE constexpr of a :class:`sim.QuantConfig`."""
    if config.pv_is_int:
        return PV_FIXED127 if config.p_quant == "fixed127" else PV_SIGNED255
    return PV_FP16 if config.pv_format == "float16" else PV_BF16


@triton.jit
def attend_tile(
    acc, l_i, m_i, qk, q_row, k_scale, v, v_scale, pv_offset, valid,
    BLOCK_N: tl.constexpr, MASK: tl.constexpr, K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    PV_DOT_F32: tl.constexpr, bias=None,
):
    """Fold one key tile into the running state; returns (acc, l_i, m_i, p_codes, pv_trace).

    acc (BLOCK_M, BLOCK_D) float32, l_i and m_i (BLOCK_M,) float32: the running state.
    qk (BLOCK_M, BLOCK_N) int32: Q8 @ K8^T of this tile. q_row (BLOCK_M,) float32.
    k_scale: (BLOCK_N,) float32 per key (K_SCALE_PER_KEY), else one float32 for the tile.
    v (BLOCK_N, BLOCK_D): int8 codes, or float16/bfloat16 values (half-INT8); masked keys read as 0.
    v_scale (BLOCK_D,) float32: this tile's V scales (V_SCALE_PER_TILE only; anything otherwise).
    pv_offset (BLOCK_D,) int32: 128 * colsum(V8 tile) for signed255, zeros otherwise.
    valid (BLOCK_M, BLOCK_N) bool: visible scores (MASK only; anything otherwise).
    bias (BLOCK_M, BLOCK_N) float32: an additive attn_mask in the exp2 domain, added to the scores (MASK only);
        None (the default) without one.
    Returns the new state, and this tile's integer intermediates for tracing: the P codes (int32) and
    P8 @ V8 with the signed255 correction (int32; zeros for half-INT8).
    """
    # 1. Scores: exact integer product, then (qk * q_row) * k_scale in float32.
    if K_SCALE_PER_KEY:
        s = (int_to_f32(qk) * q_row[:, None]) * k_scale[None, :]
    else:
        s = (int_to_f32(qk) * q_row[:, None]) * k_scale
    # 2. Masks.
    if MASK:
        if bias is not None:
            s = s + bias
        s = tl.where(valid, s, float("-inf"))

    # 3. Online softmax in the exp2 domain. Masked tiles may leave a row with no visible key yet (m' = -inf):
    # it subtracts 0 instead, so that no exp2(-inf - -inf) makes a NaN (its alpha and p are 0).
    tile_max = tl.max(s, 1)
    m_new = tl.maximum(m_i, tile_max)
    if MASK:
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_sub = m_new
    alpha = tl.exp2(m_i - m_sub)
    if P_TILE_MAX:  # P relative to the row's max in this tile; r = that max relative to m_new
        p = tl.exp2(s - tl.where(tile_max == float("-inf"), 0.0, tile_max)[:, None])
        r = tl.exp2(tile_max - m_sub)
    else:
        p = tl.exp2(s - m_sub[:, None])

    # 4. P to the PV format, the row sum, P @ V.
    if PV_MODE == 0:  # fixed127: codes in [0, 127]
        p_weight = round_half_even(p * 127.0)
        p_codes = p_weight
    elif PV_MODE == 1:  # signed255: codes rne(255 p) - 128 in [-128, 127], the -128 folded into the
        # magic-number subtraction; the weights w = codes + 128 are restored by the sums below.
        p_codes = (p * 255.0 + 12582912.0).to(tl.int32, bitcast=True) - (0x4B400000 + 128)
    elif PV_MODE == 2:  # float16 P
        p_half = p.to(tl.float16)
        p_weight = p_half.to(tl.float32)
        p_codes = tl.zeros(qk.shape, tl.int32)
    else:  # bfloat16 P
        p_weight = round_to_bf16(p)
        p_half = p_weight.to(tl.bfloat16)  # exact: the value is a bfloat16 already
        p_codes = tl.zeros(qk.shape, tl.int32)

    if NORMALIZER_QUANTIZED:
        if PV_MODE == 0:
            row_sum = tl.sum(p_weight, 1).to(tl.float32)
        elif PV_MODE == 1:  # sum(codes + 128) over the tile: masked columns have code -128, weight 0
            row_sum = (tl.sum(p_codes, 1) + 128 * BLOCK_N).to(tl.float32)
        else:
            row_sum = tl.sum(p_weight, 1)
    else:
        row_sum = tl.sum(p, 1)

    if PV_MODE <= 1:
        pv_int = tl.dot(p_codes.to(tl.int8), v, out_dtype=tl.int32)
        pv_trace = pv_int + pv_offset[None, :]
        if BLOCK_N <= 128:  # |pv| <= 255 * 127 * BLOCK_N < 2**22: the magic-number conversion is exact
            pv = (pv_int + (0x4B400000 + pv_offset)[None, :]).to(tl.float32, bitcast=True) - 12582912.0
        else:
            pv = pv_trace.to(tl.float32)
    elif PV_DOT_F32:  # interpreter, bf16: same values, float32 product
        pv = tl.dot(p_weight, v.to(tl.float32), input_precision="ieee", out_dtype=tl.float32)
        pv_trace = tl.zeros(acc.shape, tl.int32)
    else:
        pv = tl.dot(p_half, v, out_dtype=tl.float32)
        pv_trace = tl.zeros(acc.shape, tl.int32)

    if V_SCALE_PER_TILE:  # V per block: dequantize this tile's product before accumulating
        pv = pv * v_scale[None, :]
    if P_TILE_MAX:
        row_sum = row_sum * r
        pv = pv * r[:, None]
    l_i = l_i * alpha + row_sum
    acc = acc * alpha[:, None] + pv
    return acc, l_i, m_new, p_codes, pv_trace
