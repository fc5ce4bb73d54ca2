"""Level 2 of the numerical contract (docs/spec.md, section 4): what a compiled kernel may differ from sim by.

Shared by the GPU test files (tests/test_kernel_gpu.py, tests/test_kernel_gpu_fuzz.py). No torch here.

P codes. sim rounds exp2's argument twice (``s = round(t * q_row)``, then ``s - m``); a compiled kernel rounds
``t * q_row - m`` once (FMA contraction), raises the reference by ``|m| 2**-23`` (one to two ulps) where
``|m| >= 2**15`` (the guard that keeps P <= 1, intfa/kernels/tile.py), and its ``exp2`` is ``ex2.approx`` (2 ulps).
The argument then differs by at most ``2**-22 * (|s| + 1)`` (half an ulp of the score twice, the guard's two ulps,
and p * |s - m| <= 1 / (e ln 2) for sim's own rounding of the difference), so ``p * levels`` differs by at most
``levels * (ln 2 * 2**-22 * (|s| + 1) + 2**-21)``, and a code, rounded from it, by one step more than the floor of
that. For scores of everyday size
(|s| below a few thousand in the exp2 domain) this is one step; the "extreme_outliers" inputs reach |s| ~ 1e6,
where it is dozens.

Outputs. Each step of a P code moves the output by at most ``2 max|V^| / levels`` (:func:`dequantized_v_max`).
"""

from __future__ import annotations

import math

import numpy as np

import sim
from sim.checks import FLOAT32_MAX
from sim.config import LOG2E


def score_abs_max(ops, cfg: sim.QuantConfig, scale: float, attn_mask=None) -> np.ndarray:
    """(B, Hq, Nq) float64: each row's largest |s| in the exp2 domain, over all keys (masked ones too: an upper
    bound), from the dequantized operands sim's kernels multiply (``ops``: :class:`sim.Operands`, codes and scales).

    attn_mask : a float mask (any shape broadcasting to (B, Hq, Nq, Nk)) moves the scores by ``mask * log2 e``
        (its finite entries; the kernel fuses the add into the product, so its rounding is that of the sum).
    """
    q_hat = sim.dequantize(np.asarray(ops.q).astype(np.int8), ops.q_scale, cfg.q_granularity, cfg.block_m)
    k_hat = sim.dequantize(np.asarray(ops.k).astype(np.int8), ops.k_scale, cfg.k_granularity, cfg.block_n)
    hq, hkv = q_hat.shape[1], k_hat.shape[1]
    k_hat = k_hat[:, np.arange(hq) // (hq // hkv)].astype(np.float64)
    scores = (q_hat.astype(np.float64) @ np.swapaxes(k_hat, -1, -2)) * scale * LOG2E
    if attn_mask is not None and np.asarray(attn_mask).dtype != np.bool_:
        bias = np.asarray(attn_mask, np.float64) * LOG2E
        scores = scores + np.where(np.isfinite(bias), np.maximum(bias, -FLOAT32_MAX), 0.0)
    return np.abs(scores).max(axis=-1)


def p_code_allowance(ops, cfg: sim.QuantConfig, scale: float, attn_mask=None) -> np.ndarray:
    """(B, Hq, Nq) int64: the most steps a compiled kernel's P code may differ from sim's in each row."""
    levels = float(cfg.p_levels)
    drift = levels * (math.log(2) * 2.0**-22 * (score_abs_max(ops, cfg, scale, attn_mask) + 1) + 2.0**-21)
    # Scores near float32's range (a row of -FLT_MAX mask values) give no useful bound: capped, not overflowed.
    return 1 + np.floor(np.minimum(drift, 2.0**31)).astype(np.int64)


def dequantized_v_max(expected: sim.Operands, cfg) -> float:
    """max |V^| as the tile loop multiplies it (codes times scales, or half-INT8's scaled values times the scale)."""
    if cfg.pv_is_int:
        v_hat = sim.dequantize(expected.v.astype(np.int8), expected.v_scale, cfg.v_quant_granularity, cfg.block_n)
    else:
        v_hat = expected.v * expected.v_scale
    return float(np.abs(v_hat).max())
