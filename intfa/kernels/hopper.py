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

# No "from __future__ import annotations": the aggregates below check their fields against real type annotations.

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
    warpgroup_mma_init,
    warpgroup_mma_wait,
)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from triton.language.core import _aggregate as aggregate  # Gluon's own aggregates use it (nvidia/blackwell/float2)

from sim.config import LN2, QuantConfig, n_blocks, qk_scale_factor

from .common import scale_strides, tile_column_sums, trace_buffers
from .tile import PV_SIGNED255, pv_mode

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
def _int_to_f32(x, meta):
    """int32 -> float32, exactly (|x| < 2**22): the magic-number add (two full-rate instructions, common.int_to_f32's
    arithmetic), or with INT_CVT one conversion instruction (I2FP on sm_90; which is faster is measured)."""
    if meta.INT_CVT:
        return x.to(gl.float32)
    else:
        return (x + 0x4B400000).to(gl.float32, bitcast=True) - 12582912.0


@gluon.jit
def _pack_words(p):
    """P_DOT int8 codes (ROWS, BLOCK_N) -> int32 (ROWS, BLOCK_N // 4): the 32-bit registers of the wgmma A operand
    (four codes each, k_width = 4), without an instruction (an empty inline asm whose first result is tied to the
    packed register; the reshape and splits keep that result). Carrying these words across a loop's back edge
    keeps them in 32-bit registers; Triton carries an int8 tensor byte by byte (unpacked, then repacked).

    Note on loop-carried values: the frontend carries a name only if the loop body's IR value for it differs from
    the one before the loop, so ``prev, cur = cur, nxt`` with ``prev = cur`` before the loop leaves ``prev`` a
    loop invariant. Derive such values from the loop index instead.
    """
    w = gl.inline_asm_elementwise("", "=r,=r,=r,=r,0", [p], dtype=gl.int32, is_pure=True, pack=4)
    w = gl.reshape(w, [w.shape[0], w.shape[1] // 4, 2, 2])
    w, _ = gl.split(w)
    w, _ = gl.split(w)
    return w


@gluon.jit
def _unpack_words(w, layout: gl.constexpr):
    """The inverse of :func:`_pack_words`: int32 words (ROWS, K // 4) -> int8 (ROWS, K) in ``layout`` (P_DOT), whose
    packed registers are the words' own (tied), without an instruction."""
    w = gl.join(w, w)
    w = gl.join(w, w)
    w = gl.convert_layout(gl.reshape(w, [w.shape[0], w.shape[1] * 4]), layout)
    return gl.inline_asm_elementwise("", "=r,0,r,r,r", [w], dtype=gl.int8, is_pure=True, pack=4)


@gluon.jit
def _keep(x):
    """A use of x's registers in place (an empty inline asm, four int8 per register, tied in and out): they stay
    allocated and unchanged up to this point, e.g. the A operand of an asynchronous wgmma up to its wait."""
    return gl.inline_asm_elementwise("", "=r,0", [x], dtype=x.dtype, is_pure=False, pack=4)


@gluon.jit
def _tile_scores_softmax(qk, q_row, k_scale, m_i, valid, meta, MASK: gl.constexpr):
    """Steps 1-4 of attend_tile up to the product: (p8, row_sum, alpha, m_new, r) of one key tile.

    qk (ROWS, BLOCK_N) int32 in the Q8 @ K8^T accumulator layout; q_row, m_i (ROWS,) float32 in its row slice;
    k_scale (BLOCK_N,) float32 in its column slice (K_SCALE_PER_KEY) or a scalar; valid (ROWS, BLOCK_N) bool (MASK
    only). Returns p8 int8 in the accumulator layout, and (ROWS,) float32 vectors: the row sum of the tile's P
    weights (or of p for the float normalizer), alpha, the new running max, and r (P_TILE_MAX only, else alpha
    again, unused).
    """
    # 1. t = f32(qk) * k_scale (exact conversion: |qk| < 2**22 for D <= 256). The row max of t scaled once by q_row
    # is the row max of s (q_row > 0, rounding monotonic), and s is never formed: exp2's argument t * q_row - m is
    # one multiply-add.
    t = _int_to_f32(qk, meta)
    if meta.K_SCALE_PER_KEY:
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
    if meta.P_TILE_MAX:
        p_ref = gl.where(tile_max == float("-inf"), 0.0, tile_max)
        r = gl.exp2(tile_max - m_sub)
    else:
        p_ref = m_sub
        r = alpha
    # The argument is one FMA, up to half an ulp of the score above 0 where sim's is 0: scores of |s| >= 2**15 raise
    # the reference by |m| 2**-23 (one to two ulps), so that no code rounds to levels + 1 and wraps in int8
    # (tile.attend_tile says more).
    p_ref = p_ref + gl.where(gl.abs(p_ref) >= 32768.0, gl.abs(p_ref) * 1.1920928955078125e-07, 0.0)
    p = gl.exp2(t * gl.expand_dims(q_row, 1) - gl.expand_dims(p_ref, 1))
    # 4. P codes: the low byte of the magic-number sum is the code (fixed127) or the signed code (signed255).
    if meta.PV_MODE == 0:
        bits = (p * 127.0 + 12582912.0).to(gl.int32, bitcast=True)
        bias: gl.constexpr = 0x4B400000
    else:
        bits = (p * 255.0 + 12583040.0).to(gl.int32, bitcast=True)
        bias: gl.constexpr = 0x4B400000 + 128
    p8 = bits.to(gl.int8)
    if meta.NORMALIZER_QUANTIZED:  # the weights' sum: int32 wraps exactly both ways, so the constant is taken mod 2**32
        row_sum = (gl.sum(bits, 1) - _wrap_int32(meta.BLOCK_N * bias)).to(gl.float32)
    else:
        row_sum = gl.sum(p, 1)
    return p8, row_sum, alpha, m_new, r


@gluon.jit
def _tile_fold(acc, l_i, pv_int, alpha, row_sum, r, v_scale, pv_offset, meta):
    """Step 5 of attend_tile: fold the tile's P8 @ V8 (int32, the accumulator layout of acc) into (acc, l_i).

    pv_offset (HEAD_D,) int32: 128 * colsum(V8 tile) for signed255 (a scalar 0 otherwise). v_scale (HEAD_D,)
    float32: this tile's V scales (V_SCALE_PER_TILE). Row vectors arrive in the softmax's row slice and are moved
    to acc's (both are the rows of a wgmma accumulator, so the move is free).
    """
    ROW_LAYOUT: gl.constexpr = gl.SliceLayout(1, meta.PV_LAYOUT)
    if meta.PV_MODE == 1:  # |pv_int + pv_offset| <= 255 * 127 * BLOCK_N < 2**22: exact either way
        if meta.INT_CVT:
            pv = (pv_int + gl.expand_dims(pv_offset, 0)).to(gl.float32)
        else:
            pv = (pv_int + gl.expand_dims(0x4B400000 + pv_offset, 0)).to(gl.float32, bitcast=True) - 12582912.0
    else:
        pv = _int_to_f32(pv_int, meta)
    if meta.V_SCALE_PER_TILE:
        pv = pv * gl.expand_dims(v_scale, 0)
    if meta.P_TILE_MAX:
        row_sum = row_sum * r
        pv = pv * gl.expand_dims(gl.convert_layout(r, ROW_LAYOUT), 1)
    l_i = l_i * alpha + row_sum
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, ROW_LAYOUT), 1) + pv
    return acc, l_i


