"""One key tile of INT8 FlashAttention, on chip: the body that every attention kernel's loop calls.

:func:`attend_tile` is sim's ``_tile_loop`` body (docs/spec.md, section 3) from the integer scores of one key
tile to the updated running state. The kernels around it (:mod:`.prefill`, the decode kernel) differ only in
which tiles they visit, how they address K and V, and what they store; the arithmetic lives here once.
Every float32 operation is the one sim performs, in sim's order, so under ``TRITON_INTERPRET=1`` the kernels
reproduce sim to the bit::

    s     = (qk * k_scale) * q_row         qk = Q8 @ K8^T (int32, exact); q_row = q_scale * f32(scale * log2 e)
    s     = s + mask_bias                  (additive attn_mask: mask_bias = max(mask * f32(log2 e), -FLT_MAX))
    s     = -inf where not valid           (MASK only)
    m'    = max(m, rowmax(s));  m_sub = m' (0 where m' = -inf: a row with no visible key yet)
    alpha = exp2(m - m_sub);  p = exp2(s - m_sub)     (compiled: a guard for |s| >= 2**15, see attend_tile)
                                       (p_scale "tile_max": p = exp2(s - rowmax(s)), r = exp2(rowmax(s) - m_sub))
    P8    = rne(p * 127)                   ("fixed127")  or  rne(p * 255) - 128 ("signed255")
    row   = rowsum(P weights)              ("quantized") or rowsum(p) ("float")
    pv    = P8 @ V8                        int32 (exact; signed255 adds 128 * colsum(V8) back)
    pv    = pv * v_scale of the tile       (V block-scaled only)
    row, pv = row * r, pv * r              (p_scale "tile_max" only)
    l     = l * alpha + row;  acc = acc * alpha + pv

:func:`load_kv_codes` and :func:`load_k_scale` are the pointer loads of a key tile that both kernels make (the
prefill kernel's TMA path aside). :func:`finish_state` is the finish (spec 3.5) that turns the final state into
the output and the log-sum-exp; :func:`saturate` what the kernels apply to it before storing it in the output
format.

Half-INT8 (``pv_format`` "float16"/"bfloat16"): p is rounded to the 16-bit format and multiplies V in that
format with float32 accumulation. bf16 rounding is done with integer bit operations (round to nearest even),
identical in the interpreter and on the GPU; the interpreter's own bf16 casts truncate and its bf16 dot reads
raw bits, so there the bf16 product runs in float32 on the (exactly representable) values instead
(``PV_DOT_F32``).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import int_to_f32, round_to_bf16

#: Constexpr codes for the P @ V product, by QuantConfig (pv_format, p_quant).
PV_FIXED127, PV_SIGNED255, PV_FP16, PV_BF16 = 0, 1, 2, 3


def pv_mode(config) -> int:
    """The PV_MODE constexpr of a :class:`sim.QuantConfig`."""
    if config.pv_is_int:
        return PV_FIXED127 if config.p_quant == "fixed127" else PV_SIGNED255
    return PV_FP16 if config.pv_format == "float16" else PV_BF16


@triton.jit
def _max_propagating_nan(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def row_is_poisoned(m_i):
    """True where a row's running max is +inf or NaN: some input was not finite (scores never overflow float32
    for finite input that passed the overflow bound). The finish writes NaN there: unchecked inputs
    (validate=False) give a non-finite output, never finite garbage (the quantized normalizer sums integer
    bits, which stay finite whatever P was)."""
    return (m_i != m_i) | (m_i == float("inf"))


@triton.jit
def load_kv_codes(k_base, v_base, slots, cols, n_keys, offs_d, d_ok, stride_kn, stride_kd, stride_vn, stride_vd,
                  MASK: tl.constexpr, PAD_D: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr):
    """One key tile's codes through pointer loads: (K^T (BLOCK_D, BLOCK_N), V (BLOCK_N, BLOCK_D)), K's and V's dtype.

    slots (BLOCK_N,): where the tile's keys lie from k_base / v_base (key positions, or slots of a page); cols
    (BLOCK_N,): their positions in the sequence, keys from n_keys on masked (MASK only); d_ok (BLOCK_D,) bool: real
    channels (read with MASK or PAD_D). Masked keys and padded channels read as 0. V_SEQ_CONTIGUOUS: V's keys at
    stride 1, told to the compiler (Hopper's 8-bit MMA wants V K-major).
    """
    kt_ptrs = k_base + offs_d[:, None] * stride_kd + slots[None, :] * stride_kn
    if V_SEQ_CONTIGUOUS:
        v_ptrs = v_base + slots[:, None] + offs_d[None, :] * stride_vd
    else:
        v_ptrs = v_base + slots[:, None] * stride_vn + offs_d[None, :] * stride_vd
    if MASK:
        key_ok = cols < n_keys
        kt = tl.load(kt_ptrs, mask=d_ok[:, None] & key_ok[None, :], other=0)
        v = tl.load(v_ptrs, mask=key_ok[:, None] & d_ok[None, :], other=0)
    elif PAD_D:
        kt = tl.load(kt_ptrs, mask=d_ok[:, None], other=0)
        v = tl.load(v_ptrs, mask=d_ok[None, :], other=0)
    else:
        kt = tl.load(kt_ptrs)
        v = tl.load(v_ptrs)
    return kt, v


@triton.jit
def load_k_scale(ks_base, slots, cols, n_keys, scale_row, stride_ksn, MASK: tl.constexpr,
                 K_SCALE_PER_KEY: tl.constexpr):
    """One key tile's K scale: (BLOCK_N,) float32 per key at ``slots`` (1.0 for keys from n_keys on, with MASK),
    else the float32 scalar at row ``scale_row`` (per block: one scale per tile; per tensor or head: stride 0)."""
    if K_SCALE_PER_KEY:
        if MASK:
            k_scale = tl.load(ks_base + slots * stride_ksn, mask=cols < n_keys, other=1.0)
        else:
            k_scale = tl.load(ks_base + slots * stride_ksn)
    else:
        k_scale = tl.load(ks_base + scale_row * stride_ksn)
    return k_scale


@triton.jit
def attend_tile(
    acc, l_i, m_i, qk, q_row, k_scale, v, v_scale, pv_offset, valid,
    BLOCK_N: tl.constexpr, MASK: tl.constexpr, K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr, mask_bias=None, INT_CVT: tl.constexpr = False,
):
    """Fold one key tile into the running state; returns (acc, l_i, m_i, p_codes, pv_trace).

    acc (BLOCK_M, BLOCK_D) float32, l_i and m_i (BLOCK_M,) float32: the running state.
    qk (BLOCK_M, BLOCK_N) int32: Q8 @ K8^T of this tile. q_row (BLOCK_M,) float32.
    k_scale: (BLOCK_N,) float32 per key (K_SCALE_PER_KEY), else one float32 for the tile.
    v (BLOCK_N, BLOCK_D): int8 codes, or float16/bfloat16 values (half-INT8); masked keys read as 0.
    v_scale (BLOCK_D,) float32: this tile's V scales (V_SCALE_PER_TILE only; anything otherwise).
    pv_offset (BLOCK_D,) int32: 128 * colsum(V8 tile) for signed255, zeros otherwise.
    valid (BLOCK_M, BLOCK_N) bool: visible scores (MASK only; anything otherwise).
    FMA_GUARD: the launch fuses multiply-adds (``enable_fp_fusion``): guard exp2's fused argument (below).
    mask_bias (BLOCK_M, BLOCK_N) float32: an additive attn_mask in the exp2 domain (MASK only), or None (default).
    INT_CVT: convert the int32 products with conversion instructions (I2F) instead of the magic-number add (the
    same values: both exact below 2**22; one instruction instead of two, at the conversion pipe's rate).
    Returns the new state, and this tile's integer intermediates for tracing: the P codes (int32) and
    P8 @ V8 with the signed255 correction (int32; zeros for half-INT8).
    """
    # 1. Scores: exact integer product, then s = (qk * k_scale) * q_row in float32. The row max is taken over
    # t = qk * k_scale and scaled once per row (q_row > 0 and rounding is monotonic, so max(t) * q_row is
    # max(s) exactly), and s is never materialised: exp2's argument t * q_row - m is one multiply-add.
    if INT_CVT:
        qk_f = qk.to(tl.float32)
    else:
        qk_f = int_to_f32(qk)
    if K_SCALE_PER_KEY:
        t = qk_f * k_scale[None, :]
    else:
        t = qk_f * k_scale
    # 2. Masks.
    if MASK:
        t = tl.where(valid, t, float("-inf"))
    # NaN-propagating max (the GPU's plain max drops NaN): a NaN score, which only a non-finite input makes, must
    # reach the running max, whence the finish turns the row into NaN instead of finite garbage.
    if mask_bias is None:
        tile_max = tl.reduce(t, 1, _max_propagating_nan) * q_row
    else:  # an additive attn_mask moves each score: they are materialised, s = t * q_row + bias (-inf stays -inf)
        s = t * q_row[:, None] + mask_bias
        tile_max = tl.reduce(s, 1, _max_propagating_nan)

    # 3. Online softmax in the exp2 domain. Masked tiles may leave a row with no visible key yet (m' = -inf):
    # it subtracts 0 instead, so that no exp2(-inf - -inf) makes a NaN (its alpha and p are 0).
    m_new = tl.maximum(m_i, tile_max, propagate_nan=tl.PropagateNan.ALL)  # a NaN must stay (row_is_poisoned)
    if MASK:
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_sub = m_new
    alpha = tl.exp2(m_i - m_sub)
    if P_TILE_MAX:  # P relative to the row's max in this tile; r = that max relative to m_new
        p_ref = tl.where(tile_max == float("-inf"), 0.0, tile_max)
        r = tl.exp2(tile_max - m_sub)
    else:
        p_ref = m_sub
    if mask_bias is None:
        if FMA_GUARD:  # the launch's fp fusion (compiled kernels by default; never in the interpreter)
            # Compiled, exp2's argument is one FMA; where sim's (two roundings) is exactly 0 it may exceed 0 by up to
            # half an ulp of the score, and for |s| >= 2**16 that rounds p * levels up to levels + 1, a code that
            # wraps in int8 (the row's largest weight becoming the smallest: found by the GPU fuzz). Scores that
            # large raise the reference by |m| 2**-23, one to two ulps of it (a per-row add, not a per-score min),
            # so that p <= 1; below 2**15 half an ulp moves no code past the top, and nothing changes.
            p_ref = p_ref + tl.where(tl.abs(p_ref) >= 32768.0, tl.abs(p_ref) * 1.1920928955078125e-07, 0.0)
        p = tl.exp2(t * q_row[:, None] - p_ref[:, None])
    else:
        p = tl.exp2(s - p_ref[:, None])

    # 4. P to the PV format, the row sum, P @ V.
    if PV_MODE <= 1:
        # fixed127: code = rne(127 p) in [0, 127]; signed255: code = rne(255 p) - 128 in [-128, 127], weight
        # code + 128. The magic-number sum holds 0x4B400000 + 128 * signed + weight in its bits, so its low byte
        # is the code: truncation to int8 takes it with no integer subtract. The quantized normalizer sums the
        # bits and removes the constant once per row (int32 arithmetic wraps, exactly, both ways).
        if PV_MODE == 0:
            bits = (p * 127.0 + 12582912.0).to(tl.int32, bitcast=True)
            bias = 0x4B400000
        else:
            bits = (p * 255.0 + 12583040.0).to(tl.int32, bitcast=True)
            bias = 0x4B400000 + 128
        p8 = bits.to(tl.int8)
        p_codes = bits - (bias + 128 * PV_MODE)  # the trace's codes (compiled away otherwise)
    elif PV_MODE == 2:  # float16 P
        p_half = p.to(tl.float16)
        p_weight = p_half.to(tl.float32)
        p_codes = tl.zeros(qk.shape, tl.int32)
    else:  # bfloat16 P
        p_weight = round_to_bf16(p)
        p_half = p_weight.to(tl.bfloat16)  # exact: the value is a bfloat16 already
        p_codes = tl.zeros(qk.shape, tl.int32)

    if NORMALIZER_QUANTIZED:
        if PV_MODE <= 1:  # the weights' sum (masked columns: p = 0, weight 0)
            row_sum = (tl.sum(bits, 1) - BLOCK_N * bias).to(tl.float32)
        else:
            row_sum = tl.sum(p_weight, 1)
    else:
        row_sum = tl.sum(p, 1)

    if PV_MODE <= 1:
        pv_int = tl.dot(p8, v, out_dtype=tl.int32)
        pv_trace = pv_int + pv_offset[None, :]
        if BLOCK_N <= 128 and not INT_CVT:  # |pv| <= 255 * 127 * BLOCK_N < 2**22: the magic number is exact
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


@triton.jit
def finish_state(acc, l_i, m_i, v_scale, ln2, ln_p_levels,
                 P_LEVELS: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr, V_SCALE_AT_END: tl.constexpr):
    """The finish (docs/spec.md 3.5): (out (BLOCK_M, BLOCK_D) float32, lse (BLOCK_M,) float32) from the final state.

    v_scale (BLOCK_D,) float32: V's per-tensor or per-channel scales, applied here (V_SCALE_AT_END; anything
    otherwise). ln2, ln_p_levels: f32(ln 2) and f32(ln P_LEVELS). Divisions are IEEE (``tl.div_rn``). A row that
    saw no key (l = 0, possible only with per-sequence lengths or bottom-right causal alignment, spec 3.7) divides
    by 1 instead: out 0, lse -inf. A NaN l (the decode kernel's mark of an invalid block table) stays NaN, and a
    row whose running max is +inf or NaN (non-finite input, :func:`row_is_poisoned`) is NaN.
    """
    if NORMALIZER_QUANTIZED:
        l_eff = l_i
    else:
        l_eff = l_i * P_LEVELS
    l_eff = tl.where(l_eff == 0.0, 1.0, l_eff)
    if V_SCALE_AT_END:
        out = tl.div_rn(acc * v_scale[None, :], l_eff[:, None])
    else:
        out = tl.div_rn(acc, tl.full(acc.shape, 1.0, tl.float32) * l_eff[:, None])
    out = tl.where(row_is_poisoned(m_i)[:, None], float("nan"), out)
    lse = (m_i + tl.log2(l_eff)) * ln2 - ln_p_levels
    return out, lse


@triton.jit
def saturate(out, out_max):
    """Finite values of ``out`` clamped to [-out_max, out_max] (the output format's largest finite value); NaN and
    inf kept. The paper's float normalizer lets an output exceed max |V| by up to one P level (~1%): with V near
    float16's maximum it would round to inf where torch SDPA's output is finite (docs/spec.md 3.5)."""
    clamped = tl.minimum(tl.maximum(out, -out_max), out_max)
    return tl.where(tl.abs(out) <= 3.4028234663852886e38, clamped, out)
