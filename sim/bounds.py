"""An a-priori bound on the error of integer-format attention against float64 attention.

:func:`int8_error_bound` returns, for every output element, a number that ``|O_sim - O_ref|`` cannot
exceed, computed from the inputs and the quantization steps alone (it never looks at the simulator's
output). ``tests/test_sim_attention.py`` checks it on every shape family and configuration.

Derivation (one query row i of one (batch, head), one output column d; natural-log units)
----------------------------------------------------------------------------------------------
Notation: t_j = scale * q.k_j the exact scores over the row's valid keys j, t* = max_j t_j,
pi = softmax(t), L = sum_j exp(t_j - t*) >= 1, O_ref = sum_j pi_j v_j. The simulator uses
q^ = c_q s_q, k^_j = c_kj s_kj, v^_j = c_vj s_vj (codes times scales) and P codes c_Pj.

1. Half steps. Symmetric rounding leaves |x - x^| <= h * s per element, h = 1/2 plus the float32
   slack of the quantizer (x * (qmax/amax) and amax/qmax are each rounded once: 4 qmax 2**-24).
2. Scores. q^.k^ - q.k = (q^ - q).k^ + q.(k^ - k), so
       |t^_j - t_j| <= scale * (h s_q ||k^_j||_1 + h s_kj ||q||_1),   ||k^_j||_1 <= ||k_j||_1 + D h s_kj.
   Delta is the max over valid j, plus the float32 error of scaling, max-subtraction and exp2
   (a few ulps of |t|, charged generously as 2**-20 (2 max|t| + 2 Delta + n_tiles + 4)).
   Softmax ratios then move by at most e^{+-2 Delta}: sum_j |pi^_j - pi_j| <= e^{2 Delta} - 1, and since
   both sum to 1, |sum_j (pi^_j - pi_j) v_jd| <= min(e^{2 Delta} - 1, 2) * range_j(v_jd) / 2.   [term B]
3. V. sum_j pi^_j (v^_jd - v_jd) is a convex combination of half steps: <= max_j h s_v,jd.      [term A]
4. P. Each code is round(levels * P) / levels with P = exp(t^_j - m) <= 1 for the running max m at
   that tile; later tiles only multiply it by exp(m - m') <= 1. In final units the error e_j obeys
   |e_j| <= u_j = min(h_P, exp(t_j - t* + 2 Delta)), h_P = 1/(2 levels) (+2**-22 float slack):
   a code is off by at most half a level, and a P below half a level rounds to zero (error P itself).
   With p_scale "tile_max" P is taken relative to the tile's row max and the codes are then multiplied
   by r = exp2(tile max - m) <= 1: the same two inequalities hold in final units.
   The float row sum is L^ >= max(e^{-2 Delta} L, 1): the largest score's P is exp2(0) = 1 exactly.
   - normalizer "float" (numerator quantized, denominator not):
         |sum_j e_j v^_jd| / L^ <= sum_j u_j |v^_jd| / (e^{-2 Delta} L).                          [term C]
   - normalizer "quantized" (both sums over the codes, L8 = L^ + sum_j e_j): the output moves by
     sum_j e_j (v^_jd - O^_d) / L8 with O^ a convex combination of v^, so with E = sum_j u_j
         |.| <= E * range_j(v^_jd) / (e^{-2 Delta} L - E)   (when E < e^{-2 Delta} L).            [term C]
5. Float32 arithmetic on the accumulator, the row sum and the final division: relative errors of a
   few ulps per tile and per summed P of the (bounded) output: 2**-20 (block_n + n_tiles + 8) max|v^|.
                                                                                                  [term F]
Bound = A + B + C + F, and never more than the trivial range_j(v_jd) + max_j h s_v,jd when the
normalizer is "quantized" (the output is then a convex combination of the v^_j).

It is a worst case: rounding errors of different keys add with the same sign in it, so at long rows
it exceeds the observed error by roughly sqrt(Nk); it is meant to catch what is wrong, not to predict
the typical error (for that, measure).
"""

from __future__ import annotations

import numpy as np

from .attention import smooth_keys
from .checks import check_attention_shapes, check_config, check_not_simulated_only
from .config import INT_FORMATS, n_blocks
from .quant import expand_scales, quantize

#: Float32 slack of one symmetric quantization, in units of the scale, per unit of qmax: the inverse
#: scale and the product x * inv are each rounded once and the scale itself once (3 ulps, 4 charged).
QUANT_SLACK_PER_QMAX = 4 * 2.0**-24
#: Float32 slack of P's rounding round(levels P) (a multiply and an add before truncation), in P units.
P_ROUND_SLACK = 2.0**-22
#: Float32 slack per counted operation (16 ulps of 2**-24 for each one counted: a margin of >= 4x).
FLOAT_SLACK = 2.0**-20


def _rows(scales, n, granularity, block, shape):
    return np.broadcast_to(expand_scales(scales, n, granularity, block).astype(np.float64), shape)