# --- the kernel ---------------------------------------------------------------------------------------------
#
# Roles. A program owns BLOCK_M query rows of one (batch, head) and walks its key tiles in increasing order; tile j
# sits in ring slot j % NUM_STAGES of shared memory, whose "ready" barrier completes when TMA has written it.
#
# - WARP_SPECIALIZE=False: one partition of BLOCK_M / 16 warps loads and computes. A slot is refilled (tile
#   j + NUM_STAGES) as soon as tile j's products are complete.
# - WARP_SPECIALIZE=True: a producer warp (24 registers) issues every TMA copy; BLOCK_M / 64 consumer warpgroups
#   (4 warps each, with the registers the producer gave up) each own 64 of the rows and share every K and V tile. A
#   consumer arrives on the slot's "empty" barrier when its products of the tile are complete; the producer waits
#   for all consumers' arrivals before it refills the slot. Each warpgroup is its own partition, or with
#   COOPERATIVE all of them form one partition of BLOCK_M / 16 warps (one arrival per tile, after a barrier of
#   the partition's warps: the warpgroups move through the tiles in step).
#
# OVERLAP (FlashAttention-3's intra-warpgroup pipelining): the consumer issues Q8 @ K8^T of tile j and P8 @ V8 of
# tile j - 1 together and runs the softmax of tile j while the second product runs; tile j - 1's product is folded
# into the accumulator after it, with tile j - 1's alpha: the order of sim's updates is unchanged.
#
# The compile-time description of a variant (_Meta), the program's place in the problem (_Program) and the ring
# (_Ring) travel as aggregates: Gluon passes them whole to each warp-specialized partition, constexprs included.


