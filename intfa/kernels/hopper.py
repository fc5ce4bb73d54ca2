"""The INT8 prefill kernel for Hopper (sm_90a) in Gluon: TMA rings, asynchronous wgmma, P kept in registers.

Same numbers as :mod:`.prefill` (the ``tl`` kernel the interpreter checks bit for bit) up to the GPU contract
(docs/spec.md, level 2): the arithmetic of one key tile is :func:`intfa.kernels.tile.attend_tile`'s, operation for
operation, written here with Gluon's explicit layouts::

    t     = f32(Q8 @ K8^T) * k_scale           int32 accumulator of an 8-bit wgmma, magic-number conversion
    m'    = max(m, rowmax(t) * q_row);  alpha = exp2(m - m');  p = exp2(t * q_row - m')
    P8    = low byte of (p * 127 + 1.5 * 2**23)    ("fixed127"; "signed255": p * 255 + 1.5 * 2**23 + 128)
    pv    = f32(P8 @ V8)                       P8 from registers (the A operand), V8 K-major in shared memory
    l     = l * alpha + rowsum;  acc = acc * alpha + pv
    out   = (acc * v_scale) / l_eff            IEEE division

Why Gluon: Triton's ``tl`` leaves the schedule to the compiler. Here the kernel says it: K and V tiles come through
TMA into a ring of shared-memory stages guarded by mbarriers, Q8 @ K8^T and P8 @ V8 are asynchronous warpgroup MMAs
(``IGMMA``) whose waits the kernel places, and the P codes go from the product's accumulator layout to the A-operand
layout of the second product without leaving registers.

Layouts the kernel needs (checked by :func:`unsupported_reason`): Q and K codes (B, H, N, D) with D contiguous and
(batch, head, token) mergeable into one row index; V codes stored sequence-contiguous, the (B, Hkv, Nk, D) view
with ``stride(2) == 1`` (``quantize_int8(..., seq_contiguous=True)`` writes it), because Hopper's 8-bit wgmma reads
both operands K-major and the reduction of P8 @ V8 runs over keys. Rows of a tile past the end of a head read the
next head's codes (or TMA's zero fill past the tensor): their scores are masked to -inf (keys) or their rows never
stored (queries), and their integer products are exact finite numbers, so they change nothing.

Gluon has no interpreter: this kernel is checked on the GPU only (tests/test_hopper_gpu.py), against sim and the
``tl`` kernel. Compile it without a GPU with ``scripts/compile_hopper_offline.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from sim.config import LN2, QuantConfig, n_blocks, qk_scale_factor

from .common import scale_strides, tile_column_sums
from .tile import PV_FIXED127, PV_SIGNED255, pv_mode

#: Head dims of the Gluon kernel (wgmma N of P8 @ V8 and K of Q8 @ K8^T; multiples of 32 for 8-bit wgmma).
HEAD_DIMS = (64, 128)
#: Key tile sizes: the N of Q8 @ K8^T (an 8-bit wgmma N) and the K of P8 @ V8 (a multiple of 32).
BLOCK_NS = (64, 128)


# --- one key tile ---------------------------------------------------------------------------------------------


@gluon.constexpr_function
def _wrap_int32(x):
    """x modulo 2**32 as a signed int32 value (a compile-time constant that int32 arithmetic can subtract)."""
    return (x + 2**31) % 2**32 - 2**31


@gluon.jit
def _tile_scores_softmax(
    qk, q_row, k_scale, m_i, valid,
    MASK: gl.constexpr, K_SCALE_PER_KEY: gl.constexpr, PV_MODE: gl.constexpr, P_TILE_MAX: gl.constexpr,
    NORMALIZER_QUANTIZED: gl.constexpr, BLOCK_N: gl.constexpr,
):
    """Steps 1-4 of attend_tile up to the product: (p8, row_sum, alpha, m_new, r) of one key tile.

    qk (BLOCK_M, BLOCK_N) int32 in the Q8 @ K8^T accumulator layout; q_row, m_i (BLOCK_M,) float32 in its row
    slice; k_scale (BLOCK_N,) float32 in its column slice (K_SCALE_PER_KEY) or a scalar; valid (BLOCK_M, BLOCK_N)
    bool (MASK only). Returns p8 int8 in the accumulator layout, and (BLOCK_M,) float32 vectors: the row sum of
    the tile's P weights (or of p for the float normalizer), alpha, the new running max, and r (P_TILE_MAX only,
    else alpha again, unused).
    """
    # 1. t = f32(qk) * k_scale by the magic-number conversion (exact for |qk| < 2**22: D <= 256). The row max of
    # t scaled once by q_row is the row max of s (q_row > 0, rounding monotonic), and s is never formed: exp2's
    # argument t * q_row - m is one multiply-add.
    t = (qk + 0x4B400000).to(gl.float32, bitcast=True) - 12582912.0
    if K_SCALE_PER_KEY:
        t = t * gl.expand_dims(k_scale, 0)
    else:
        t = t * k_scale
    if MASK:
        t = gl.where(valid, t, float("-inf"))
    tile_max = gl.max(t, 1) * q_row
    # 3. Online softmax; a row with no visible key yet (m' = -inf, masked tiles only) subtracts 0 instead.
    m_new = gl.maximum(m_i, tile_max)
    if MASK:
        m_sub = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_sub = m_new
    alpha = gl.exp2(m_i - m_sub)
    if P_TILE_MAX:
        p_ref = gl.where(tile_max == float("-inf"), 0.0, tile_max)
        r = gl.exp2(tile_max - m_sub)
    else:
        p_ref = m_sub
        r = alpha
    p = gl.exp2(t * gl.expand_dims(q_row, 1) - gl.expand_dims(p_ref, 1))
    # 4. P codes: the low byte of the magic-number sum is the code (fixed127) or the signed code (signed255).
    if PV_MODE == 0:
        bits = (p * 127.0 + 12582912.0).to(gl.int32, bitcast=True)
        bias: gl.constexpr = 0x4B400000
    else:
        bits = (p * 255.0 + 12583040.0).to(gl.int32, bitcast=True)
        bias: gl.constexpr = 0x4B400000 + 128
    p8 = bits.to(gl.int8)
    if NORMALIZER_QUANTIZED:  # the weights' sum: int32 wraps exactly both ways, so the constant is taken mod 2**32
        row_sum = (gl.sum(bits, 1) - _wrap_int32(BLOCK_N * bias)).to(gl.float32)
    else:
        row_sum = gl.sum(p, 1)
    return p8, row_sum, alpha, m_new, r


@gluon.jit
def _tile_fold(
    acc, l_i, pv_int, alpha, row_sum, r, v_scale, pv_offset,
    V_SCALE_PER_TILE: gl.constexpr, PV_MODE: gl.constexpr, P_TILE_MAX: gl.constexpr,
    ROW_LAYOUT: gl.constexpr,
):
    """Step 5 of attend_tile: fold the tile's P8 @ V8 (int32, the accumulator layout of acc) into (acc, l_i).

    pv_offset (BLOCK_D,) int32: 128 * colsum(V8 tile) for signed255 (a scalar 0 otherwise). v_scale (BLOCK_D,)
    float32: this tile's V scales (V_SCALE_PER_TILE). Row vectors arrive in the softmax's row slice and are moved
    to acc's (ROW_LAYOUT; both are the rows of a wgmma accumulator, so the move is free).
    """
    if PV_MODE == 1:
        pv = (pv_int + gl.expand_dims(0x4B400000 + pv_offset, 0)).to(gl.float32, bitcast=True) - 12582912.0
    else:
        pv = (pv_int + 0x4B400000).to(gl.float32, bitcast=True) - 12582912.0
    if V_SCALE_PER_TILE:
        pv = pv * gl.expand_dims(v_scale, 0)
    if P_TILE_MAX:
        row_sum = row_sum * r
        pv = pv * gl.expand_dims(gl.convert_layout(r, ROW_LAYOUT), 1)
    l_i = l_i * alpha + row_sum
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, ROW_LAYOUT), 1) + pv
    return acc, l_i


# --- the kernel -----------------------------------------------------------------------------------------------


@gluon.jit
def _issue_tile_load(desc_k, desc_v, k_smem, v_smem, ready, j, n_tiles, k_row0, v_row0,
                     BLOCK_N: gl.constexpr, NUM_STAGES: gl.constexpr):
    """Start the TMA copies of key tile j (if it exists) into ring slot j % NUM_STAGES; ready[slot] counts bytes."""
    slot = j % NUM_STAGES
    pred = j < n_tiles
    bar = ready.index(slot)
    mbarrier.expect(bar, desc_k.block_type.nbytes + desc_v.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc_k, [k_row0 + j * BLOCK_N, 0], bar, k_smem.index(slot), pred=pred)
    tma.async_copy_global_to_shared(desc_v, [v_row0, j * BLOCK_N], bar, v_smem.index(slot), pred=pred)


@gluon.jit
def _attn_fwd_tiles(
    acc, l_i, m_i, q_smem, k_smem, v_smem, ready, desc_k, desc_v, k_row0, v_row0,
    q_row, offs_m, ks_base, vs_base, vsum_base, stride_ksn, stride_vsn, stride_vsd, stride_vsum_t,
    N_K, tile_lo, tile_hi, n_tiles,
    QK_LAYOUT: gl.constexpr, PV_LAYOUT: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_D: gl.constexpr, NUM_STAGES: gl.constexpr,
    MASK: gl.constexpr, IS_CAUSAL: gl.constexpr, K_SCALE_PER_KEY: gl.constexpr, V_SCALE_PER_TILE: gl.constexpr,
    PV_MODE: gl.constexpr, P_TILE_MAX: gl.constexpr, NORMALIZER_QUANTIZED: gl.constexpr,
):
    """Key tiles [tile_lo, tile_hi) in increasing order; tile j sits in ring slot j % NUM_STAGES.

    Each iteration first refills the slot the previous tile used (tile j + NUM_STAGES - 1), so that NUM_STAGES - 1
    tiles are in flight while this one is computed.
    """
    P_DOT: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=PV_LAYOUT, k_width=4)
    COL_QK: gl.constexpr = gl.SliceLayout(0, QK_LAYOUT)
    COL_PV: gl.constexpr = gl.SliceLayout(0, PV_LAYOUT)
    ROW_PV: gl.constexpr = gl.SliceLayout(1, PV_LAYOUT)
    offs_n = gl.arange(0, BLOCK_N, layout=COL_QK)
    offs_d = gl.arange(0, HEAD_D, layout=COL_PV)
    qk_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.int32, QK_LAYOUT)
    pv_zero = gl.zeros([BLOCK_M, HEAD_D], gl.int32, PV_LAYOUT)
    for j in range(tile_lo, tile_hi):
        _issue_tile_load(desc_k, desc_v, k_smem, v_smem, ready, j + NUM_STAGES - 1, n_tiles, k_row0, v_row0,
                         BLOCK_N, NUM_STAGES)
        cols = j * BLOCK_N + offs_n
        # The tile's small vectors, loaded before the wait so that their latency hides behind the copy and product.
        if K_SCALE_PER_KEY:
            if MASK:
                k_scale = gl.load(ks_base + cols * stride_ksn, mask=cols < N_K, other=1.0)
            else:
                k_scale = gl.load(ks_base + cols * stride_ksn)
        else:
            k_scale = gl.load(ks_base + j * stride_ksn)
        if V_SCALE_PER_TILE:
            v_scale = gl.load(vs_base + j * stride_vsn + offs_d * stride_vsd)
        else:
            v_scale = 0.0
        if PV_MODE == 1:
            pv_offset = 128 * gl.load(vsum_base + j * stride_vsum_t + offs_d)
        else:
            pv_offset = 0

        slot = j % NUM_STAGES
        mbarrier.wait(ready.index(slot), (j // NUM_STAGES) & 1)
        k_tile = k_smem.index(slot)
        qk = warpgroup_mma(q_smem, k_tile.permute((1, 0)), qk_zero, use_acc=False, is_async=True)
        qk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(qk, q_smem, k_tile))

        if MASK:
            valid = gl.expand_dims(cols, 0) < N_K
            if IS_CAUSAL:
                valid = valid & (gl.expand_dims(cols, 0) <= gl.expand_dims(offs_m, 1))
        else:
            valid = None
        p8, row_sum, alpha, m_i, r = _tile_scores_softmax(
            qk, q_row, k_scale, m_i, valid, MASK, K_SCALE_PER_KEY, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED,
            BLOCK_N)

        v_tile = v_smem.index(slot)
        pv = warpgroup_mma(gl.convert_layout(p8, P_DOT), v_tile.permute((1, 0)), pv_zero, use_acc=False,
                           is_async=True)
        pv, _ = warpgroup_mma_wait(num_outstanding=0, deps=(pv, v_tile))
        acc, l_i = _tile_fold(acc, l_i, pv, alpha, row_sum, r, v_scale, pv_offset,
                              V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, ROW_PV)
    return acc, l_i, m_i


@gluon.jit
def _attn_fwd_hopper(
    desc_q, desc_k, desc_v, Q_scale, K_scale, V_scale, V_colsum, Out, Lse,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn,
    stride_vsb, stride_vsh, stride_vsn, stride_vsd,
    stride_vcb, stride_vch, stride_vct,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh,
    H, GROUP_SIZE, N_Q, N_K,
    qk_const, ln2, ln_p_levels,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_D: gl.constexpr, NUM_STAGES: gl.constexpr,
    IS_CAUSAL: gl.constexpr, Q_SCALE_PER_ROW: gl.constexpr, K_SCALE_PER_KEY: gl.constexpr,
    V_SCALE_PER_TILE: gl.constexpr, PV_MODE: gl.constexpr, P_TILE_MAX: gl.constexpr, P_LEVELS: gl.constexpr,
    NORMALIZER_QUANTIZED: gl.constexpr, STORE_LSE: gl.constexpr,
    num_warps: gl.constexpr,
):
    """One program: query tile ``program_id(0)`` of (batch, head) ``program_id(1)``; num_warps / 4 warpgroups.

    Grid (ceil(N_Q / BLOCK_M), B * H). desc_q over (B * H * N_Q, D), desc_k over (B * Hkv * N_K, D), desc_v over
    (B * Hkv * D, N_K) (V stored sequence-contiguous). Scale tensors are indexed with strides, 0 where they
    broadcast (docs/spec.md section 2), as in the tl kernel.
    """
    # wgmma layouts: each warpgroup owns 64 query rows (warps stacked along M); the instruction's N spans the
    # whole tile, the K step of an 8-bit wgmma is 32.
    QK_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, BLOCK_N, 32])
    PV_LAYOUT: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, HEAD_D, 32])
    ROW_QK: gl.constexpr = gl.SliceLayout(1, QK_LAYOUT)
    ROW_PV: gl.constexpr = gl.SliceLayout(1, PV_LAYOUT)
    COL_PV: gl.constexpr = gl.SliceLayout(0, PV_LAYOUT)

    if IS_CAUSAL:  # the longest query tiles first: less idle tail at the end of the grid
        start_m = gl.num_programs(0) - 1 - gl.program_id(0)
    else:
        start_m = gl.program_id(0)
    off_bh = gl.program_id(1)
    b = off_bh // H
    h = off_bh % H
    h_kv = h // GROUP_SIZE
    kv_head = b * (H // GROUP_SIZE) + h_kv

    # Shared memory: Q once, a ring of NUM_STAGES K and V tiles, one "ready" barrier per slot.
    q_smem = gl.allocate_shared_memory(gl.int8, [BLOCK_M, HEAD_D], desc_q.layout)
    k_smem = gl.allocate_shared_memory(gl.int8, [NUM_STAGES, BLOCK_N, HEAD_D], desc_k.layout)
    v_smem = gl.allocate_shared_memory(gl.int8, [NUM_STAGES, HEAD_D, BLOCK_N], desc_v.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_ready, count=1)
    for s in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(s), count=1)
    fence_async_shared()

    # Key tiles to visit, and how many of them need no mask (all keys valid for all rows of the tile).
    if IS_CAUSAL:
        n_tiles = gl.minimum(gl.cdiv(N_K, BLOCK_N), gl.cdiv((start_m + 1) * BLOCK_M, BLOCK_N))
        n_unmasked = gl.minimum((start_m * BLOCK_M + 1) // BLOCK_N, N_K // BLOCK_N)
    else:
        n_tiles = gl.cdiv(N_K, BLOCK_N)
        n_unmasked = N_K // BLOCK_N

    k_row0 = kv_head * N_K
    v_row0 = kv_head * HEAD_D
    mbarrier.expect(q_ready, desc_q.block_type.nbytes)
    tma.async_copy_global_to_shared(desc_q, [off_bh * N_Q + start_m * BLOCK_M, 0], q_ready, q_smem)
    for s in gl.static_range(NUM_STAGES - 1):
        _issue_tile_load(desc_k, desc_v, k_smem, v_smem, ready, s, n_tiles, k_row0, v_row0, BLOCK_N, NUM_STAGES)

    offs_m = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=ROW_QK)
    row_ok = offs_m < N_Q
    qs_base = Q_scale + b * stride_qsb + h * stride_qsh
    if Q_SCALE_PER_ROW:
        q_scale = gl.load(qs_base + offs_m * stride_qsm, mask=row_ok, other=1.0)
    else:  # one scale per query tile ("block": BLOCK_M == block_m) or per tensor (strides 0)
        q_scale = gl.full([BLOCK_M], 1.0, gl.float32, ROW_QK) * gl.load(qs_base + start_m * stride_qsm)
    q_row = q_scale * qk_const  # one float32 multiply, as sim

    ks_base = K_scale + b * stride_ksb + h_kv * stride_ksh
    vs_base = V_scale + b * stride_vsb + h_kv * stride_vsh
    vsum_base = V_colsum + b * stride_vcb + h_kv * stride_vch

    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, ROW_QK)
    l_i = gl.zeros([BLOCK_M], gl.float32, ROW_QK)
    acc = gl.zeros([BLOCK_M, HEAD_D], gl.float32, PV_LAYOUT)
    mbarrier.wait(q_ready, 0)

    acc, l_i, m_i = _attn_fwd_tiles(
        acc, l_i, m_i, q_smem, k_smem, v_smem, ready, desc_k, desc_v, k_row0, v_row0,
        q_row, offs_m, ks_base, vs_base, vsum_base, stride_ksn, stride_vsn, stride_vsd, stride_vct,
        N_K, 0, n_unmasked, n_tiles, QK_LAYOUT, PV_LAYOUT, BLOCK_M, BLOCK_N, HEAD_D, NUM_STAGES,
        False, IS_CAUSAL, K_SCALE_PER_KEY, V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED)
    acc, l_i, m_i = _attn_fwd_tiles(
        acc, l_i, m_i, q_smem, k_smem, v_smem, ready, desc_k, desc_v, k_row0, v_row0,
        q_row, offs_m, ks_base, vs_base, vsum_base, stride_ksn, stride_vsn, stride_vsd, stride_vct,
        N_K, n_unmasked, n_tiles, n_tiles, QK_LAYOUT, PV_LAYOUT, BLOCK_M, BLOCK_N, HEAD_D, NUM_STAGES,
        True, IS_CAUSAL, K_SCALE_PER_KEY, V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED)

    mbarrier.invalidate(q_ready)
    for s in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(ready.index(s))

    # Finish: the normalizer in P-code units; V's scale where it was not applied per tile.
    if NORMALIZER_QUANTIZED:
        l_eff = l_i
    else:
        l_eff = l_i * P_LEVELS
    l_out = gl.expand_dims(gl.convert_layout(l_eff, ROW_PV), 1)
    offs_d = gl.arange(0, HEAD_D, layout=COL_PV)
    if V_SCALE_PER_TILE:
        out = gl.div_rn(acc, gl.full([BLOCK_M, HEAD_D], 1.0, gl.float32, PV_LAYOUT) * l_out)
    else:  # V per tensor (strides 0) or per channel
        v_scale = gl.load(vs_base + offs_d * stride_vsd)
        out = gl.div_rn(acc * gl.expand_dims(v_scale, 0), l_out)
    offs_m_pv = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=ROW_PV)
    o_ptrs = Out + b.to(gl.int64) * stride_ob + h.to(gl.int64) * stride_oh \
        + gl.expand_dims(offs_m_pv, 1) * stride_om + gl.expand_dims(offs_d, 0) * stride_od
    gl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=gl.expand_dims(offs_m_pv < N_Q, 1))
    if STORE_LSE:
        lse = (m_i + gl.log2(l_eff)) * ln2 - ln_p_levels
        gl.store(Lse + b * stride_lb + h * stride_lh + offs_m, lse, mask=row_ok)


# --- host side ------------------------------------------------------------------------------------------------


def _rows_view(x: torch.Tensor) -> torch.Tensor | None:
    """(B, H, N, D) as one (B * H * N, D) matrix without a copy, or None when the strides do not allow it."""
    b, h, n, d = x.shape
    if x.stride(3) != 1 or x.stride(2) != d or x.stride(1) != n * d or x.stride(0) != h * n * d:
        return None
    return x.as_strided((b * h * n, d), (d, 1))


def _channels_view(v: torch.Tensor) -> torch.Tensor | None:
    """Sequence-contiguous V (B, Hkv, Nk, D) as its (B * Hkv * D, Nk) storage, or None when it is not that."""
    b, h, n, d = v.shape
    vt = v.transpose(2, 3)  # (B, Hkv, D, Nk) as stored
    pitch = vt.stride(2)
    if vt.stride(3) != 1 or vt.stride(1) != d * pitch or vt.stride(0) != h * vt.stride(1) or pitch % 16:
        return None
    return vt.as_strided((b * h * d, n), (pitch, 1))


def unsupported_reason(q_codes, k_codes, v, *, config: QuantConfig) -> str | None:
    """Why the Gluon kernel cannot run these operands (None when it can): the dispatcher's test.

    Needs: full INT8 (pv_format "int8"), head dim in HEAD_DIMS, block_n in BLOCK_NS, int8 Q and K with D
    contiguous and mergeable rows, V int8 stored sequence-contiguous with a 16-byte row pitch, 16-byte aligned
    bases (TMA).
    """
    d = q_codes.shape[-1]
    if not config.pv_is_int:
        return "half-INT8 (float P @ V) runs in the tl kernel only"
    if d not in HEAD_DIMS:
        return f"head dim {d} not in {HEAD_DIMS}"
    if config.block_n not in BLOCK_NS:
        return f"block_n {config.block_n} not in {BLOCK_NS}"
    if any(x.dtype != torch.int8 for x in (q_codes, k_codes, v)):
        return "Q, K and V codes must be int8"
    if _rows_view(q_codes) is None or _rows_view(k_codes) is None:
        return "Q and K codes must be contiguous (B, H, N, D)"
    if _channels_view(v) is None:
        return "V codes must be stored sequence-contiguous (stride(2) == 1) with Nk a multiple of 16"
    if any(x.data_ptr() % 16 for x in (q_codes, k_codes, v)):
        return "TMA needs 16-byte aligned Q, K and V"
    return None


def hopper_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor,
    *, config: QuantConfig, scale: float, is_causal: bool, out_dtype: torch.dtype, return_lse: bool,
    block_m: int = 128, num_stages: int = 2, fp_fusion: bool = True,
):
    """Launch the Gluon INT8 prefill kernel on prepared operands (shapes and values already checked).

    Parameters as :func:`intfa.kernels.prefill.prefill_forward` (``scale`` >= 0: the dispatcher negates Q for a
    negative scale); the operands must pass :func:`unsupported_reason`. block_m: 64 (one warpgroup) or 128 (two
    warpgroups of 64 rows sharing each K and V tile); must be ``config.block_m`` for block-scaled Q.
    num_stages: K/V tiles in the shared-memory ring (>= 2). No trace: the integer intermediates are the tl
    kernel's to show.

    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32.
    """
    reason = unsupported_reason(q_codes, k_codes, v, config=config)
    if reason is not None:
        raise ValueError(f"hopper_forward: {reason}")
    if block_m not in (64, 128):
        raise ValueError(f"block_m: expected 64 or 128, got {block_m}")
    if config.q_granularity == "block" and block_m != config.block_m:
        raise ValueError(f"block_m: block-scaled Q needs tiles of config.block_m={config.block_m} rows, got {block_m}")
    if num_stages < 2:
        raise ValueError(f"num_stages: expected at least 2, got {num_stages}")
    cfg = config
    b, hq, nq, d = q_codes.shape
    hkv, nk = k_codes.shape[1], k_codes.shape[2]
    block_n = cfg.block_n
    mode = pv_mode(cfg)
    out = torch.empty((b, hq, nq, d), dtype=out_dtype, device=q_codes.device)
    lse = torch.empty((b, hq, nq), dtype=torch.float32, device=q_codes.device) if return_lse else out
    if mode == PV_SIGNED255:
        v_colsum = tile_column_sums(v, block_n)
        vc_strides = (v_colsum.stride(0), v_colsum.stride(1), v_colsum.stride(2))
    else:
        v_colsum, vc_strides = q_scale, (0, 0, 0)  # unused; any valid pointer

    def descriptor(matrix, block):
        layout = gl.NVMMASharedLayout.get_default_for(block, gl.int8)
        return TensorDescriptor(matrix, list(matrix.shape), list(matrix.stride()), block, layout)

    desc_q = descriptor(_rows_view(q_codes), [block_m, d])
    desc_k = descriptor(_rows_view(k_codes), [block_n, d])
    desc_v = descriptor(_channels_view(v), [d, block_n])
    qs = scale_strides(q_scale, cfg.q_granularity == "tensor")
    ks = scale_strides(k_scale, cfg.k_granularity == "tensor")
    vs = scale_strides(v_scale, cfg.v_granularity == "tensor")
    grid = (triton.cdiv(nq, block_m), b * hq)
    _attn_fwd_hopper[grid](
        desc_q, desc_k, desc_v, q_scale, k_scale, v_scale, v_colsum, out, lse,
        qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2], vs[3], *vc_strides,
        *out.stride(), *((lse.stride(0), lse.stride(1)) if return_lse else (0, 0)),
        hq, hq // hkv, nq, nk,
        # float32 constants exactly as sim's: f32(scale * log2 e), f32(ln 2), f32(ln p_levels).
        float(qk_scale_factor(scale)), float(np.float32(LN2)), float(np.float32(np.log(cfg.p_levels))),
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_D=d, NUM_STAGES=num_stages,
        IS_CAUSAL=bool(is_causal), Q_SCALE_PER_ROW=cfg.q_granularity == "token",
        K_SCALE_PER_KEY=cfg.k_granularity == "token", V_SCALE_PER_TILE=cfg.v_granularity == "block",
        PV_MODE=mode, P_TILE_MAX=cfg.p_scale == "tile_max", P_LEVELS=float(cfg.p_levels),
        NORMALIZER_QUANTIZED=cfg.normalizer == "quantized", STORE_LSE=bool(return_lse),
        enable_fp_fusion=bool(fp_fusion), num_warps=block_m // 16,
    )
    if return_lse:
        return out, lse
    return out


__all__ = ["hopper_forward", "unsupported_reason", "HEAD_DIMS", "BLOCK_NS"]
