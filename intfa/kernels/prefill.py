"""The INT8 prefill kernel in Triton's ``tl``: one program per query tile, walking the key tiles.

Layout of this file, as Triton's fused-attention tutorial: :func:`_attn_fwd_inner` is the loop over key tiles
(addressing, loads, Q8 @ K8^T, the masks; the arithmetic of each tile is :func:`intfa.kernels.tile.attend_tile`),
:func:`_attn_fwd` sets up one program's query tile, its pointers and scales, runs the loop in two stages and
finishes, :func:`prefill_forward` launches (the launch parameters come from :mod:`intfa.kernels.dispatch`).

Under ``TRITON_INTERPRET=1`` the kernel reproduces sim to the bit (docs/spec.md, contract level 1); the finish::

    out   = (acc * v_scale) / l_eff        (V per tensor/head/channel, half-INT8's power of two)  or  acc / l_eff
    out   = clamp(out, +-max of out_dtype) finite values only: saturation (tile.saturate), NaN and inf kept
    lse   = (m + log2(l_eff)) * ln 2 - ln(p_levels)

Divisions use ``tl.div_rn`` (IEEE round-to-nearest; Triton's ``/`` on float32 is approximate on
NVIDIA GPUs). Compiled kernels allow fused multiply-adds by default (``fp_fusion``): an FMA rounds
once where sim rounds twice (``p * 127 + 1.5 * 2**23`` decides a P code), which moves a P code by one
step on a few more elements; level 2 of the contract allows that and the GPU tests measure it, and
it is 5-7% faster. ``fp_fusion=False`` follows sim's rounding where the GPU can.

Causal masking is top-left, as torch SDPA (query i sees keys 0..i, also when Nq != Nk). Key tiles
entirely above the diagonal are skipped: in sim they are exact no-ops (m unchanged, alpha = 1,
p = 0). Key tile 0 is never skipped and its column 0 is never masked, so no row reaches exp2 with
m = -inf.

Layouts: Q and K codes (B, H, N, D) with any strides (K-major for the QK^T product when D is
contiguous); V codes with any strides, and when their sequence stride is 1 (the layout
:func:`intfa.kernels.quantize.quantize_int8` writes with ``seq_contiguous=True``) the kernel is told
so at compile time: Hopper's 8-bit wgmma wants V K-major for P8 @ V8.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from sim.config import LN2, LOG2E, QuantConfig, n_blocks, qk_scale_factor

from ..runtime import interpreted
from .common import scale_strides, tile_column_sums, trace_buffers
from .tile import PV_BF16, PV_SIGNED255, attend_tile, finish_state, load_k_scale, load_kv_codes, pv_mode, saturate

#: Head dims the kernel runs: any D in this range, padded in registers to a power of two (masked).
MIN_HEAD_DIM, MAX_HEAD_DIM = 32, 256
#: Output dtypes.
OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: P and V formats of half-INT8, by QuantConfig.pv_format.
HALF_PV_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}

@triton.jit
def _load_key_tile(
    j, offs_n, offs_d, k_base, v_base, ks_base, vs_base, vsum_base, desc_k, desc_v, kv_row,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn, stride_vsd, stride_vsum_t,
    N_K, HEAD_DIM,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, MASK: tl.constexpr, PAD_D: tl.constexpr,
    K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr, USE_TMA: tl.constexpr,
):
    """Key tile ``j``'s operands: (K^T tile, V tile, k_scale, v_scale, pv_offset), as attend_tile takes them.

    K^T is (BLOCK_D, BLOCK_N) and V (BLOCK_N, BLOCK_D); keys past N_K and padded channels read as 0. With
    USE_TMA the two tiles come through tensor descriptors (Hopper's bulk tensor copy; out-of-range elements of
    a (batch * kv head) slab are zero-filled by the copy engine), else through masked pointer loads.
    """
    d_ok = offs_d < HEAD_DIM
    cols = j * BLOCK_N + offs_n
    if USE_TMA:
        kt = desc_k.load([kv_row, j * BLOCK_N, 0]).reshape(BLOCK_N, BLOCK_D).T
        v = desc_v.load([kv_row, 0, j * BLOCK_N]).reshape(BLOCK_D, BLOCK_N).T
    else:
        kt, v = load_kv_codes(k_base, v_base, cols, cols, N_K, offs_d, d_ok, stride_kn, stride_kd, stride_vn,
                              stride_vd, MASK, PAD_D, V_SEQ_CONTIGUOUS)
    # The tile's small vectors (K scales, V block scales, V column sums) are loaded with the tiles, before the
    # products, so that their latency hides behind Q8 @ K8^T instead of stalling the softmax (loaded where
    # they are used, they cost 10-25% on the H100: docs/performance.md).
    k_scale = load_k_scale(ks_base, cols, cols, N_K, j, stride_ksn, MASK, K_SCALE_PER_KEY)
    if V_SCALE_PER_TILE:
        v_scale = tl.load(vs_base + j * stride_vsn + offs_d * stride_vsd, mask=d_ok, other=0.0)
    else:  # unused (compiled away); a tensor, because a jit function cannot return None
        v_scale = tl.zeros([BLOCK_D], tl.float32)
    if PV_MODE == 1:
        # sum_t w_t v_t = P8 @ V8 + 128 * colsum(V8 tile); the column sums are precomputed once per key tile
        # (they do not depend on the queries) and added inside the int -> float step.
        pv_offset = 128 * tl.load(vsum_base + j * stride_vsum_t + offs_d, mask=d_ok, other=0)
    else:
        pv_offset = tl.zeros([BLOCK_D], tl.int32)
    return kt, v, k_scale, v_scale, pv_offset


@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i,
    q, q_row, offs_m, offs_n, offs_d,
    k_base, v_base, ks_base, vs_base, vsum_base, desc_k, desc_v, kv_row,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn, stride_vsd, stride_vsum_t,
    trace_qk, trace_p, trace_pv, stride_tm, stride_tpv_t, stride_tpv_m,
    N_Q, N_K, HEAD_DIM, tile_lo, tile_hi,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    MASK: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr, TRACE: tl.constexpr, USE_TMA: tl.constexpr,
    mask_base=None, stride_mm=0, stride_mn=0, log2e=1.0, MASK_KIND: tl.constexpr = 0, INT_CVT: tl.constexpr = False,
):
    """Key tiles [tile_lo, tile_hi) in increasing order: sim's ``_tile_loop``, one tile at a time.

    ``MASK`` applies the tail (key >= N_K) and, with ``IS_CAUSAL``, the causal mask; the first
    stage of :func:`_attn_fwd` runs the tiles that need neither with ``MASK=False``. With an attn_mask
    (``MASK_KIND`` 1: bool as uint8 at ``mask_base``, 2: additive float32) every tile runs masked: its mask tile
    drops keys (bool False, additive -inf) and an additive one adds max(mask * f32(log2 e), -FLT_MAX) to the scores.
    """
    d_ok = offs_d < HEAD_DIM
    for j in range(tile_lo, tile_hi):
        kt, v, k_scale, v_scale, pv_offset = _load_key_tile(
            j, offs_n, offs_d, k_base, v_base, ks_base, vs_base, vsum_base, desc_k, desc_v, kv_row,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn, stride_vsd, stride_vsum_t,
            N_K, HEAD_DIM, BLOCK_N, BLOCK_D, MASK, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS,
            PV_MODE, USE_TMA)
        qk = tl.dot(q, kt, out_dtype=tl.int32)
        cols = j * BLOCK_N + offs_n
        mask_bias = None
        if MASK:  # keys past the end, and (causal) keys after the query
            valid = cols[None, :] < N_K
            if IS_CAUSAL:
                valid = valid & (cols[None, :] <= offs_m[:, None])
            if MASK_KIND != 0:  # attn_mask: its tile, read where the scores exist
                # int64 offsets: a full (Nq, Nk) mask passes 2**31 elements at Nq = Nk = 46341
                m_ptrs = mask_base + offs_m[:, None].to(tl.int64) * stride_mm + cols[None, :].to(tl.int64) * stride_mn
                in_bounds = (offs_m[:, None] < N_Q) & (cols[None, :] < N_K)
                if MASK_KIND == 1:
                    valid = valid & (tl.load(m_ptrs, mask=in_bounds, other=0) != 0)
                else:
                    additive = tl.load(m_ptrs, mask=in_bounds, other=0.0)
                    valid = valid & (additive != float("-inf"))
                    mask_bias = tl.maximum(additive * log2e, -3.4028234663852886e38)
        else:
            valid = None
        acc, l_i, m_i, p_codes, pv_trace = attend_tile(
            acc, l_i, m_i, qk, q_row, k_scale, v, v_scale, pv_offset, valid,
            BLOCK_N, MASK, K_SCALE_PER_KEY, V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED,
            PV_DOT_F32, FMA_GUARD, mask_bias=mask_bias, INT_CVT=INT_CVT,
        )

        if TRACE:  # debugging and the GPU tests: this tile's integer intermediates
            rows_ok = offs_m[:, None] < N_Q
            t_ptrs = offs_m[:, None] * stride_tm + cols[None, :]
            tl.store(trace_qk + t_ptrs, qk, mask=rows_ok & (cols[None, :] < N_K))
            tl.store(trace_p + t_ptrs, p_codes, mask=rows_ok & (cols[None, :] < N_K))
            tl.store(trace_pv + j * stride_tpv_t + offs_m[:, None] * stride_tpv_m + offs_d[None, :], pv_trace,
                     mask=rows_ok & d_ok[None, :])
    return acc, l_i, m_i


@triton.jit
def _attn_fwd(
    Q, K, V, Q_scale, K_scale, V_scale, V_colsum, Out, Lse, desc_k, desc_v,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn,
    stride_vsb, stride_vsh, stride_vsn, stride_vsd,
    stride_vcb, stride_vch, stride_vct,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh,
    Trace_qk, Trace_p, Trace_pv,
    stride_tb, stride_th, stride_tm, stride_tpv_b, stride_tpv_h, stride_tpv_t, stride_tpv_m,
    Mask, stride_mb, stride_mh, stride_mm, stride_mn,
    H, GROUP_SIZE, N_Q, N_K, HEAD_DIM,
    qk_const, ln2, ln_p_levels, log2e, out_max,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    Q_SCALE_PER_ROW: tl.constexpr, K_SCALE_PER_KEY: tl.constexpr,
    V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, P_LEVELS: tl.constexpr,
    NORMALIZER_QUANTIZED: tl.constexpr, PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr, STORE_LSE: tl.constexpr,
    TRACE: tl.constexpr, USE_TMA: tl.constexpr, MASK_KIND: tl.constexpr, INT_CVT: tl.constexpr,
):
    """One program: query tile ``program_id(0)`` of (batch, head) ``program_id(1)``.

    Grid (ceil(N_Q / BLOCK_M), B * H). Query head h reads key/value head h // GROUP_SIZE (GQA).
    Scale tensors are indexed with strides; broadcast dimensions have stride 0 (a per-tensor scale
    has all strides 0), so one code path serves every granularity. So is the attn_mask (MASK_KIND 1 bool,
    2 additive float32; 0 none), read at query head h.
    """
    if IS_CAUSAL:  # the longest query tiles (most key tiles) first: less idle tail at the end of the grid
        start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        start_m = tl.program_id(0)
    off_bh = tl.program_id(1)
    b = off_bh // H
    h = off_bh % H
    h_kv = h // GROUP_SIZE
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < N_Q
    d_ok = offs_d < HEAD_DIM

    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h_kv.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h_kv.to(tl.int64) * stride_vh
    ks_base = K_scale + b * stride_ksb + h_kv * stride_ksh
    vs_base = V_scale + b * stride_vsb + h_kv * stride_vsh
    vsum_base = V_colsum + b * stride_vcb + h_kv * stride_vch

    q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0)
    # Per-row factor q_scale * f32(scale * log2 e): one float32 multiply, as sim.
    qs_base = Q_scale + b * stride_qsb + h * stride_qsh
    if Q_SCALE_PER_ROW:
        q_scale = tl.load(qs_base + offs_m * stride_qsm, mask=row_ok, other=1.0)
    else:  # one scale per query tile ("block": BLOCK_M == block_m) or per tensor (strides 0)
        q_scale = tl.full([BLOCK_M], 1.0, tl.float32) * tl.load(qs_base + start_m * stride_qsm)
    q_row = q_scale * qk_const

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # Key tiles to visit, and how many of them need no mask (all keys valid for all rows of the tile).
    if IS_CAUSAL:
        n_tiles = tl.minimum(tl.cdiv(N_K, BLOCK_N), tl.cdiv((start_m + 1) * BLOCK_M, BLOCK_N))
        n_unmasked = tl.minimum((start_m * BLOCK_M + 1) // BLOCK_N, N_K // BLOCK_N)
    else:
        n_tiles = tl.cdiv(N_K, BLOCK_N)
        n_unmasked = N_K // BLOCK_N
    if MASK_KIND != 0:  # an attn_mask may drop any key: every tile runs the masked stage
        n_unmasked = 0
    mask_base = Mask + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh

    trace_qk = Trace_qk + b * stride_tb + h * stride_th
    trace_p = Trace_p + b * stride_tb + h * stride_th
    trace_pv = Trace_pv + b * stride_tpv_b + h * stride_tpv_h
    # Stage 1: tiles that need no mask. Stage 2: the tail tile and the diagonal tiles, masked.
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, q_row, offs_m, offs_n, offs_d, k_base, v_base, ks_base, vs_base, vsum_base,
        desc_k, desc_v, b * (H // GROUP_SIZE) + h_kv,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn, stride_vsd, stride_vct,
        trace_qk, trace_p, trace_pv, stride_tm, stride_tpv_t, stride_tpv_m,
        N_Q, N_K, HEAD_DIM, 0, n_unmasked,
        BLOCK_N, BLOCK_D, False, IS_CAUSAL, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS,
        PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32, FMA_GUARD, TRACE, USE_TMA, INT_CVT=INT_CVT,
    )
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q, q_row, offs_m, offs_n, offs_d, k_base, v_base, ks_base, vs_base, vsum_base,
        desc_k, desc_v, b * (H // GROUP_SIZE) + h_kv,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn, stride_vsd, stride_vct,
        trace_qk, trace_p, trace_pv, stride_tm, stride_tpv_t, stride_tpv_m,
        N_Q, N_K, HEAD_DIM, n_unmasked, n_tiles,
        BLOCK_N, BLOCK_D, True, IS_CAUSAL, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS,
        PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32, FMA_GUARD, TRACE, USE_TMA,
        mask_base, stride_mm, stride_mn, log2e, MASK_KIND, INT_CVT=INT_CVT,
    )

    # 5. Finish (one function for every kernel): the normalizer in P-code units; V's scale where it was not
    # applied per tile: per tensor/head (strides 0) or per channel, and half-INT8's power of two per head. The output
    # saturates at its format's largest finite value (out_max).
    v_scale_at_end = not V_SCALE_PER_TILE
    if v_scale_at_end:
        v_scale = tl.load(vs_base + offs_d * stride_vsd, mask=d_ok, other=0.0)
    else:
        v_scale = tl.zeros([BLOCK_D], tl.float32)
    out, lse = finish_state(acc, l_i, m_i, v_scale, ln2, ln_p_levels, P_LEVELS, NORMALIZER_QUANTIZED, v_scale_at_end)
    out = saturate(out, out_max)
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh \
        + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    if STORE_LSE:
        tl.store(Lse + b * stride_lb + h * stride_lh + offs_m, lse, mask=row_ok)


INTERPRETED = interpreted()
"""True when Triton was imported with TRITON_INTERPRET=1: kernels then run on CPU tensors in NumPy."""


def _tensor_descriptors(k_codes: torch.Tensor, v: torch.Tensor, block_n: int, block_d: int):
    """TMA descriptors of the K and V codes as (B * Hkv) slabs, or (None, None) where the layout does not allow.

    The bulk tensor copy needs the last dimension contiguous and the other strides multiples of 16 bytes:
    K (B, Hkv, Nk, D) row-major with D % 16 == 0, V stored sequence-contiguous (B, Hkv, D, Nk) with Nk % 16 == 0,
    and (batch, head) mergeable into one dimension.
    """
    from triton.tools.tensor_descriptor import TensorDescriptor

    b, h, n, d = k_codes.shape
    if k_codes.dtype != torch.int8 or v.dtype != torch.int8:
        return None, None
    vt = v.transpose(2, 3)  # (B, Hkv, D, Nk) as stored
    ok = (k_codes.stride(3) == 1 and k_codes.stride(2) == d and k_codes.stride(0) == h * k_codes.stride(1)
          and vt.stride(3) == 1 and vt.stride(0) == h * vt.stride(1) and vt.stride(1) == d * vt.stride(2)
          and d % 16 == 0 and vt.stride(2) % 16 == 0 and k_codes.stride(1) % 16 == 0
          and k_codes.data_ptr() % 16 == 0 and vt.data_ptr() % 16 == 0)
    if not ok:
        return None, None
    k3 = k_codes.as_strided((b * h, n, d), (k_codes.stride(1), d, 1))
    v3 = vt.as_strided((b * h, d, n), (vt.stride(1), vt.stride(2), 1))
    return (TensorDescriptor(k3, list(k3.shape), list(k3.stride()), [1, block_n, block_d]),
            TensorDescriptor(v3, list(v3.shape), list(v3.stride()), [1, block_d, block_n]))


def prefill_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor | None,
    *, config: QuantConfig, scale: float, is_causal: bool, out_dtype: torch.dtype, return_lse: bool,
    trace: bool, block_m: int, num_warps: int, num_stages: int, use_tma: bool, fp_fusion: bool | None = None,
    attn_mask: torch.Tensor | None = None, int_cvt: bool = False,
):
    """Launch the INT8 prefill kernel on prepared operands (shapes and values already checked).

    Called through :func:`intfa.kernels.dispatch.attention_forward`, which chooses the launch parameters.

    Parameters
    ----------
    q_codes : (B, Hq, Nq, D) int8; k_codes : (B, Hkv, Nk, D) int8; any strides. Hkv divides Hq.
    v : (B, Hkv, Nk, D): int8 codes (full INT8) or float16/bfloat16 values in the format of
        ``config.pv_format`` (half-INT8). Any strides; a sequence stride of 1 selects the K-major path.
    q_scale, k_scale, v_scale : float32 in :func:`sim.quantize`'s shapes for the config's
        granularities (Q blocks of ``block_m``, K and V blocks of ``block_n``); for half-INT8 v_scale is the
        power of two per (batch, head) that V was divided by ((B, Hkv, 1, 1)), None for 1.
    config : the QuantConfig (qk_format "int8"); its block_m, block_n are the kernel's tile sizes.
    scale : softmax scale. out_dtype : float16, bfloat16 or float32.
    trace : also return the integer intermediates (full INT8 only): dict with
        ``qk`` (B, Hq, Nq, n_tiles * block_n) int32, ``p_codes`` likewise, and ``pv``
        (B, Hq, n_tiles, Nq, D) int32 (P8 @ V8 of each tile, the signed255 correction included).
        Tiles the kernel skipped (causal, above the diagonal) hold INT32_MIN.
    block_m, num_warps, num_stages : launch parameters (speed only, except that ``block_m`` must be
        ``config.block_m`` where Q is block-scaled: the scale groups are its tiles).
    int_cvt : convert the int32 products by I2F instructions instead of the magic-number add (speed only: both
        are exact for these products).
    attn_mask : None, or (B, Hq, Nq, Nk) (any strides, 0 along broadcast dimensions): bool (True: the key takes
        part) or float32 (added to the scaled scores; -inf drops the key). Every tile then runs the masked stage,
        and a row without a visible key returns 0.
    fp_fusion : allow fused multiply-add. Default: on when compiled (level 2 of the contract: it moves a
        P code by one step on a few more elements, measured by the GPU tests), irrelevant in the
        interpreter, which evaluates each operation separately.

    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32; with
    ``trace`` the trace dict last.
    """
    cfg = config
    b, hq, nq, d = q_codes.shape
    hkv, nk = k_codes.shape[1], k_codes.shape[2]
    device = q_codes.device
    mode = pv_mode(cfg)
    if cfg.pv_is_int and cfg.block_n < 32 and not INTERPRETED:
        raise ValueError(
            f"config: block_n={cfg.block_n}: the compiled INT8 P @ V product needs block_n >= 32 (8-bit tensor-core "
            "instructions reduce over 32 keys); block_n 16 runs only in the interpreter"
        )
    if trace and not cfg.pv_is_int:
        raise ValueError("trace: only full-INT8 configurations (pv_format 'int8') have integer intermediates")
    block_d = max(16, triton.next_power_of_2(d))
    # The interpreter's float32 -> bfloat16 cast truncates: let torch round the float32 result there.
    kernel_out_dtype = torch.float32 if INTERPRETED and out_dtype == torch.bfloat16 else out_dtype
    out = torch.empty((b, hq, nq, d), dtype=kernel_out_dtype, device=device)
    lse = torch.empty((b, hq, nq), dtype=torch.float32, device=device) if return_lse else out
    if v_scale is None:  # half-INT8 without a power-of-two scale: multiply by 1
        v_scale = torch.ones((1, 1, 1, 1), dtype=torch.float32, device=device)
    v_scale_t = v_scale
    if mode == PV_SIGNED255:
        v_colsum = tile_column_sums(v, cfg.block_n)
        vc_strides = (v_colsum.stride(0), v_colsum.stride(1), v_colsum.stride(2))
    else:
        v_colsum, vc_strides = q_scale, (0, 0, 0)  # unused; any valid pointer

    n_tiles = n_blocks(nk, cfg.block_n)
    trace_qk, trace_p, trace_pv, t_strides = trace_buffers(trace, b, hq, nq, n_tiles, cfg.block_n, d, out)

    qs_strides = scale_strides(q_scale, cfg.q_granularity == "tensor")
    ks_strides = scale_strides(k_scale, cfg.k_granularity == "tensor")
    vs_strides = scale_strides(v_scale_t, cfg.pv_is_int and cfg.v_granularity == "tensor")
    if attn_mask is None:
        mask_kind, mask, m_strides = 0, out, (0, 0, 0, 0)  # unused; any valid pointer
    elif attn_mask.dtype == torch.bool:
        mask_kind, mask = 1, attn_mask.view(torch.uint8)  # the same bytes, loaded as integers
        m_strides = mask.stride()
    elif attn_mask.dtype == torch.float32:
        mask_kind, mask, m_strides = 2, attn_mask, attn_mask.stride()
    else:
        raise TypeError(f"attn_mask: expected dtype bool or float32, got {attn_mask.dtype}")
    if cfg.q_granularity == "block" and block_m != cfg.block_m:
        raise ValueError(f"block_m: block-scaled Q needs tiles of config.block_m={cfg.block_m} rows, got {block_m}")
    grid = (triton.cdiv(nq, block_m), b * hq)
    # Fused multiply-adds where compiled (fp_fusion), and with them the guard of exp2's fused argument (tile.py).
    fusion = (not INTERPRETED) if fp_fusion is None else bool(fp_fusion)
    desc_k, desc_v = _tensor_descriptors(k_codes, v, cfg.block_n, block_d) if use_tma else (None, None)
    _attn_fwd[grid](
        q_codes, k_codes, v, q_scale, k_scale, v_scale_t, v_colsum, out, lse, desc_k, desc_v,
        *q_codes.stride(), *k_codes.stride(), *v.stride(),
        qs_strides[0], qs_strides[1], qs_strides[2],
        ks_strides[0], ks_strides[1], ks_strides[2],
        vs_strides[0], vs_strides[1], vs_strides[2], vs_strides[3],
        *vc_strides,
        *out.stride(),
        *((lse.stride(0), lse.stride(1)) if return_lse else (0, 0)),
        trace_qk, trace_p, trace_pv, *t_strides,
        mask, *m_strides,
        hq, hq // hkv, nq, nk, d,
        # float32 constants exactly as sim's: f32(scale * log2 e), f32(ln 2), f32(ln p_levels), f32(log2 e); the
        # output format's largest finite value (saturation).
        float(qk_scale_factor(scale)), float(np.float32(LN2)), float(np.float32(np.log(cfg.p_levels))),
        float(np.float32(LOG2E)), float(torch.finfo(out_dtype).max),
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
        IS_CAUSAL=bool(is_causal), PAD_D=block_d != d,
        Q_SCALE_PER_ROW=cfg.q_granularity == "token", K_SCALE_PER_KEY=cfg.k_granularity == "token",
        V_SCALE_PER_TILE=cfg.pv_is_int and cfg.v_granularity == "block",
        V_SEQ_CONTIGUOUS=v.stride(2) == 1,
        PV_MODE=mode, P_TILE_MAX=cfg.pv_is_int and cfg.p_scale == "tile_max", P_LEVELS=float(cfg.p_levels),
        NORMALIZER_QUANTIZED=cfg.normalizer == "quantized",
        PV_DOT_F32=INTERPRETED and mode == PV_BF16, FMA_GUARD=fusion and not INTERPRETED,
        STORE_LSE=bool(return_lse), TRACE=bool(trace),
        enable_fp_fusion=fusion,
        num_warps=num_warps, num_stages=num_stages, USE_TMA=desc_k is not None, MASK_KIND=mask_kind,
        INT_CVT=bool(int_cvt),
    )
    if kernel_out_dtype != out_dtype:
        out = out.to(out_dtype)
    result = (out,)
    if return_lse:
        result += (lse,)
    if trace:
        result += (dict(qk=trace_qk, p_codes=trace_p, pv=trace_pv),)
    return result[0] if len(result) == 1 else result


__all__ = ["prefill_forward", "INTERPRETED", "MIN_HEAD_DIM", "MAX_HEAD_DIM", "OUT_DTYPES",
           "HALF_PV_DTYPES"]