@aggregate
class _Meta:
    """Compile-time parameters of one kernel variant, and the wgmma layouts of one consumer's ROWS rows."""

    BLOCK_M: gl.constexpr
    BLOCK_N: gl.constexpr
    HEAD_D: gl.constexpr
    NUM_STAGES: gl.constexpr
    PARTS: gl.constexpr  # consumer partitions: BLOCK_M / 64 with warp specialization, unless COOPERATIVE; else 1
    ROWS: gl.constexpr  # query rows per consumer: BLOCK_M / PARTS
    IS_CAUSAL: gl.constexpr
    Q_SCALE_PER_ROW: gl.constexpr
    K_SCALE_PER_KEY: gl.constexpr
    V_SCALE_PER_TILE: gl.constexpr
    PV_MODE: gl.constexpr
    P_TILE_MAX: gl.constexpr
    P_LEVELS: gl.constexpr
    NORMALIZER_QUANTIZED: gl.constexpr
    STORE_LSE: gl.constexpr
    TRACE: gl.constexpr
    WARP_SPECIALIZE: gl.constexpr
    OVERLAP: gl.constexpr
    COOPERATIVE: gl.constexpr  # warp specialization with one consumer partition for all warpgroups
    INT_CVT: gl.constexpr  # int32 -> float32 by conversion instructions instead of the magic-number add
    QK_LAYOUT: gl.constexpr  # accumulator of Q8 @ K8^T, (ROWS, BLOCK_N)
    PV_LAYOUT: gl.constexpr  # accumulator of P8 @ V8 and of the output, (ROWS, HEAD_D)
    P_DOT: gl.constexpr  # P8 as the register A operand of P8 @ V8

    @gluon.constexpr_function
    def __init__(self, BLOCK_M, BLOCK_N, HEAD_D, NUM_STAGES, IS_CAUSAL, Q_SCALE_PER_ROW, K_SCALE_PER_KEY,
                 V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, P_LEVELS, NORMALIZER_QUANTIZED, STORE_LSE, TRACE,
                 WARP_SPECIALIZE, OVERLAP, COOPERATIVE, INT_CVT):
        names = ("BLOCK_M", "BLOCK_N", "HEAD_D", "NUM_STAGES", "IS_CAUSAL", "Q_SCALE_PER_ROW", "K_SCALE_PER_KEY",
                 "V_SCALE_PER_TILE", "PV_MODE", "P_TILE_MAX", "P_LEVELS", "NORMALIZER_QUANTIZED", "STORE_LSE",
                 "TRACE", "WARP_SPECIALIZE", "OVERLAP", "COOPERATIVE", "INT_CVT")
        values = (BLOCK_M, BLOCK_N, HEAD_D, NUM_STAGES, IS_CAUSAL, Q_SCALE_PER_ROW, K_SCALE_PER_KEY,
                  V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, P_LEVELS, NORMALIZER_QUANTIZED, STORE_LSE, TRACE,
                  WARP_SPECIALIZE, OVERLAP, COOPERATIVE, INT_CVT)
        for name, value in zip(names, values):
            setattr(self, name, gl.constexpr(value))
        parts = BLOCK_M // 64 if WARP_SPECIALIZE and not COOPERATIVE else 1
        rows = BLOCK_M // parts
        self.PARTS = gl.constexpr(parts)
        self.ROWS = gl.constexpr(rows)
        # Warps stacked along the rows (a warpgroup per 64 rows); the instruction's N spans the whole tile; the K
        # step of an 8-bit wgmma is 32, and its register A operand holds 4 consecutive int8 per 32-bit register.
        qk = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[rows // 16, 1], instr_shape=[16, BLOCK_N, 32])
        pv = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[rows // 16, 1], instr_shape=[16, HEAD_D, 32])
        self.QK_LAYOUT = gl.constexpr(qk)
        self.PV_LAYOUT = gl.constexpr(pv)
        self.P_DOT = gl.constexpr(gl.DotOperandLayout(operand_index=0, parent=pv, k_width=4))


@aggregate
class _Program:
    """Where this program sits: its query tile, (batch, head), kv head, and the key tiles it visits."""

    start_m: gl.tensor
    b: gl.tensor
    h: gl.tensor
    h_kv: gl.tensor
    n_tiles: gl.tensor  # key tiles visited
    n_unmasked: gl.tensor  # of which the first n_unmasked need no mask

    @gluon.constexpr_function
    def __init__(self, start_m, b, h, h_kv, n_tiles, n_unmasked):
        self.start_m = start_m
        self.b = b
        self.h = h
        self.h_kv = h_kv
        self.n_tiles = n_tiles
        self.n_unmasked = n_unmasked


@gluon.jit
def _program(H, GROUP_SIZE, N_K, meta):
    """This program's :class:`_Program` (grid (ceil(N_Q / BLOCK_M), B * H)).

    One tile count for the whole program: with two consumer warpgroups under causal masking, the one with the
    first 64 rows also visits the other's last diagonal tile, fully masked for its rows, which is an exact no-op
    (docs/spec.md 3.2).
    """
    if meta.IS_CAUSAL:  # the longest query tiles first: less idle tail at the end of the grid
        start_m = gl.num_programs(0) - 1 - gl.program_id(0)
    else:
        start_m = gl.program_id(0)
    off_bh = gl.program_id(1)
    b = off_bh // H
    h = off_bh % H
    if meta.IS_CAUSAL:
        n_tiles = gl.minimum(gl.cdiv(N_K, meta.BLOCK_N), gl.cdiv((start_m + 1) * meta.BLOCK_M, meta.BLOCK_N))
        n_unmasked = gl.minimum((start_m * meta.BLOCK_M + 1) // meta.BLOCK_N, N_K // meta.BLOCK_N)
    else:
        n_tiles = gl.cdiv(N_K, meta.BLOCK_N)
        n_unmasked = N_K // meta.BLOCK_N
    return _Program(start_m, b, h, h // GROUP_SIZE, n_tiles, n_unmasked)


@aggregate
class _Ring:
    """The shared-memory ring of key tiles: where they come from, the slots, their barriers.

    A slot holds a tile's K and V codes and the small vectors its arithmetic needs: per-key K scales (K per token),
    V block scales (V per block) and 128 * colsum(V8 tile) (signed255 P). Those travel with the tile through TMA so
    that a consumer reads them from shared memory when the arithmetic needs them, instead of holding registers from
    an early global load across the products (32 registers a thread each at D = 128, which the overlapped loop
    cannot spare). Descriptors a configuration does not read are placeholders.
    """

    desc_k: tma.tensor_descriptor  # (B * Hkv * N_K, D) K codes, (BLOCK_N, D) boxes
    desc_v: tma.tensor_descriptor  # (B * Hkv * D, N_K) V codes (sequence-contiguous), (D, BLOCK_N) boxes
    desc_ks: tma.tensor_descriptor  # (B * Hkv * N_K,) per-key K scales, (BLOCK_N,) boxes
    desc_vs: tma.tensor_descriptor  # (B * Hkv * n_kv_tiles * D,) V block scales, (D,) boxes
    desc_vc: tma.tensor_descriptor  # (B * Hkv * n_kv_tiles * D,) int32 V tile column sums, (D,) boxes
    k_smem: gl.shared_memory_descriptor  # (NUM_STAGES, BLOCK_N, D) int8
    v_smem: gl.shared_memory_descriptor  # (NUM_STAGES, D, BLOCK_N) int8
    ks_smem: gl.shared_memory_descriptor  # (NUM_STAGES, BLOCK_N) float32
    vs_smem: gl.shared_memory_descriptor  # (NUM_STAGES, D) float32
    vc_smem: gl.shared_memory_descriptor  # (NUM_STAGES, D) int32
    ready: gl.shared_memory_descriptor  # (NUM_STAGES, 1) mbarriers: the slot's copies have landed
    empty: gl.shared_memory_descriptor  # (NUM_STAGES, 1) mbarriers: every consumer is done with the slot
    kv_head: gl.tensor  # this program's (batch, kv head) slab: b * Hkv + h_kv
    n_k: gl.tensor  # keys per head, N_K
    n_tiles: gl.tensor  # key tiles this program visits

    @gluon.constexpr_function
    def __init__(self, desc_k, desc_v, desc_ks, desc_vs, desc_vc, k_smem, v_smem, ks_smem, vs_smem, vc_smem,
                 ready, empty, kv_head, n_k, n_tiles):
        self.desc_k = desc_k
        self.desc_v = desc_v
        self.desc_ks = desc_ks
        self.desc_vs = desc_vs
        self.desc_vc = desc_vc
        self.k_smem = k_smem
        self.v_smem = v_smem
        self.ks_smem = ks_smem
        self.vs_smem = vs_smem
        self.vc_smem = vc_smem
        self.ready = ready
        self.empty = empty
        self.kv_head = kv_head
        self.n_k = n_k
        self.n_tiles = n_tiles

    @gluon.jit
    def load(self, j, meta):
        """Start the TMA copies of key tile j (if j < n_tiles) into slot j % NUM_STAGES."""
        slot = j % meta.NUM_STAGES
        pred = j < self.n_tiles
        bar = self.ready.index(slot)
        KS_BYTES: gl.constexpr = self.desc_ks.block_type.nbytes if meta.K_SCALE_PER_KEY else 0
        VS_BYTES: gl.constexpr = self.desc_vs.block_type.nbytes if meta.V_SCALE_PER_TILE else 0
        VC_BYTES: gl.constexpr = self.desc_vc.block_type.nbytes if meta.PV_MODE == 1 else 0
        mbarrier.expect(bar, self.desc_k.block_type.nbytes + self.desc_v.block_type.nbytes + KS_BYTES + VS_BYTES
                        + VC_BYTES, pred=pred)
        key0 = self.kv_head * self.n_k + j * meta.BLOCK_N
        tma.async_copy_global_to_shared(self.desc_k, [key0, 0], bar, self.k_smem.index(slot), pred=pred)
        tma.async_copy_global_to_shared(self.desc_v, [self.kv_head * meta.HEAD_D, j * meta.BLOCK_N], bar,
                                        self.v_smem.index(slot), pred=pred)
        if meta.K_SCALE_PER_KEY:
            tma.async_copy_global_to_shared(self.desc_ks, [key0], bar, self.ks_smem.index(slot), pred=pred)
        tile_row = (self.kv_head * gl.cdiv(self.n_k, meta.BLOCK_N) + j) * meta.HEAD_D
        if meta.V_SCALE_PER_TILE:
            tma.async_copy_global_to_shared(self.desc_vs, [tile_row], bar, self.vs_smem.index(slot), pred=pred)
        if meta.PV_MODE == 1:
            tma.async_copy_global_to_shared(self.desc_vc, [tile_row], bar, self.vc_smem.index(slot), pred=pred)

    @gluon.jit
    def wait(self, j, meta):
        """Wait until key tile j has landed; returns its slot."""
        slot = j % meta.NUM_STAGES
        mbarrier.wait(self.ready.index(slot), (j // meta.NUM_STAGES) & 1)
        return slot

    @gluon.jit
    def k_scales(self, slot, k_scale, meta):
        """The tile's K scales: (BLOCK_N,) per key from the slot (keys past N_K there hold another head's scales or
        TMA's zeros: finite, and their scores are masked), else the scalar k_scale."""
        if meta.K_SCALE_PER_KEY:
            return self.ks_smem.index(slot).load(gl.SliceLayout(0, meta.QK_LAYOUT))
        else:
            return k_scale

    @gluon.jit
    def v_vectors(self, slot, meta):
        """The tile's (v_scale, pv_offset): (D,) V block scales (else 0.0) and 128 * colsum(V8 tile) (else 0)."""
        COL: gl.constexpr = gl.SliceLayout(0, meta.PV_LAYOUT)
        if meta.V_SCALE_PER_TILE:
            v_scale = self.vs_smem.index(slot).load(COL)
        else:
            v_scale = 0.0
        if meta.PV_MODE == 1:
            pv_offset = 128 * self.vc_smem.index(slot).load(COL)
        else:
            pv_offset = 0
        return v_scale, pv_offset

    @gluon.jit
    def release(self, j, meta):
        """Tile j's products are complete: hand its slot back (to the producer, or refill it with j + NUM_STAGES)."""
        if meta.WARP_SPECIALIZE:
            mbarrier.arrive(self.empty.index(j % meta.NUM_STAGES), count=1)
        else:
            self.load(j + meta.NUM_STAGES, meta)


@gluon.jit
def _producer(ring, meta):
    """The producer warp: every key tile in order, each into its slot once all consumers have released it."""
    for j in range(ring.n_tiles):
        # The slot's previous tile (j - NUM_STAGES) is released when its barrier completes phase j // S - 1.
        mbarrier.wait(ring.empty.index(j % meta.NUM_STAGES), ((j // meta.NUM_STAGES) & 1) ^ 1,
                      pred=j >= meta.NUM_STAGES)
        ring.load(j, meta)


@gluon.jit
def _k_scale_scalar(j, ks_base, stride_ksn, meta):
    """Tile j's K scale when it is one number (K per block, or per tensor/head with stride 0); 0.0 per key."""
    if meta.K_SCALE_PER_KEY:
        return 0.0
    else:
        return gl.load(ks_base + j * stride_ksn)


@gluon.jit
def _tile_softmax(qk, j, q_row, k_scale, m_i, offs_m, N_K, meta, MASK: gl.constexpr):
    """The masks of tile j (keys past the end; causal: keys after the query), then :func:`_tile_scores_softmax`."""
    if MASK:
        cols = j * meta.BLOCK_N + gl.arange(0, meta.BLOCK_N, layout=gl.SliceLayout(0, meta.QK_LAYOUT))
        valid = gl.expand_dims(cols, 0) < N_K
        if meta.IS_CAUSAL:
            valid = valid & (gl.expand_dims(cols, 0) <= gl.expand_dims(offs_m, 1))
    else:
        valid = None
    return _tile_scores_softmax(qk, q_row, k_scale, m_i, valid, meta, MASK)


@gluon.jit
def _trace_scores(j, qk, p8, offs_m, trace_qk, trace_p, stride_tm, N_Q, N_K, meta):
    """Tile j's Q8 @ K8^T and P codes into the trace (int8 P8 sign-extends to the signed255 code)."""
    cols = j * meta.BLOCK_N + gl.arange(0, meta.BLOCK_N, layout=gl.SliceLayout(0, meta.QK_LAYOUT))
    ok = (gl.expand_dims(offs_m, 1) < N_Q) & (gl.expand_dims(cols, 0) < N_K)
    offsets = gl.expand_dims(offs_m, 1) * stride_tm + gl.expand_dims(cols, 0)
    gl.store(trace_qk + offsets, qk, mask=ok)
    gl.store(trace_p + offsets, p8.to(gl.int32), mask=ok)


@gluon.jit
def _trace_pv(j, pv_int, pv_offset, m_start, trace_pv, stride_tpv_t, stride_tpv_m, N_Q, meta):
    """Tile j's P8 @ V8 into the trace, with the signed255 correction (prefill_forward's format)."""
    rows = m_start + gl.arange(0, meta.ROWS, layout=gl.SliceLayout(1, meta.PV_LAYOUT))
    offs_d = gl.arange(0, meta.HEAD_D, layout=gl.SliceLayout(0, meta.PV_LAYOUT))
    if meta.PV_MODE == 1:
        pv_int = pv_int + gl.expand_dims(pv_offset, 0)
    gl.store(trace_pv + j * stride_tpv_t + gl.expand_dims(rows, 1) * stride_tpv_m + gl.expand_dims(offs_d, 0),
             pv_int, mask=gl.expand_dims(rows < N_Q, 1))


@gluon.jit
def _attn_fwd_tiles(
    acc, l_i, m_i, q_smem, ring, q_row, offs_m, m_start, ks_base, stride_ksn, trace_args, N_Q, N_K,
    tile_lo, tile_hi, meta, MASK: gl.constexpr,
):
    """Key tiles [tile_lo, tile_hi) of this consumer's ROWS query rows, in increasing order: sim's ``_tile_loop``.

    trace_args: (trace_qk, trace_p, trace_pv, stride_tm, stride_tpv_t, stride_tpv_m) (read with TRACE only).
    """
    trace_qk, trace_p, trace_pv, stride_tm, stride_tpv_t, stride_tpv_m = trace_args
    qk_zero = gl.zeros([meta.ROWS, meta.BLOCK_N], gl.int32, meta.QK_LAYOUT)
    pv_zero = gl.zeros([meta.ROWS, meta.HEAD_D], gl.int32, meta.PV_LAYOUT)
    if not meta.OVERLAP:
        for j in range(tile_lo, tile_hi):
            k_scale = _k_scale_scalar(j, ks_base, stride_ksn, meta)
            slot = ring.wait(j, meta)
            k_tile = ring.k_smem.index(slot)
            v_tile = ring.v_smem.index(slot)
            qk = warpgroup_mma(q_smem, k_tile.permute((1, 0)), qk_zero, use_acc=False, is_async=True)
            qk, _, _ = warpgroup_mma_wait(num_outstanding=0, deps=(qk, q_smem, k_tile))
            p8, row_sum, alpha, m_i, r = _tile_softmax(qk, j, q_row, ring.k_scales(slot, k_scale, meta), m_i,
                                                       offs_m, N_K, meta, MASK)
            p_dot = gl.convert_layout(p8, meta.P_DOT)
            pv = warpgroup_mma(p_dot, v_tile.permute((1, 0)), pv_zero, use_acc=False, is_async=True)
            pv, _ = warpgroup_mma_wait(num_outstanding=0, deps=(pv, v_tile))
            v_scale, pv_offset = ring.v_vectors(slot, meta)
            if meta.TRACE:
                _trace_scores(j, qk, p8, offs_m, trace_qk, trace_p, stride_tm, N_Q, N_K, meta)
                _trace_pv(j, pv, pv_offset, m_start, trace_pv, stride_tpv_t, stride_tpv_m, N_Q, meta)
            ring.release(j, meta)
            acc, l_i = _tile_fold(acc, l_i, pv, alpha, row_sum, r, v_scale, pv_offset, meta)
    elif tile_lo < tile_hi:
        # FlashAttention-3's order. Iteration j issues Q8 @ K8^T of tile j and P8 @ V8 of tile j - 1 together, awaits
        # the first, runs the softmax of tile j beside the second, then awaits and folds the second (with tile j - 1's
        # alpha: the order of sim's updates is unchanged).
        # P8 @ V8 reads its A operand (the P codes) from registers until the wait that retires it. PTX forbids writing
        # them before; ptxas keeps them only while the IR names them, and the wait's deps cannot take an 8-bit tensor
        # in Triton 3.6 ("Unexpected bitwidth in WGMMAWaitGroupOp: 8"). So the codes cross the back edge as the int32
        # words of those registers (_pack_words; a loop-carried int8 tensor is split into bytes, other registers),
        # the product reads exactly these words (_unpack_words), and _keep names them after its wait.
        # ptxas retires P8 @ V8 ahead of the softmax's exp2 (behind the K scales' shared load). Pinning the wait after
        # the softmax (a shared store of the row sum before it: 51351a3) kept 64 of 66 exp2 beside the product and ran
        # 7.6% slower on the H100 (docs/hopper.md, "The overlap measured"): the early retirement stays.
        slot = ring.wait(tile_lo, meta)
        k_tile = ring.k_smem.index(slot)
        qk = warpgroup_mma(q_smem, k_tile.permute((1, 0)), qk_zero, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, q_smem, k_tile))[0]
        k_scale = ring.k_scales(slot, _k_scale_scalar(tile_lo, ks_base, stride_ksn, meta), meta)
        p8, row_sum, alpha, m_i, r = _tile_softmax(qk, tile_lo, q_row, k_scale, m_i, offs_m, N_K, meta, MASK)
        if meta.TRACE:
            _trace_scores(tile_lo, qk, p8, offs_m, trace_qk, trace_p, stride_tm, N_Q, N_K, meta)
        p_words = _pack_words(gl.convert_layout(p8, meta.P_DOT))
        for j in range(tile_lo + 1, tile_hi):
            prev_slot = (j - 1) % meta.NUM_STAGES  # computed from j: see the note in _pack_words
            slot = ring.wait(j, meta)
            k_tile = ring.k_smem.index(slot)
            v_prev = ring.v_smem.index(prev_slot)
            p_prev = _unpack_words(p_words, meta.P_DOT)
            # wgmma groups complete in order: one outstanding means Q8 @ K8^T of tile j is done.
            qk = warpgroup_mma(q_smem, k_tile.permute((1, 0)), qk_zero, use_acc=False, is_async=True)
            pv = warpgroup_mma(p_prev, v_prev.permute((1, 0)), pv_zero, use_acc=False, is_async=True)
            qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk, q_smem, k_tile))[0]
            k_scale = ring.k_scales(slot, _k_scale_scalar(j, ks_base, stride_ksn, meta), meta)
            p8, row_sum_j, alpha_j, m_i, r_j = _tile_softmax(qk, j, q_row, k_scale, m_i, offs_m, N_K, meta, MASK)
            if meta.TRACE:
                _trace_scores(j, qk, p8, offs_m, trace_qk, trace_p, stride_tm, N_Q, N_K, meta)
            pv = warpgroup_mma_wait(num_outstanding=0, deps=(pv, v_prev))[0]
            p_prev = _keep(p_prev)  # P8 @ V8 of tile j - 1 read these registers up to the wait above
            p_dot = gl.convert_layout(p8, meta.P_DOT)
            v_scale, pv_offset = ring.v_vectors(prev_slot, meta)
            if meta.TRACE:
                _trace_pv(j - 1, pv, pv_offset, m_start, trace_pv, stride_tpv_t, stride_tpv_m, N_Q, meta)
            acc, l_i = _tile_fold(acc, l_i, pv, alpha, row_sum, r, v_scale, pv_offset, meta)
            ring.release(j - 1, meta)
            p_words = _pack_words(p_dot)
            alpha, row_sum, r = alpha_j, row_sum_j, r_j
        # The last tile's product.
        j = tile_hi - 1
        slot = j % meta.NUM_STAGES
        v_tile = ring.v_smem.index(slot)
        pv = warpgroup_mma(_unpack_words(p_words, meta.P_DOT), v_tile.permute((1, 0)), pv_zero, use_acc=False,
                           is_async=True)
        pv = warpgroup_mma_wait(num_outstanding=0, deps=(pv, v_tile))[0]
        v_scale, pv_offset = ring.v_vectors(slot, meta)
        if meta.TRACE:
            _trace_pv(j, pv, pv_offset, m_start, trace_pv, stride_tpv_t, stride_tpv_m, N_Q, meta)
        acc, l_i = _tile_fold(acc, l_i, pv, alpha, row_sum, r, v_scale, pv_offset, meta)
        ring.release(j, meta)
    return acc, l_i, m_i


@gluon.jit
def _consumer(part, meta, prog, ring, desc_q, q_smem, q_ready, pointers, strides, H, N_Q, N_K, constants):
    """Query rows [part * ROWS, (part + 1) * ROWS) of the program's tile: Q load, the key tiles, the finish.

    pointers: (Q_scale, K_scale, V_scale, Out, Lse, Trace_qk, Trace_p, Trace_pv); strides: the kernel's scale,
    output, lse and trace strides in its argument order; constants: (qk_const, ln2, ln_p_levels).
    """
    Q_scale, K_scale, V_scale, Out, Lse, Trace_qk, Trace_p, Trace_pv = pointers
    (stride_qsb, stride_qsh, stride_qsm, stride_ksb, stride_ksh, stride_ksn,
     stride_vsb, stride_vsh, stride_vsd,
     stride_ob, stride_oh, stride_om, stride_od, stride_lb, stride_lh,
     stride_tb, stride_th, stride_tm, stride_tpv_b, stride_tpv_h, stride_tpv_t, stride_tpv_m) = strides
    qk_const, ln2, ln_p_levels = constants
    ROW_QK: gl.constexpr = gl.SliceLayout(1, meta.QK_LAYOUT)
    ROW_PV: gl.constexpr = gl.SliceLayout(1, meta.PV_LAYOUT)
    COL_PV: gl.constexpr = gl.SliceLayout(0, meta.PV_LAYOUT)
    b, h, h_kv = prog.b, prog.h, prog.h_kv
    m_start = prog.start_m * meta.BLOCK_M + part * meta.ROWS

    q_part = q_smem.index(part)
    q_bar = q_ready.index(part)
    mbarrier.expect(q_bar, desc_q.block_type.nbytes)
    tma.async_copy_global_to_shared(desc_q, [(b * H + h) * N_Q + m_start, 0], q_bar, q_part)
    if not meta.WARP_SPECIALIZE:  # this partition is its own producer: the first NUM_STAGES tiles
        for s in gl.static_range(meta.NUM_STAGES):
            ring.load(s, meta)

    offs_m = m_start + gl.arange(0, meta.ROWS, layout=ROW_QK)
    row_ok = offs_m < N_Q
    qs_base = Q_scale + b * stride_qsb + h * stride_qsh
    if meta.Q_SCALE_PER_ROW:
        q_scale = gl.load(qs_base + offs_m * stride_qsm, mask=row_ok, other=1.0)
    else:  # one scale per query tile ("block": BLOCK_M == block_m) or per tensor (strides 0)
        q_scale = gl.full([meta.ROWS], 1.0, gl.float32, ROW_QK) * gl.load(qs_base + prog.start_m * stride_qsm)
    q_row = q_scale * qk_const  # one float32 multiply, as sim
    ks_base = K_scale + b * stride_ksb + h_kv * stride_ksh
    trace_args = (Trace_qk + b * stride_tb + h * stride_th, Trace_p + b * stride_tb + h * stride_th,
                  Trace_pv + b * stride_tpv_b + h * stride_tpv_h, stride_tm, stride_tpv_t, stride_tpv_m)

    m_i = gl.full([meta.ROWS], float("-inf"), gl.float32, ROW_QK)
    l_i = gl.zeros([meta.ROWS], gl.float32, ROW_QK)
    acc = gl.zeros([meta.ROWS, meta.HEAD_D], gl.float32, meta.PV_LAYOUT)
    mbarrier.wait(q_bar, 0)

    # Stage 1: tiles that need no mask. Stage 2: the tail tile and the diagonal tiles, masked.
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q_part, ring, q_row, offs_m, m_start, ks_base, stride_ksn, trace_args,
                                    N_Q, N_K, 0, prog.n_unmasked, meta, False)
    acc, l_i, m_i = _attn_fwd_tiles(acc, l_i, m_i, q_part, ring, q_row, offs_m, m_start, ks_base, stride_ksn, trace_args,
                                    N_Q, N_K, prog.n_unmasked, prog.n_tiles, meta, True)

    # Finish: the normalizer in P-code units; V's scale where it was not applied per tile.
    if meta.NORMALIZER_QUANTIZED:
        l_eff = l_i
    else:
        l_eff = l_i * meta.P_LEVELS
    l_out = gl.expand_dims(gl.convert_layout(l_eff, ROW_PV), 1)
    offs_d = gl.arange(0, meta.HEAD_D, layout=COL_PV)
    if meta.V_SCALE_PER_TILE:
        out = gl.div_rn(acc, gl.full([meta.ROWS, meta.HEAD_D], 1.0, gl.float32, meta.PV_LAYOUT) * l_out)
    else:  # V per tensor (strides 0) or per channel
        v_scale = gl.load(V_scale + b * stride_vsb + h_kv * stride_vsh + offs_d * stride_vsd)
        out = gl.div_rn(acc * gl.expand_dims(v_scale, 0), l_out)
    offs_m_pv = m_start + gl.arange(0, meta.ROWS, layout=ROW_PV)
    o_ptrs = Out + b.to(gl.int64) * stride_ob + h.to(gl.int64) * stride_oh \
        + gl.expand_dims(offs_m_pv, 1) * stride_om + gl.expand_dims(offs_d, 0) * stride_od
    gl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=gl.expand_dims(offs_m_pv < N_Q, 1))
    if meta.STORE_LSE:
        lse = (m_i + gl.log2(l_eff)) * ln2 - ln_p_levels
        gl.store(Lse + b * stride_lb + h * stride_lh + offs_m, lse, mask=row_ok)


@gluon.jit
def _attn_fwd_hopper(
    desc_q, desc_k, desc_v, desc_ks, desc_vs, desc_vc, Q_scale, K_scale, V_scale, Out, Lse, Trace_qk, Trace_p,
    Trace_pv,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn,
    stride_vsb, stride_vsh, stride_vsd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh,
    stride_tb, stride_th, stride_tm, stride_tpv_b, stride_tpv_h, stride_tpv_t, stride_tpv_m,
    H, GROUP_SIZE, N_Q, N_K,
    qk_const, ln2, ln_p_levels,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_D: gl.constexpr, NUM_STAGES: gl.constexpr,
    IS_CAUSAL: gl.constexpr, Q_SCALE_PER_ROW: gl.constexpr, K_SCALE_PER_KEY: gl.constexpr,
    V_SCALE_PER_TILE: gl.constexpr, PV_MODE: gl.constexpr, P_TILE_MAX: gl.constexpr, P_LEVELS: gl.constexpr,
    NORMALIZER_QUANTIZED: gl.constexpr, STORE_LSE: gl.constexpr, TRACE: gl.constexpr,
    WARP_SPECIALIZE: gl.constexpr, OVERLAP: gl.constexpr, COOPERATIVE: gl.constexpr, INT_CVT: gl.constexpr,
    CONSUMER_REGS: gl.constexpr,
):
    """One program: query tile ``program_id(0)`` of (batch, head) ``program_id(1)``.

    Grid (ceil(N_Q / BLOCK_M), B * H). desc_q over (B * H * N_Q, D) with (ROWS, D) boxes, desc_k over
    (B * Hkv * N_K, D), desc_v over (B * Hkv * D, N_K) (V stored sequence-contiguous); desc_ks, desc_vs, desc_vc over
    the per-key K scales, the V block scales and the signed255 V tile column sums, flattened (placeholders where the
    configuration has none: see :class:`_Ring`). Other scales are indexed with strides, 0 where they broadcast
    (docs/spec.md section 2), as in the tl kernel. Query head h reads kv head
    h // GROUP_SIZE. Launched with BLOCK_M / 16 warps in one partition (also with COOPERATIVE), or 4 (the first
    consumer warpgroup, the default partition) with WARP_SPECIALIZE.
    """
    meta = _Meta(BLOCK_M, BLOCK_N, HEAD_D, NUM_STAGES, IS_CAUSAL, Q_SCALE_PER_ROW, K_SCALE_PER_KEY,
                 V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, P_LEVELS, NORMALIZER_QUANTIZED, STORE_LSE, TRACE,
                 WARP_SPECIALIZE, OVERLAP, COOPERATIVE, INT_CVT)
    prog = _program(H, GROUP_SIZE, N_K, meta)
    kv_head = prog.b * (H // GROUP_SIZE) + prog.h_kv
    q_smem = gl.allocate_shared_memory(gl.int8, [meta.PARTS, meta.ROWS, HEAD_D], desc_q.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [meta.PARTS, 1], mbarrier.MBarrierLayout())
    VECTOR: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)
    ring = _Ring(desc_k, desc_v, desc_ks, desc_vs, desc_vc,
                 gl.allocate_shared_memory(gl.int8, [NUM_STAGES, BLOCK_N, HEAD_D], desc_k.layout),
                 gl.allocate_shared_memory(gl.int8, [NUM_STAGES, HEAD_D, BLOCK_N], desc_v.layout),
                 gl.allocate_shared_memory(gl.float32, [NUM_STAGES, BLOCK_N], VECTOR),
                 gl.allocate_shared_memory(gl.float32, [NUM_STAGES, HEAD_D], VECTOR),
                 gl.allocate_shared_memory(gl.int32, [NUM_STAGES, HEAD_D], VECTOR),
                 gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout()),
                 gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout()),
                 kv_head, N_K, prog.n_tiles)
    for p in gl.static_range(meta.PARTS):
        mbarrier.init(q_ready.index(p), count=1)
    for s in gl.static_range(NUM_STAGES):
        mbarrier.init(ring.ready.index(s), count=1)
        mbarrier.init(ring.empty.index(s), count=meta.PARTS)  # one arrival per consumer partition
    fence_async_shared()

    pointers = (Q_scale, K_scale, V_scale, Out, Lse, Trace_qk, Trace_p, Trace_pv)
    strides = (stride_qsb, stride_qsh, stride_qsm, stride_ksb, stride_ksh, stride_ksn,
               stride_vsb, stride_vsh, stride_vsd,
               stride_ob, stride_oh, stride_om, stride_od, stride_lb, stride_lh,
               stride_tb, stride_th, stride_tm, stride_tpv_b, stride_tpv_h, stride_tpv_t, stride_tpv_m)
    constants = (qk_const, ln2, ln_p_levels)
    if not WARP_SPECIALIZE:
        _consumer(0, meta, prog, ring, desc_q, q_smem, q_ready, pointers, strides, H, N_Q, N_K, constants)
    elif meta.PARTS == 2:
        gl.warp_specialize([
            (_consumer, (0, meta, prog, ring, desc_q, q_smem, q_ready, pointers, strides, H, N_Q, N_K, constants)),
            (_consumer, (1, meta, prog, ring, desc_q, q_smem, q_ready, pointers, strides, H, N_Q, N_K, constants)),
            (_producer, (ring, meta)),
        ], [4, 1], [CONSUMER_REGS, 24])
    else:
        gl.warp_specialize([
            (_consumer, (0, meta, prog, ring, desc_q, q_smem, q_ready, pointers, strides, H, N_Q, N_K, constants)),
            (_producer, (ring, meta)),
        ], [1], [24])

    for p in gl.static_range(meta.PARTS):
        mbarrier.invalidate(q_ready.index(p))
    for s in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(ring.ready.index(s))
        mbarrier.invalidate(ring.empty.index(s))


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


def _vector_descriptor(x: torch.Tensor, box: int) -> TensorDescriptor:
    """A TMA descriptor over x's elements in (B, H, N, ...) order as one row, in boxes of ``box`` elements.

    Copies x when it is not contiguous or not 16-byte aligned (scales and column sums are small).
    """
    flat = x.contiguous().reshape(-1)
    if flat.data_ptr() % 16:
        flat = flat.clone()
    layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=8 * flat.element_size(), rank=1)
    return TensorDescriptor(flat, [flat.numel()], [1], [box], layout)


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
    trace: bool = False, block_m: int = 128, num_stages: int = 2, warp_specialize: bool = False,
    overlap: bool = False, cooperative: bool = False, int_cvt: bool = False, consumer_regs: int = 240,
    fp_fusion: bool = True,
):
    """Launch the Gluon INT8 prefill kernel on prepared operands (shapes and values already checked).

    Parameters as :func:`intfa.kernels.prefill.prefill_forward` (``scale`` >= 0: the dispatcher negates Q for a
    negative one; ``trace`` returns the same dict); the operands must pass :func:`unsupported_reason`.

    block_m : 64 or 128 query rows per program: one or two warpgroups of 64 rows sharing each K and V tile. Must be
        ``config.block_m`` for block-scaled Q.
    num_stages : K/V tiles in the shared-memory ring (>= 2; >= 3 lets the loads run ahead of an overlapped loop).
    warp_specialize : a producer warp issues the TMA copies; each 64-row warpgroup is its own consumer partition
        with ``consumer_regs`` registers per thread (setmaxnreg; the producer keeps 24).
    overlap : issue tile j's Q8 @ K8^T with tile j - 1's P8 @ V8 and run tile j's softmax while the latter runs.
    cooperative : with warp_specialize, all consumer warpgroups in one partition (the default one) instead of one
        partition each.
    int_cvt : convert the int32 products to float32 with conversion instructions (I2FP) instead of the magic-number
        add (same values; one instruction instead of two, at a throughput to be measured).
    fp_fusion : allow fused multiply-adds (as the tl kernel compiled; level 2 of the contract).

    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32; with ``trace`` the trace
    dict last.
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
    device = q_codes.device
    mode = pv_mode(cfg)
    out = torch.empty((b, hq, nq, d), dtype=out_dtype, device=device)
    lse = torch.empty((b, hq, nq), dtype=torch.float32, device=device) if return_lse else out
    trace_qk, trace_p, trace_pv, t_strides = trace_buffers(trace, b, hq, nq, n_blocks(nk, block_n), block_n, d, out)

    def descriptor(matrix, block):
        layout = gl.NVMMASharedLayout.get_default_for(block, gl.int8)
        return TensorDescriptor(matrix, list(matrix.shape), list(matrix.stride()), block, layout)

    split = warp_specialize and not cooperative
    rows = 64 if split else block_m  # rows per consumer partition
    desc_q = descriptor(_rows_view(q_codes), [rows, d])
    desc_k = descriptor(_rows_view(k_codes), [block_n, d])
    desc_v = descriptor(_channels_view(v), [d, block_n])
    # The small per-tile vectors the ring carries (see _Ring), flattened; the K scales' descriptor stands in for
    # the ones a configuration does not read.
    desc_ks = _vector_descriptor(k_scale, block_n)
    desc_vs = _vector_descriptor(v_scale, d) if cfg.v_granularity == "block" else desc_ks
    desc_vc = _vector_descriptor(tile_column_sums(v, block_n), d) if mode == PV_SIGNED255 else desc_ks
    qs = scale_strides(q_scale, cfg.q_granularity == "tensor")
    ks = scale_strides(k_scale, cfg.k_granularity == "tensor")
    vs = scale_strides(v_scale, cfg.v_granularity == "tensor")
    grid = (triton.cdiv(nq, block_m), b * hq)
    _attn_fwd_hopper[grid](
        desc_q, desc_k, desc_v, desc_ks, desc_vs, desc_vc, q_scale, k_scale, v_scale, out, lse,
        trace_qk, trace_p, trace_pv,
        qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[3],
        *out.stride(), *((lse.stride(0), lse.stride(1)) if return_lse else (0, 0)), *t_strides,
        hq, hq // hkv, nq, nk,
        # float32 constants exactly as sim's: f32(scale * log2 e), f32(ln 2), f32(ln p_levels).
        float(qk_scale_factor(scale)), float(np.float32(LN2)), float(np.float32(np.log(cfg.p_levels))),
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_D=d, NUM_STAGES=num_stages,
        IS_CAUSAL=bool(is_causal), Q_SCALE_PER_ROW=cfg.q_granularity == "token",
        K_SCALE_PER_KEY=cfg.k_granularity == "token", V_SCALE_PER_TILE=cfg.v_granularity == "block",
        PV_MODE=mode, P_TILE_MAX=cfg.p_scale == "tile_max", P_LEVELS=float(cfg.p_levels),
        NORMALIZER_QUANTIZED=cfg.normalizer == "quantized", STORE_LSE=bool(return_lse), TRACE=bool(trace),
        WARP_SPECIALIZE=bool(warp_specialize), OVERLAP=bool(overlap), COOPERATIVE=bool(cooperative),
        INT_CVT=bool(int_cvt),
        CONSUMER_REGS=consumer_regs,
        enable_fp_fusion=bool(fp_fusion), num_warps=4 if split else block_m // 16,
    )
    result = (out,)
    if return_lse:
        result += (lse,)
    if trace:
        result += ({"qk": trace_qk, "p_codes": trace_p, "pv": trace_pv},)
    return result[0] if len(result) == 1 else result


__all__ = ["BLOCK_NS", "HEAD_DIMS", "hopper_forward", "unsupported_reason"]
