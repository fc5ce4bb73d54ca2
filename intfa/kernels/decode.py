"""The INT8 decode kernel: a few queries against a long key cache (contiguous or paged), keys split across programs.

Decoding reads the whole K/V cache for one to a few queries per sequence: it is bound by memory, and one program
per (sequence, head) leaves most of the GPU idle at small batch. This is flash-decoding, in two stages:

1. :func:`_decode_split`: one program per (sequence, kv head, split, row tile). The query heads of a GQA group
   are packed into the rows of one tile, row ``r = query * group + head in group``, so each K and V tile is read
   once per group, not once per query head. The program walks its split's key tiles (:func:`_decode_tiles`,
   whose arithmetic is :func:`intfa.kernels.tile.attend_tile`) and writes its partial state (m, l, acc, float32)
   to scratch; with one split it finishes in place instead (no scratch, no second launch).
2. :func:`_decode_combine`: one program per (sequence, kv head, row) merges the splits in the spec's order
   (max first, then the sums in split order: docs/spec.md 3.6) and finishes (:func:`.tile.finish_state`).

Splits, per-sequence lengths, causal alignment and paged caches are defined in sim (:mod:`sim.decode`); under
``TRITON_INTERPRET=1`` this kernel reproduces ``sim.attention_int8(..., kv_splits=...)`` to the bit, and with
``kv_splits=1`` it gives exactly the prefill kernel's numbers. Which kernel runs, the split count and the launch
parameters are :mod:`intfa.kernels.dispatch`'s choice.

Layouts. Contiguous cache: K and V (B, Hkv, Nk, D), any strides. Paged cache: K and V (num_pages, Hkv, page_size,
D), any strides, page_size a multiple of block_n (a key tile never straddles pages); the block table (B,
max_pages) int32 gives each sequence's pages in key order. In both, V with the sequence contiguous (stride 1 along
keys, e.g. the transpose of a (pages, Hkv, D, page_size) buffer) is told to the compiler: Hopper's 8-bit MMA wants
V K-major for P8 @ V8. Per-key scales (K "token", "block"; V "block") are addressed like the codes (by page, or by
sequence); V's per-channel scale by sequence.

Safety without host checks (``validate=False`` on CUDA): a block-table entry outside [0, num_pages) or a length
outside [0, max_pages * page_size] is never followed: the kernel reads page 0 instead and marks the sequence's
normalizer NaN, so its output is NaN, never another sequence's data and never an out-of-bounds read.

The signed255 P codes need ``128 * colsum(V8 tile)`` (spec 3.3); the prefill kernel precomputes it for the whole
V, which here would be a second read of the cache, so each program sums its V tile in registers (exact integers).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from sim.config import LN2, QuantConfig, n_blocks, qk_scale_factor

from ..runtime import interpreted
from .common import scale_strides, trace_buffers
from .tile import PV_BF16, attend_tile, finish_state, load_k_scale, load_kv_codes, pv_mode, saturate

INTERPRETED = interpreted()

#: Splits the combine kernel reads at once (one unrolled chunk: their loads in flight together).
COMBINE_SPLIT_CHUNK = 16
#: Triton's limit on the second and third grid dimensions (splits, row tiles).
_GRID_YZ_MAX = 65535


@triton.jit
def _decode_tile_product(
    j, source, strides,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PAGE_TILES: tl.constexpr, PAGED: tl.constexpr,
    MASK: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr,
):
    """Key tile j's loads and its Q8 @ K8^T: (qk, v, k_scale, v_scale, pv_offset, valid, cols, poison).

    qk (BLOCK_M, BLOCK_N) int32; v (BLOCK_N, BLOCK_D) V's codes (int8; float16/bfloat16 for half-INT8); k_scale
    (BLOCK_N,) float32 per key, else a float32 scalar; v_scale (BLOCK_D,) float32 with V_SCALE_PER_TILE;
    pv_offset (BLOCK_D,) int32 (128 * colsum(V8 tile) for signed255, else 0); valid (BLOCK_M, BLOCK_N) bool with
    MASK; cols (BLOCK_N,) int32 key positions; poison a float32 scalar with PAGED.

    Tile j holds the sequence's keys j * BLOCK_N + t. Paged, they lie in page ``table_row[j // PAGE_TILES]`` at
    slots ``(j % PAGE_TILES) * BLOCK_N + t``; contiguous, in ``k_seq`` at those positions. ``MASK`` applies the
    length (key >= kv_len) and, with ``IS_CAUSAL``, each row's causal limit (key <= q_pos of the row): ``valid``.
    ``poison`` is 0.0, or NaN where the tile's page-table entry is invalid (it is never
    followed: page 0 is read instead), to be added to the normalizer. Without MASK, V_SCALE_PER_TILE or PAGED,
    ``valid``, ``v_scale`` and ``poison`` are placeholders (a jit function cannot return None).

    source: (q, q_pos, offs_n, offs_d, d_ok, k_seq, v_seq, ks_seq, vs_seq, table_row, kv_len, NUM_PAGES), the
    sequence's operands and sizes; strides: (stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
    stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd).
    """
    q, q_pos, offs_n, offs_d, d_ok, k_seq, v_seq, ks_seq, vs_seq, table_row, kv_len, NUM_PAGES = source
    (stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
     stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd) = strides
    cols = j * BLOCK_N + offs_n  # key positions in the sequence
    if PAGED:
        entry = tl.load(table_row + j // PAGE_TILES)
        page_ok = (entry >= 0) & (entry < NUM_PAGES)
        page = tl.where(page_ok, entry, 0).to(tl.int64)  # an invalid entry is never followed...
        poison = tl.where(page_ok, 0.0, float("nan"))  # ...and poisons the sequence's result instead
        slots = (j % PAGE_TILES) * BLOCK_N + offs_n
        tile_in_page = j % PAGE_TILES
        k_tile = k_seq + page * stride_kp
        v_tile = v_seq + page * stride_vp
        ks_tile = ks_seq + page * stride_ksp
        vs_tile = vs_seq + page * stride_vsp
    else:
        poison = 0.0  # unused
        slots = cols
        tile_in_page = j
        k_tile = k_seq
        v_tile = v_seq
        ks_tile = ks_seq
        vs_tile = vs_seq

    kt, v = load_kv_codes(k_tile, v_tile, slots, cols, kv_len, offs_d, d_ok, stride_kn, stride_kd, stride_vn,
                          stride_vd, MASK, PAD_D, V_SEQ_CONTIGUOUS)

    # The tile's small vectors before the products, so that their latency hides behind Q8 @ K8^T.
    k_scale = load_k_scale(ks_tile, slots, cols, kv_len, tile_in_page, stride_ksn, MASK, K_SCALE_PER_KEY)
    if V_SCALE_PER_TILE:
        v_scale = tl.load(vs_tile + tile_in_page * stride_vsn + offs_d * stride_vsd, mask=d_ok, other=0.0)
    else:
        v_scale = 0.0  # unused (a jit function returns no None)
    if PV_MODE == 1:  # signed255: 128 * colsum(V8 tile), summed here from the loaded (masked) tile
        pv_offset = 128 * tl.sum(v.to(tl.int32), 0)
    else:
        pv_offset = tl.zeros([BLOCK_D], tl.int32)

    qk = tl.dot(q, kt, out_dtype=tl.int32)
    if MASK:
        valid = (cols < kv_len)[None, :]
        if IS_CAUSAL:
            valid = valid & (cols[None, :] <= q_pos[:, None])
    else:
        valid = 0  # unused
    return qk, v, k_scale, v_scale, pv_offset, valid, cols, poison


@triton.jit
def _decode_tile_fold(
    acc, l_i, m_i, j, tile, rows,
    BLOCK_N: tl.constexpr, PAGED: tl.constexpr, MASK: tl.constexpr, K_SCALE_PER_KEY: tl.constexpr,
    V_SCALE_PER_TILE: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr, TRACE: tl.constexpr,
):
    """Fold key tile j (``tile``: its :func:`_decode_tile_product`) into (acc, l_i, m_i): attend_tile, and its trace.

    rows: (q_row, offs_d, d_ok, row_ok, trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t, kv_len), the
    program's rows and where their trace goes.
    """
    qk, v, k_scale, v_scale, pv_offset, valid, cols, poison = tile
    q_row, offs_d, d_ok, row_ok, trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t, kv_len = rows
    if PAGED:
        l_i = l_i + poison
    if not MASK:
        valid = None
    if not V_SCALE_PER_TILE:
        v_scale = None
    acc, l_i, m_i, p_codes, pv_trace = attend_tile(
        acc, l_i, m_i, qk, q_row, k_scale, v, v_scale, pv_offset, valid,
        BLOCK_N, MASK, K_SCALE_PER_KEY, V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32,
        FMA_GUARD,
    )
    if TRACE:  # this tile's integer intermediates, at (sequence, query head, query, key position)
        t_mask = row_ok[:, None] & (cols < kv_len)[None, :]
        tl.store(trace_qk_rows[:, None] + cols[None, :], qk, mask=t_mask)
        tl.store(trace_p_rows[:, None] + cols[None, :], p_codes, mask=t_mask)
        tl.store(trace_pv_rows[:, None] + j * stride_tpv_t + offs_d[None, :], pv_trace,
                 mask=row_ok[:, None] & d_ok[None, :])
    return acc, l_i, m_i


@triton.jit
def _decode_tiles(
    acc, l_i, m_i,
    q, q_row, q_pos, offs_n, offs_d, row_ok,
    k_seq, v_seq, ks_seq, vs_seq, table_row,
    stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
    stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd,
    trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t,
    kv_len, NUM_PAGES, HEAD_DIM, tile_lo, tile_hi,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PAGE_TILES: tl.constexpr, PAGED: tl.constexpr,
    MASK: tl.constexpr, IS_CAUSAL: tl.constexpr, PAD_D: tl.constexpr,
    K_SCALE_PER_KEY: tl.constexpr, V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr, TRACE: tl.constexpr, TILES_IN_FLIGHT: tl.constexpr,
):
    """Key tiles [tile_lo, tile_hi) of one sequence in increasing order, folded into (acc, l_i, m_i).

    TILES_IN_FLIGHT = 2: each iteration takes two tiles, both tiles' loads and Q8 @ K8^T first, then the two
    folds in order (an odd count ends with one tile alone). The folds, and so the numbers, are those of one tile
    at a time; the second tile's product is independent of the first tile's softmax, so a program of few rows
    (decode) has more than one chain of latencies to issue from.
    """
    d_ok = offs_d < HEAD_DIM
    source = (q, q_pos, offs_n, offs_d, d_ok, k_seq, v_seq, ks_seq, vs_seq, table_row, kv_len, NUM_PAGES)
    strides = (stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
               stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd)
    rows = (q_row, offs_d, d_ok, row_ok, trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t, kv_len)
    lo = tile_lo
    if TILES_IN_FLIGHT == 2:
        for jj in range(0, (tile_hi - tile_lo) // 2):
            j = tile_lo + 2 * jj
            first = _decode_tile_product(j, source, strides, BLOCK_N, BLOCK_D, PAGE_TILES, PAGED, MASK, IS_CAUSAL,
                                         PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS, PV_MODE)
            second = _decode_tile_product(j + 1, source, strides, BLOCK_N, BLOCK_D, PAGE_TILES, PAGED, MASK,
                                          IS_CAUSAL, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS,
                                          PV_MODE)
            acc, l_i, m_i = _decode_tile_fold(acc, l_i, m_i, j, first, rows, BLOCK_N, PAGED, MASK, K_SCALE_PER_KEY,
                                              V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED,
                                              PV_DOT_F32, FMA_GUARD, TRACE)
            acc, l_i, m_i = _decode_tile_fold(acc, l_i, m_i, j + 1, second, rows, BLOCK_N, PAGED, MASK,
                                              K_SCALE_PER_KEY, V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX,
                                              NORMALIZER_QUANTIZED, PV_DOT_F32, FMA_GUARD, TRACE)
        lo = tile_hi - (tile_hi - tile_lo) % 2
    for j in range(lo, tile_hi):
        tile = _decode_tile_product(j, source, strides, BLOCK_N, BLOCK_D, PAGE_TILES, PAGED, MASK, IS_CAUSAL, PAD_D,
                                    K_SCALE_PER_KEY, V_SCALE_PER_TILE, V_SEQ_CONTIGUOUS, PV_MODE)
        acc, l_i, m_i = _decode_tile_fold(acc, l_i, m_i, j, tile, rows, BLOCK_N, PAGED, MASK, K_SCALE_PER_KEY,
                                          V_SCALE_PER_TILE, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32,
                                          FMA_GUARD, TRACE)
    return acc, l_i, m_i


@triton.jit
def _decode_split(
    Q, K, V, Q_scale, K_scale, V_scale, Block_table, Seq_lens, Out, Lse, Part_m, Part_l, Part_acc,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kp, stride_kh, stride_kn, stride_kd,
    stride_vp, stride_vh, stride_vn, stride_vd,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksp, stride_ksh, stride_ksn,
    stride_vsp, stride_vsh, stride_vsn, stride_vsd,
    stride_btb,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    Trace_qk, Trace_p, Trace_pv,
    stride_tb, stride_th, stride_tm, stride_tpv_b, stride_tpv_h, stride_tpv_t, stride_tpv_m,
    H_KV, GROUP_SIZE, N_Q, HEAD_DIM, KV_CAPACITY, NUM_PAGES, KV_SPLITS, ROWS_PAD,
    qk_const, ln2, ln_p_levels, out_max,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PAGE_TILES: tl.constexpr,
    PAGED: tl.constexpr, HAS_SEQ_LENS: tl.constexpr, IS_CAUSAL: tl.constexpr, BOTTOM_RIGHT: tl.constexpr,
    PAD_D: tl.constexpr, Q_SCALE_ROWS: tl.constexpr, K_SCALE_PER_KEY: tl.constexpr,
    V_SCALE_PER_TILE: tl.constexpr, V_SEQ_CONTIGUOUS: tl.constexpr,
    PV_MODE: tl.constexpr, P_TILE_MAX: tl.constexpr, P_LEVELS: tl.constexpr,
    NORMALIZER_QUANTIZED: tl.constexpr, PV_DOT_F32: tl.constexpr, FMA_GUARD: tl.constexpr,
    SPLIT: tl.constexpr, STORE_LSE: tl.constexpr, TRACE: tl.constexpr, LAUNCH_COMBINE_EARLY: tl.constexpr,
    TILES_IN_FLIGHT: tl.constexpr,
):
    """Stage 1: program (sequence * H_KV + kv head, split, row tile); grid (B * Hkv, KV_SPLITS, row tiles).

    Rows r of the tile are (query r // GROUP_SIZE, query head kv_head * GROUP_SIZE + r % GROUP_SIZE). Split s of a
    sequence with n key tiles visits tiles [s * T, min((s + 1) * T, n)), T = cdiv(n, KV_SPLITS) (sim.decode's
    split_tile_ranges), skipping those above every row's causal limit (exact no-ops in sim). SPLIT: write the
    partial state to Part_* at rows ((program_id(0) * KV_SPLITS + s) * ROWS_PAD + r); else finish and store.
    LAUNCH_COMBINE_EARLY (Hopper, with SPLIT): let the combine kernel, launched as a programmatic dependent, start
    as soon as every split program has started, so that its launch overlaps the splits' reads; it waits for their
    completion before it reads anything they wrote (``_decode_combine``'s WAIT_FOR_SPLITS).
    """
    if LAUNCH_COMBINE_EARLY:
        gdc_launch_dependents()
    pid_seq_head = tl.program_id(0)
    split = tl.program_id(1)
    row_tile = tl.program_id(2)
    b = pid_seq_head // H_KV
    h_kv = pid_seq_head % H_KV
    offs_r = row_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_r < GROUP_SIZE * N_Q
    d_ok = offs_d < HEAD_DIM
    q_idx = offs_r // GROUP_SIZE  # the query of each row
    head = h_kv * GROUP_SIZE + offs_r % GROUP_SIZE  # its query head

    # The sequence's length; one outside [0, capacity] is clamped for addressing and poisons the result.
    l_i = tl.zeros([BLOCK_M], tl.float32)
    if HAS_SEQ_LENS:
        seq_len = tl.load(Seq_lens + b)
        l_i = l_i + tl.where((seq_len >= 0) & (seq_len <= KV_CAPACITY), 0.0, float("nan"))
        kv_len = tl.minimum(tl.maximum(seq_len, 0), KV_CAPACITY)
    else:
        kv_len = KV_CAPACITY
    if BOTTOM_RIGHT:  # the queries are the newest tokens: query i at key position kv_len - N_Q + i
        q_start = kv_len - N_Q
    else:  # torch SDPA: query i at key position i
        q_start = 0
    q_pos = q_start + q_idx

    q_ptrs = Q + b.to(tl.int64) * stride_qb + head.to(tl.int64)[:, None] * stride_qh \
        + q_idx[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0)
    # Per-row factor q_scale * f32(scale * log2 e) (spec 3.1). Q's scale group of a row: its query ("token"), its
    # query's block of Q_SCALE_ROWS queries ("block"), or the tensor (strides 0).
    qs_ptrs = Q_scale + b * stride_qsb + head * stride_qsh + (q_idx // Q_SCALE_ROWS) * stride_qsm
    q_row = tl.load(qs_ptrs, mask=row_ok, other=1.0) * qk_const

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    # This split's key tiles [lo, hi), the causal limit, and the first tile that needs a mask (mid).
    n_tiles = tl.cdiv(kv_len, BLOCK_N)
    per_split = tl.cdiv(n_tiles, KV_SPLITS)
    lo = split * per_split
    hi = tl.maximum(tl.minimum(lo + per_split, n_tiles), lo)
    full_end = kv_len // BLOCK_N  # tiles whose keys are all below the length
    if IS_CAUSAL:
        first_q = (row_tile * BLOCK_M) // GROUP_SIZE
        last_q = tl.minimum((row_tile * BLOCK_M + BLOCK_M - 1) // GROUP_SIZE, N_Q - 1)
        # Keys above the last query's position are masked for every row; below the first query's, for none.
        hi = tl.maximum(tl.minimum(hi, tl.cdiv(tl.maximum(q_start + last_q + 1, 0), BLOCK_N)), lo)
        full_end = tl.minimum(full_end, tl.maximum(q_start + first_q + 1, 0) // BLOCK_N)
    mid = tl.minimum(tl.maximum(full_end, lo), hi)

    if PAGED:
        k_seq = K + h_kv.to(tl.int64) * stride_kh
        v_seq = V + h_kv.to(tl.int64) * stride_vh
        ks_seq = K_scale + h_kv * stride_ksh
        vs_seq = V_scale + h_kv * stride_vsh
    else:  # the first stride steps sequences
        k_seq = K + b.to(tl.int64) * stride_kp + h_kv.to(tl.int64) * stride_kh
        v_seq = V + b.to(tl.int64) * stride_vp + h_kv.to(tl.int64) * stride_vh
        ks_seq = K_scale + b * stride_ksp + h_kv * stride_ksh
        vs_seq = V_scale + b * stride_vsp + h_kv * stride_vsh
    table_row = Block_table + b.to(tl.int64) * stride_btb

    trace_qk_rows = Trace_qk + b * stride_tb + head * stride_th + q_idx * stride_tm
    trace_p_rows = Trace_p + b * stride_tb + head * stride_th + q_idx * stride_tm
    trace_pv_rows = Trace_pv + b * stride_tpv_b + head * stride_tpv_h + q_idx * stride_tpv_m

    # Tiles every row sees whole, without a mask; then the length's tail and the causal diagonal, masked.
    acc, l_i, m_i = _decode_tiles(
        acc, l_i, m_i, q, q_row, q_pos, offs_n, offs_d, row_ok, k_seq, v_seq, ks_seq, vs_seq, table_row,
        stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
        stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd,
        trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t,
        kv_len, NUM_PAGES, HEAD_DIM, lo, mid,
        BLOCK_N, BLOCK_D, PAGE_TILES, PAGED, False, IS_CAUSAL, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE,
        V_SEQ_CONTIGUOUS, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32, FMA_GUARD, TRACE,
        TILES_IN_FLIGHT,
    )
    acc, l_i, m_i = _decode_tiles(
        acc, l_i, m_i, q, q_row, q_pos, offs_n, offs_d, row_ok, k_seq, v_seq, ks_seq, vs_seq, table_row,
        stride_kp, stride_kn, stride_kd, stride_vp, stride_vn, stride_vd,
        stride_ksp, stride_ksn, stride_vsp, stride_vsn, stride_vsd,
        trace_qk_rows, trace_p_rows, trace_pv_rows, stride_tpv_t,
        kv_len, NUM_PAGES, HEAD_DIM, mid, hi,
        BLOCK_N, BLOCK_D, PAGE_TILES, PAGED, True, IS_CAUSAL, PAD_D, K_SCALE_PER_KEY, V_SCALE_PER_TILE,
        V_SEQ_CONTIGUOUS, PV_MODE, P_TILE_MAX, NORMALIZER_QUANTIZED, PV_DOT_F32, FMA_GUARD, TRACE,
        TILES_IN_FLIGHT,
    )

    if SPLIT:  # partial state to scratch: the tile's real rows (the combine reads no other), every channel
        part_rows = (pid_seq_head.to(tl.int64) * KV_SPLITS + split) * ROWS_PAD + offs_r
        tl.store(Part_m + part_rows, m_i, mask=row_ok)
        tl.store(Part_l + part_rows, l_i, mask=row_ok)
        tl.store(Part_acc + part_rows[:, None] * BLOCK_D + offs_d[None, :], acc, mask=row_ok[:, None])
    else:
        # V per tensor/head (strides 0) or per channel of the sequence; half-INT8's power of two per head.
        if not V_SCALE_PER_TILE:
            v_scale = tl.load(V_scale + b * stride_vsp + h_kv * stride_vsh + offs_d * stride_vsd, mask=d_ok, other=0.0)
        else:
            v_scale = None
        out, lse = finish_state(acc, l_i, m_i, v_scale, ln2, ln_p_levels, P_LEVELS, NORMALIZER_QUANTIZED,
                                not V_SCALE_PER_TILE)
        out = saturate(out, out_max)  # the output format's largest finite value (docs/spec.md 3.5)
        o_ptrs = Out + b.to(tl.int64) * stride_ob + head.to(tl.int64)[:, None] * stride_oh \
            + q_idx[:, None] * stride_om + offs_d[None, :] * stride_od
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
        if STORE_LSE:
            tl.store(Lse + b * stride_lb + head * stride_lh + q_idx * stride_lm, lse, mask=row_ok)


@triton.jit
def _decode_combine(
    Part_m, Part_l, Part_acc, V_scale, Out, Lse,
    stride_vsb, stride_vsh, stride_vsd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh, stride_lm,
    H_KV, GROUP_SIZE, N_ROWS, HEAD_DIM, ROWS_PAD, KV_SPLITS,
    ln2, ln_p_levels, out_max,
    SPLIT_CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, P_LEVELS: tl.constexpr, NORMALIZER_QUANTIZED: tl.constexpr,
    V_SCALE_AT_END: tl.constexpr, STORE_LSE: tl.constexpr, WAIT_FOR_SPLITS: tl.constexpr,
):
    """Stage 2: one program per (sequence * H_KV + kv head, row), N_ROWS = GROUP_SIZE * N_Q rows per kv head; merges
    the row's splits (sim.combine_splits) and finishes.

    m = max over splits; then l and acc summed in split order, each split weighted by exp2(m_s - m) (0 for a split
    that saw no key of the row); then the finish. The splits are read SPLIT_CHUNK at a time, each chunk's loop
    unrolled: its loads do not depend on the sums, so they are all in flight at once instead of one latency per
    split (a rolled loop cost ~0.5 us per split: 9 us of a 33 us call at 17 splits, H100). Past the last split of
    the last chunk the loads give m = -inf, l = 0, acc = 0, so those terms add exact zeros (weight exp2(-inf) = 0):
    the sums are sim's. The split count stays a runtime argument, so a new count compiles nothing (unrolling all of
    them compiled in ~3 s at 16 splits, ~18 s at 64 and minutes beyond, per count). WAIT_FOR_SPLITS: launched as a
    programmatic dependent of the split kernel (Hopper), which starts it while the splits finish; it waits here,
    before the first read of their partial states, until they have all completed.
    """
    # One grid dimension (no 65535 limit): program (sequence * H_KV + kv head) * N_ROWS + row.
    pid_seq_head = tl.program_id(0) // N_ROWS
    row = tl.program_id(0) % N_ROWS
    b = pid_seq_head // H_KV
    h_kv = pid_seq_head % H_KV
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    one = tl.zeros([1], tl.int32)  # the row as a 1-vector, so that the finish is the split kernel's
    q_idx = row // GROUP_SIZE + one
    head = h_kv * GROUP_SIZE + row % GROUP_SIZE + one
    if V_SCALE_AT_END:  # V per tensor/head (strides 0) or per channel of the sequence; half-INT8's power of two
        v_scale = tl.load(V_scale + b * stride_vsb + h_kv * stride_vsh + offs_d * stride_vsd, mask=d_ok, other=0.0)
    else:
        v_scale = None
    first = pid_seq_head.to(tl.int64) * KV_SPLITS * ROWS_PAD + row + one  # split 0's row
    if WAIT_FOR_SPLITS:
        gdc_wait()

    m = tl.full([1], float("-inf"), tl.float32)
    for chunk in range(0, KV_SPLITS, SPLIT_CHUNK):
        for s in tl.static_range(SPLIT_CHUNK):
            m = tl.maximum(m, tl.load(Part_m + first + (chunk + s) * ROWS_PAD, mask=chunk + s < KV_SPLITS,
                                      other=float("-inf")))
    m_sub = tl.where(m == float("-inf"), 0.0, m)
    l_i = tl.zeros([1], tl.float32)
    acc = tl.zeros([1, BLOCK_D], tl.float32)
    for chunk in range(0, KV_SPLITS, SPLIT_CHUNK):
        for s in tl.static_range(SPLIT_CHUNK):
            split_ok = chunk + s < KV_SPLITS
            rows = first + (chunk + s) * ROWS_PAD
            weight = tl.exp2(tl.load(Part_m + rows, mask=split_ok, other=float("-inf")) - m_sub)
            l_i = l_i + tl.load(Part_l + rows, mask=split_ok, other=0.0) * weight
            acc_s = tl.load(Part_acc + rows[:, None] * BLOCK_D + offs_d[None, :], mask=split_ok, other=0.0)
            acc = acc + acc_s * weight[:, None]

    out, lse = finish_state(acc, l_i, m, v_scale, ln2, ln_p_levels, P_LEVELS, NORMALIZER_QUANTIZED, V_SCALE_AT_END)
    out = saturate(out, out_max)  # the output format's largest finite value (docs/spec.md 3.5)
    o_ptrs = Out + b.to(tl.int64) * stride_ob + head.to(tl.int64)[:, None] * stride_oh \
        + q_idx[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=d_ok[None, :])
    if STORE_LSE:
        tl.store(Lse + b * stride_lb + head * stride_lh + q_idx * stride_lm, lse)


def _has_programmatic_launch(device: torch.device) -> bool:
    """Whether kernels on ``device`` can launch as programmatic dependents (Hopper and later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def decode_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor | None,
    *, config: QuantConfig, scale: float, is_causal: bool, kv_splits: int, out_dtype: torch.dtype,
    return_lse: bool, trace: bool, block_m: int, num_warps: int, num_stages: int, tiles_in_flight: int = 1,
    seq_lens: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
    causal_alignment: str = "top_left", fp_fusion: bool | None = None,
):
    """Launch the decode kernel on prepared operands (shapes and values already checked by the caller).

    Called through :func:`intfa.kernels.dispatch.attention_forward`.

    Parameters
    ----------
    q_codes : (B, Hq, Nq, D) int8, any strides.
    k_codes, v : contiguous cache (B, Hkv, Nk, D), or pages (num_pages, Hkv, page_size, D) with ``block_table``;
        any strides. ``v`` int8 codes (full INT8) or float16/bfloat16 values (half-INT8; contiguous only).
    q_scale, k_scale, v_scale : float32 in :func:`sim.quantize`'s shapes for the config's granularities (Q blocks
        of ``config.block_m`` queries); paged, per-key and per-tile scales in :func:`sim.paged_scale_shape`'s.
        For half-INT8 v_scale is the power of two per (batch, head) that V was divided by ((B, Hkv, 1, 1)), None
        for 1.
    kv_splits : splits of each sequence's key tiles (docs/spec.md 3.6): the numbers depend on it.
    seq_lens : (B,) int32 keys per sequence (required with ``block_table``; default all Nk).
    block_table : (B, max_pages) int32, row b the pages of sequence b; page_size a multiple of config.block_n.
    causal_alignment : "top_left" (query i at key i) or "bottom_right" (query i at seq_len - Nq + i).
    block_m, num_warps, num_stages : rows per tile (packed (head, query) pairs; a power of two >= 16) and launch
        parameters: speed only.
    tiles_in_flight : 1 or 2 key tiles per loop iteration (their products before their folds): speed only.
    trace : also return the integer intermediates (full INT8): dict with ``qk`` and ``p_codes``
        (B, Hq, Nq, n_tiles * block_n) int32 at key positions, ``pv`` (B, Hq, n_tiles, Nq, D) int32;
        INT32_MIN where a tile was not visited.

    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32; with ``trace`` the
    trace dict last.
    """
    cfg = config
    b, hq, nq, d = q_codes.shape
    hkv = k_codes.shape[1]
    group = hq // hkv
    device = q_codes.device
    mode = pv_mode(cfg)
    paged = block_table is not None
    if paged:
        num_pages, page_size = k_codes.shape[0], k_codes.shape[2]
        capacity = block_table.shape[1] * page_size
        page_tiles = page_size // cfg.block_n
        table, table_stride = block_table, block_table.stride(0)
    else:
        num_pages, capacity, page_tiles = 1, k_codes.shape[2], 1
        table, table_stride = q_scale, 0  # unused; any valid pointer
    if cfg.pv_is_int and cfg.block_n < 32 and not INTERPRETED:
        raise ValueError(
            f"config: block_n={cfg.block_n}: the compiled INT8 P @ V product needs block_n >= 32 (8-bit tensor-core "
            "instructions reduce over 32 keys); block_n 16 runs only in the interpreter"
        )
    if trace and not cfg.pv_is_int:
        raise ValueError("trace: only full-INT8 configurations (pv_format 'int8') have integer intermediates")
    if tiles_in_flight not in (1, 2):
        raise ValueError(f"tiles_in_flight: expected 1 or 2, got {tiles_in_flight}")
    if block_m < 16 or block_m & (block_m - 1):
        raise ValueError(f"block_m: expected a power of two >= 16 (tl.dot's smallest tile), got {block_m}")

    block_d = max(16, triton.next_power_of_2(d))
    n_rows = group * nq
    row_tiles = triton.cdiv(n_rows, block_m)
    rows_pad = row_tiles * block_m
    if kv_splits > _GRID_YZ_MAX or row_tiles > _GRID_YZ_MAX:
        raise ValueError(f"kv_splits ({kv_splits}) and row tiles ({row_tiles} of {block_m} (head, query) rows) must "
                         f"each be at most {_GRID_YZ_MAX}")
    kernel_out_dtype = torch.float32 if INTERPRETED and out_dtype == torch.bfloat16 else out_dtype
    out = torch.empty((b, hq, nq, d), dtype=kernel_out_dtype, device=device)
    lse = torch.empty((b, hq, nq), dtype=torch.float32, device=device) if return_lse else out
    lse_strides = lse.stride() if return_lse else (0, 0, 0)
    if v_scale is None:  # half-INT8 without a power-of-two scale: multiply by 1
        v_scale = torch.ones((1, 1, 1, 1), dtype=torch.float32, device=device)
    v_scale_t = v_scale
    split = kv_splits > 1
    if split:
        part_m = torch.empty((b * hkv * kv_splits * rows_pad,), dtype=torch.float32, device=device)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty((b * hkv * kv_splits * rows_pad, block_d), dtype=torch.float32, device=device)
    else:
        part_m = part_l = part_acc = out  # unused

    n_tiles = n_blocks(capacity, cfg.block_n)
    trace_qk, trace_p, trace_pv, t_strides = trace_buffers(trace, b, hq, nq, n_tiles, cfg.block_n, d, out)

    qs_strides = scale_strides(q_scale, cfg.q_granularity == "tensor")
    ks_strides = scale_strides(k_scale, cfg.k_granularity == "tensor")
    vs_strides = scale_strides(v_scale_t, cfg.pv_is_int and cfg.v_granularity == "tensor")
    ln2, ln_levels = float(np.float32(LN2)), float(np.float32(np.log(cfg.p_levels)))
    out_max = float(torch.finfo(out_dtype).max)  # saturation
    v_scale_at_end = not (cfg.pv_is_int and cfg.v_granularity == "block")
    fusion = (not INTERPRETED) if fp_fusion is None else bool(fp_fusion)
    # Programmatic dependent launch (Hopper on): the combine starts while the splits finish (docs/performance.md).
    early_combine = split and not INTERPRETED and _has_programmatic_launch(device)

    _decode_split[(b * hkv, kv_splits, row_tiles)](
        q_codes, k_codes, v, q_scale, k_scale, v_scale_t, table, seq_lens if seq_lens is not None else table,
        out, lse, part_m, part_l, part_acc,
        *q_codes.stride(), *k_codes.stride(), *v.stride(),
        qs_strides[0], qs_strides[1], qs_strides[2],
        ks_strides[0], ks_strides[1], ks_strides[2],
        vs_strides[0], vs_strides[1], vs_strides[2], vs_strides[3],
        table_stride,
        *out.stride(), *lse_strides,
        trace_qk, trace_p, trace_pv, *t_strides,
        hkv, group, nq, d, capacity, num_pages, kv_splits, rows_pad,
        # float32 constants exactly as sim's: f32(scale * log2 e), f32(ln 2), f32(ln p_levels).
        float(qk_scale_factor(scale)), ln2, ln_levels, out_max,
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d, PAGE_TILES=page_tiles,
        PAGED=paged, HAS_SEQ_LENS=seq_lens is not None, IS_CAUSAL=bool(is_causal),
        BOTTOM_RIGHT=bool(is_causal) and causal_alignment == "bottom_right", PAD_D=block_d != d,
        Q_SCALE_ROWS=cfg.block_m if cfg.q_granularity == "block" else 1,
        K_SCALE_PER_KEY=cfg.k_granularity == "token",
        V_SCALE_PER_TILE=cfg.pv_is_int and cfg.v_granularity == "block",
        V_SEQ_CONTIGUOUS=v.stride(2) == 1,
        PV_MODE=mode, P_TILE_MAX=cfg.pv_is_int and cfg.p_scale == "tile_max", P_LEVELS=float(cfg.p_levels),
        NORMALIZER_QUANTIZED=cfg.normalizer == "quantized",
        PV_DOT_F32=INTERPRETED and mode == PV_BF16, FMA_GUARD=fusion and not INTERPRETED, SPLIT=split,
        STORE_LSE=bool(return_lse), TRACE=bool(trace), LAUNCH_COMBINE_EARLY=early_combine,
        TILES_IN_FLIGHT=tiles_in_flight, enable_fp_fusion=fusion, num_warps=num_warps, num_stages=num_stages,
    )
    if split:
        _decode_combine[(b * hkv * n_rows,)](
            part_m, part_l, part_acc, v_scale_t, out, lse,
            vs_strides[0], vs_strides[1], vs_strides[3],
            *out.stride(), *lse_strides,
            hkv, group, n_rows, d, rows_pad, kv_splits, ln2, ln_levels, out_max,
            SPLIT_CHUNK=min(COMBINE_SPLIT_CHUNK, triton.next_power_of_2(kv_splits)), BLOCK_D=block_d,
            P_LEVELS=float(cfg.p_levels),
            NORMALIZER_QUANTIZED=cfg.normalizer == "quantized", V_SCALE_AT_END=v_scale_at_end,
            STORE_LSE=bool(return_lse), WAIT_FOR_SPLITS=early_combine, enable_fp_fusion=fusion, num_warps=1,
            **({"launch_pdl": True} if early_combine else {}),
        )
    if kernel_out_dtype != out_dtype:
        out = out.to(out_dtype)
    result = (out,)
    if return_lse:
        result += (lse,)
    if trace:
        result += (dict(qk=trace_qk, p_codes=trace_p, pv=trace_pv),)
    return result[0] if len(result) == 1 else result


__all__ = ["decode_forward", "COMBINE_SPLIT_CHUNK"]