def int8_error_bound(q, k, v, *, is_causal=False, scale=None, enable_gqa=False, config=None) -> np.ndarray:
    """Elementwise bound on |sim.attention(q, k, v, ...) - sim.reference_attention(q, k, v, ...)|.

    Parameters are those of :func:`sim.attention`; ``config`` must quantize both products to integer
    codes (``qk_format`` "int8" or "int4", ``pv_format`` "int8"); default the paper's configuration.

    Returns (B, Hq, Nq, D) float64, the sum of the terms A + B + C + F derived in this module's
    docstring. Memory: one (Nq, Nk) float64 matrix per (batch, head) at a time.
    """
    config = check_config(config)
    if not (config.qk_is_int and config.pv_is_int):
        raise ValueError(f"config: expected integer qk_format and pv_format 'int8', got {config}")
    check_not_simulated_only(config, "int8_error_bound")
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    shape = check_attention_shapes(q.shape, k.shape, v.shape, enable_gqa=enable_gqa, scale=scale)
    b, hq, hkv, nq, nk, d, sm_scale = shape
    if config.k_smoothing:
        # The simulator quantizes the smoothed keys; softmax, hence the reference output, is unchanged by
        # the shift, so the bound is derived on the smoothed problem.
        k = smooth_keys(k)
    bits = 8 if config.qk_format == "int8" else 4
    qk_qmax = INT_FORMATS[config.qk_format]
    h_qk = 0.5 + QUANT_SLACK_PER_QMAX * qk_qmax
    h_v = 0.5 + QUANT_SLACK_PER_QMAX * INT_FORMATS["int8"]
    h_p = 0.5 / config.p_levels + P_ROUND_SLACK
    n_tiles = n_blocks(nk, config.block_n)

    _, q_scale = quantize(q, config.q_granularity, block_size=config.block_m, bits=bits)
    _, k_scale = quantize(k, config.k_granularity, block_size=config.block_n, bits=bits)
    v_codes, v_scale = quantize(v, config.v_quant_granularity, block_size=config.block_n)
    q_err = h_qk * _rows(q_scale, nq, config.q_granularity, config.block_m, (b, hq, nq, 1))[..., 0]
    k_err = h_qk * _rows(k_scale, nk, config.k_granularity, config.block_n, (b, hkv, nk, 1))[..., 0]
    v_step = _rows(v_scale, nk, config.v_quant_granularity, config.block_n, (b, hkv, nk, d))
    v_err = h_v * v_step
    v_hat = v_codes.astype(np.float64) * v_step

    q64, k64, v64 = (np.asarray(x, np.float32).astype(np.float64) for x in (q, k, v))
    q_l1 = np.abs(q64).sum(-1)  # (b, hq, nq)
    k_hat_l1 = np.abs(k64).sum(-1) + d * k_err  # (b, hkv, nk)

    if is_causal:
        # Query i sees keys 0..min(i, nk - 1): per-row ranges are prefix ranges.
        last = np.minimum(np.arange(nq), nk - 1)
        valid = np.arange(nk)[None, :] <= np.arange(nq)[:, None]
    else:
        last = np.full(nq, nk - 1)
        valid = np.ones((nq, nk), bool)

    def prefix_range(x):  # x (nk, d) -> (nq, d): range over each row's valid keys
        hi, lo = np.maximum.accumulate(x, axis=0), np.minimum.accumulate(x, axis=0)
        return (hi - lo)[last]

    bound = np.empty((b, hq, nq, d))
    group = hq // hkv
    for bi in range(b):
        for hi in range(hq):
            kv = hi // group
            t = sm_scale * (q64[bi, hi] @ k64[bi, kv].T)  # (nq, nk)
            score_err = sm_scale * (q_err[bi, hi][:, None] * k_hat_l1[bi, kv][None, :]
                                    + q_l1[bi, hi][:, None] * k_err[bi, kv][None, :])
            t = np.where(valid, t, -np.inf)
            t_max = t.max(axis=1)
            delta = np.where(valid, score_err, 0.0).max(axis=1)
            t_abs = np.where(valid, np.abs(t), 0.0).max(axis=1)
            delta = delta + FLOAT_SLACK * (2 * t_abs + 2 * delta + n_tiles + 4)
            rel = np.exp(t - t_max[:, None])  # 0 where masked
            # The float row sum: >= e^{-2 Delta} L, and >= 1 because the largest score's P is exactly
            # exp2(0) = 1 and no later tile rescales it (less the float slack of the sum).
            l_low = np.maximum(np.exp(-2 * delta) * rel.sum(axis=1),
                               1 - FLOAT_SLACK * (config.block_n + n_tiles))
            with np.errstate(over="ignore"):  # a huge Delta makes the exponential inf: u is then h_p
                u = np.minimum(h_p, np.exp(t - t_max[:, None] + 2 * delta[:, None]))
            u = np.where(valid, u, 0.0)

            v_range = prefix_range(v64[bi, kv])
            v_hat_range = prefix_range(v_hat[bi, kv])
            v_hat_max = np.abs(v_hat[bi, kv]).max(axis=0)[None, :]
            term_a = np.maximum.accumulate(v_err[bi, kv], axis=0)[last]
            # sum_j |pi^_j - pi_j| <= min(e^{2 Delta} - 1, 2): two distributions differ by at most 2.
            with np.errstate(over="ignore"):
                term_b = np.minimum(np.expm1(2 * delta), 2.0)[:, None] * v_range / 2
            if config.normalizer == "float":
                term_c = (u @ np.abs(v_hat[bi, kv])) / l_low[:, None]
            else:
                e_sum = u.sum(axis=1)
                with np.errstate(divide="ignore"):
                    term_c = np.where((e_sum < l_low)[:, None],
                                      e_sum[:, None] * v_hat_range / (l_low - e_sum)[:, None], np.inf)
            term_f = FLOAT_SLACK * (config.block_n + n_tiles + 8) * v_hat_max
            total = term_a + term_b + term_c + term_f
            if config.normalizer == "quantized":
                total = np.minimum(total, v_range + term_a + term_f)
            bound[bi, hi] = total
    return bound
