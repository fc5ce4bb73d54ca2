"""The tile loop of INT8 FlashAttention, in NumPy: the numerical spec made executable (docs/spec.md, section 3).

:func:`_tile_loop` is the whole algorithm. It walks the key tiles in order and carries the running max ``m``, the
normalizer ``l`` and the accumulator ``acc`` for every query row at once: rows are independent, so processing all
query tiles together is the same arithmetic as the kernel's one tile per program, and fast. Each float operation
is written in the order the Triton kernel performs it, so that the interpreted kernel matches this to the bit.
:func:`_finish` turns the final state into the output and the log-sum-exp (spec 3.5).

Integer products use float32 BLAS: every partial sum of int8 x int8 products here stays below 2**24, so float32
represents it exactly whatever order BLAS adds in.

Who calls it: :mod:`sim.attention` (the public entry points, one pass over the keys) and :mod:`sim.decode` (the
same loop over each split of the keys, then the combine). Neither is imported here: the dependency runs one way.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .checks import FLOAT32_MAX
from .config import FP8_MAX, LN2, LOG2E, QuantConfig, n_blocks, qk_scale_factor
from .quant import expand_scales, fp22_matmul, round_half_even, round_to_format

_F32 = np.float32
#: f32(log2 e): an additive mask is moved into the exp2 domain by one float32 multiply with it (spec 3.1).
LOG2E_F32 = _F32(LOG2E)

@dataclasses.dataclass
class Operands:
    """Q, K, V as the tile loop consumes them.

    ``q``, ``k``, ``v`` are float32 arrays holding integer codes (integer formats) or values rounded
    to the float format. Scales are float32 in :func:`sim.quantize`'s shapes, None for float formats, except
    half-INT8's V: ``v`` holds V divided by a power of two per (batch, head) and rounded to the 16-bit format,
    ``v_scale`` (B, Hkv, 1, 1) that power of two (:attr:`sim.QuantConfig.v_power_of_two`). Scaled FP8
    (``fp8_scaled``) holds FP8 values with scales as integer codes do. K and V have the
    key/value heads (Hkv); the loop maps query heads onto them. V's head dim may differ from Q's and K's.
    ``v_mean`` (B, Hkv, 1, Dv): what V smoothing subtracted (added back to the output), else None.
    """

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    q_scale: np.ndarray | None
    k_scale: np.ndarray | None
    v_scale: np.ndarray | None
    v_mean: np.ndarray | None = None


@dataclasses.dataclass
class TileStep:
    """State after key tile ``key_tile`` (columns ``cols``), for every (batch, head, query row).

    qk : (B, H, Nq, block_n) int32 integer scores Q8 K8^T (float formats: float32 products)
    s : (B, H, Nq, block_n) float32 scaled scores in the exp2 domain, -inf where masked
    m, alpha, l : (B, H, Nq) float32 running max, this tile's rescale factor, normalizer
    p : (B, H, Nq, block_n) float32 exp2(s - m); with p_scale "tile_max", exp2(s - this tile's row max)
    p_row_scale : (B, H, Nq) float32 what ``p`` is relative to: 1, or exp2(tile row max - m) for "tile_max"
    p_codes : (B, H, Nq, block_n) int32 P codes (int8 P), or P rounded to the PV format (float32)
    acc : (B, H, Nq, D) float32 accumulator (in P-code units, V codes unless V is block-scaled)
    """

    key_tile: int
    cols: slice
    qk: np.ndarray
    s: np.ndarray
    m: np.ndarray
    alpha: np.ndarray
    p: np.ndarray
    p_row_scale: np.ndarray
    p_codes: np.ndarray
    l: np.ndarray
    acc: np.ndarray


@dataclasses.dataclass
class Trace:
    """Everything :func:`attention_trace` saw: the operands, each tile's state, the result.

    steps : the :class:`TileStep` of every key tile of the single-pass loop. A run split into ``kv_splits``
    or with per-sequence lengths keeps its steps per sequence and split in ``parts`` instead
    (:class:`sim.decode.SplitPart`, with their partial states) and leaves ``steps`` empty.
    """

    config: QuantConfig
    scale: float
    operands: Operands
    steps: list
    out: np.ndarray
    lse: np.ndarray
    parts: list | None = None


def _heads(a, head_map):
    """Map query heads onto key/value heads (GQA); per-tensor scales have a single head."""
    return a if a is None or a.shape[1] == 1 else a[:, head_map]


# --- the tile loop ----------------------------------------------------------------------------------


@dataclasses.dataclass
class LoopState:
    """The running state of the tile loop for every (batch, head, query row), before the finish.

    m : (B, H, Nq) float32 running max (exp2 domain), -inf where no key was visible yet
    l : (B, H, Nq) float32 normalizer (P-code units with the quantized normalizer, else float P)
    acc : (B, H, Nq, D) float32 accumulator (P-code units; V codes unless V is block-scaled)
    """

    m: np.ndarray
    l: np.ndarray
    acc: np.ndarray


def _tile_loop(ops: Operands, cfg: QuantConfig, *, is_causal: bool, scale: float, trace: bool, tiles=None,
               q_start=None, kv_len=None, mask=None):
    """Run the INT8 FlashAttention tile loop over prepared operands; returns (LoopState, steps or None).

    tiles : the key tiles to visit (a range; default all of them, in increasing order).
    q_start : (B,) int, the key position of each sequence's query 0 (default 0: torch SDPA's top-left causal
        alignment); query i sees keys c <= q_start + i when causal.
    kv_len : (B,) int, each sequence's number of valid keys (default Nk); keys c >= kv_len are masked.
    mask : attn_mask as torch SDPA takes it, shaped (B or 1, Hq or 1, Nq, Nk): bool (True: the key takes part)
        or float32 (added to the scaled scores, natural-log units; -inf masks). Spec 3.1 gives its arithmetic.
    """
    b, hq, nq, _ = ops.q.shape
    hkv, nk, d = ops.k.shape[1], ops.k.shape[2], ops.v.shape[3]
    head_map = np.arange(hq) // (hq // hkv)
    k_all, v_all = ops.k[:, head_map], ops.v[:, head_map]
    bn = cfg.block_n
    tiles = range(n_blocks(nk, bn)) if tiles is None else tiles
    qk_const = qk_scale_factor(scale)
    q_start = np.zeros(b, np.int64) if q_start is None else np.asarray(q_start, np.int64)
    kv_len = np.full(b, nk, np.int64) if kv_len is None else np.asarray(kv_len, np.int64)

    q_mat = ops.q
    if cfg.qk_scaled:
        # Per-row factor: q_scale * f32(scale * log2 e), one float32 multiply (spec 3.1).
        q_row = expand_scales(ops.q_scale, nq, cfg.q_quant_granularity, cfg.q_quant_block) * qk_const
        k_rows = expand_scales(_heads(ops.k_scale, head_map), nk, cfg.k_quant_granularity, cfg.block_n)
        k_rows = np.broadcast_to(k_rows, k_rows.shape[:2] + (nk, 1))  # per-tensor: one row for all keys
    if cfg.pv_scaled:
        v_scale = _heads(ops.v_scale, head_map)
    qk_fp22 = cfg.fp8_accumulation != "float32" and cfg.qk_format in FP8_MAX  # spec 7.2
    pv_fp22 = cfg.fp8_accumulation != "float32" and cfg.pv_format in FP8_MAX

    m = np.full((b, hq, nq), -np.inf, _F32)
    l = np.zeros((b, hq, nq), _F32)
    acc = np.zeros((b, hq, nq, d), _F32)
    rows = np.arange(nq)[:, None]
    additive = mask is not None and mask.dtype != np.bool_
    tile_scaled = cfg.pv_is_int and cfg.p_scale == "tile_max"
    steps = [] if trace else None

    for j in tiles:
        lo, hi = j * bn, min((j + 1) * bn, nk)
        cols = lo + np.arange(bn)[None, :]
        k_tile = np.zeros((b, hq, bn, ops.k.shape[3]), _F32)
        k_tile[:, :, : hi - lo] = k_all[:, :, lo:hi]
        v_tile = np.zeros((b, hq, bn, d), _F32)
        v_tile[:, :, : hi - lo] = v_all[:, :, lo:hi]

        # 1. Scores. Integer formats: exact integer product, then (qk * k_scale) * q_row (spec 3.1: the per-key
        # factor first, so that the kernel folds the per-row one into the exponent's multiply-add).
        if qk_fp22:  # FP8 products summed in the MMA's FP22 register, 32 channels at a time
            qk = fp22_matmul(q_mat, np.swapaxes(k_tile, -1, -2))
        else:
            qk = q_mat @ np.swapaxes(k_tile, -1, -2)  # (b, hq, nq, bn)
        if cfg.qk_scaled:
            k_col = np.ones((k_rows.shape[0], k_rows.shape[1], 1, bn), _F32)
            k_col[..., : hi - lo] = np.swapaxes(k_rows[:, :, lo:hi], -1, -2)
            s = (qk * k_col) * q_row
        else:
            s = qk * qk_const
        # 2. Masks: keys past each sequence's end, (causal) keys after the query's position, and attn_mask: a boolean
        # mask drops keys; an additive one moves the scores by f32(mask) * f32(log2 e), at least -FLT_MAX, so that a
        # huge finite value (torch.finfo(float32).min) stays finite as in torch SDPA, while -inf drops the key.
        valid = (cols[None] < kv_len[:, None, None])[:, None]  # (b, 1, 1, bn)
        if is_causal:
            valid = valid & (cols[None] <= q_start[:, None, None] + rows[None])[:, None]  # (b, 1, nq, bn)
        if mask is not None:
            tile = mask[..., lo:hi]
            keep = np.zeros(mask.shape[:3] + (bn,), np.bool_)
            keep[..., : hi - lo] = tile if not additive else tile != -np.inf
            if additive:
                bias = np.zeros(mask.shape[:3] + (bn,), _F32)
                with np.errstate(over="ignore"):  # below -FLT_MAX / log2 e the product is -inf, then -FLT_MAX
                    bias[..., : hi - lo] = np.maximum(tile * LOG2E_F32, _F32(-FLOAT32_MAX))
                s = s + bias
            valid = valid & keep
        s = np.where(valid, s, _F32(-np.inf)).astype(_F32)

        # 3. Online softmax in the exp2 domain. A row that has seen no visible key yet keeps m = -inf; it
        # subtracts 0 instead (m_sub), so that exp2(-inf - -inf) = NaN never arises: its alpha and p are 0.
        tile_max = s.max(axis=-1)
        m_new = np.maximum(m, tile_max)
        m_sub = np.where(m_new == -np.inf, _F32(0.0), m_new)
        alpha = np.exp2(m - m_sub)
        if tile_scaled:
            # P relative to the row's max in this tile, so its codes use every level; r = that max
            # relative to the running max, folded into the rescaling below. A row whose columns are all
            # masked here has tile_max = -inf: its p must be 0 (not exp2(-inf + inf) = NaN), and r is 0.
            p = np.exp2(s - np.where(tile_max == -np.inf, _F32(0.0), tile_max)[..., None])
            r = np.exp2(tile_max - m_sub)
        else:
            p = np.exp2(s - m_sub[..., None])

        # 4. P to the PV format; the row sum; P @ V.
        if cfg.pv_is_int:
            if cfg.p_quant == "fixed127":
                p_codes = round_half_even(p * _F32(127.0))
                p_weight = p_codes  # what multiplies V, in units of 1/127
            else:  # signed255: codes in [-128, 127]; the dot adds back 128 * colsum(V8)
                p_codes = round_half_even(p * _F32(255.0)) - 128
                p_weight = p_codes + 128  # in units of 1/255
            p_mult = p_weight.astype(_F32)
            row_sum = p_weight.sum(axis=-1).astype(_F32) if cfg.normalizer == "quantized" else p.sum(axis=-1)
        elif cfg.p_fp8_scale == "fp8_max":  # P times the format's maximum (a static scale), then FP8
            p_codes = p_mult = round_to_format(p * _F32(cfg.p_levels), cfg.pv_format)
            row_sum = p_mult.sum(axis=-1) if cfg.normalizer == "quantized" else p.sum(axis=-1)
        else:
            p_codes = p_mult = round_to_format(p, cfg.pv_format)
            row_sum = p_mult.sum(axis=-1) if cfg.normalizer == "quantized" else p.sum(axis=-1)
        tile_v_scale = v_scale[:, :, j : j + 1, :] if cfg.v_tile_scaled else None
        if pv_fp22 and cfg.fp8_accumulation == "fp22":
            # P @ V straight into the running output, in the MMA's FP22 register (FlashAttention-3): the rescaled
            # accumulator is the MMA's C operand, truncated with every chunk of keys (spec 7.2).
            l = l * alpha + row_sum
            acc = fp22_matmul(p_mult, v_tile, acc * alpha[..., None], chunk_scale=tile_v_scale)
        else:
            if pv_fp22:  # "fp22+float32": this tile in FP22 from zero, then into float32 (SageAttention2)
                pv = fp22_matmul(p_mult, v_tile)
            else:
                pv = p_mult @ v_tile  # exact for int8 codes
            if tile_v_scale is not None:
                pv = pv * tile_v_scale
            if tile_scaled:
                row_sum = row_sum * r
                pv = pv * r[..., None]
            l = l * alpha + row_sum
            acc = acc * alpha[..., None] + pv
        m = m_new

        if trace:
            steps.append(
                TileStep(j, slice(lo, hi), qk.astype(np.int32) if cfg.qk_is_int else qk, s, m.copy(),
                         alpha, p, r if tile_scaled else np.ones_like(m), p_codes, l.copy(), acc.copy())
            )
    return LoopState(m, l, acc), steps


def _finish(state: LoopState, ops: Operands, cfg: QuantConfig):
    """Divide by the normalizer in P-code units; dequantize V where the tiles did not (spec 3.5).

    A row that saw no visible key (fully masked) has l = 0 and acc = 0: its output is 0 and its lse -inf, as torch
    SDPA returns for it. Returns (out (B, Hq, Nq, Dv) float32, lse (B, Hq, Nq) float32).
    """
    m, l, acc = state.m, state.l, state.acc
    l_eff = l if cfg.normalizer == "quantized" else l * _F32(cfg.p_levels)
    # A row that saw no key (a fully masked row; per-sequence lengths or bottom-right causal alignment, spec 3.7) has
    # l = 0 and acc = 0: it divides by 1 instead, giving out 0 and lse -inf (m = -inf), never NaN.
    l_eff = np.where(l_eff == 0, _F32(1.0), l_eff)
    hq, hkv = m.shape[1], ops.v.shape[1]
    if (cfg.pv_scaled and not cfg.v_tile_scaled) or (cfg.v_power_of_two and ops.v_scale is not None):
        v_scale = _heads(ops.v_scale, np.arange(hq) // (hq // hkv))
        v_granularity = cfg.v_quant_granularity if cfg.pv_scaled else "head"
        v_rows = expand_scales(v_scale, ops.v.shape[2], v_granularity, cfg.block_n)
        out = (acc * v_rows[:, :, :1, :]) / l_eff[..., None]
    else:
        out = acc / l_eff[..., None]
    if ops.v_mean is not None:  # V smoothing: the weights sum to one, so the mean comes back whole (spec 7.1)
        out = np.where((l == 0)[..., None], out, out + _heads(ops.v_mean, np.arange(hq) // (hq // hkv)))
    # A row whose running max is +inf or NaN saw a non-finite score (only non-finite input makes one): NaN, as
    # the kernels write, never finite garbage (the quantized normalizer would stay finite).
    out = np.where(((m != m) | (m == np.inf))[..., None], _F32(np.nan), out)
    lse = (m + np.log2(l_eff)) * _F32(LN2) - _F32(np.log(cfg.p_levels))
    return out.astype(_F32), lse.astype(_F32)
