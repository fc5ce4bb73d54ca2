"""Properties of the simulator's attention: float mode against float64, INT8 mode against a proven bound.

Float-mode tolerance (``_float32_tolerance``): the tile loop differs from float64 attention only by float32
rounding. A score q.k over D terms carries at most (D + 8) 2**-24 scale sum_d |q_d k_d| of error (D - 1
additions in any order, the scale factor, the max subtraction and exp2 a few ulps each); a logit error
delta moves the softmax weights by at most e^{2 delta} - 1 in total (sim.bounds, term B); the accumulator,
row sum and division add (block_n + n_tiles + 8) ulps of max|v|. Every count is charged at 2**-20 per
unit (16 ulps), a margin of at least 4x.

INT8 mode obeys sim.bounds.int8_error_bound: |O - O_ref| <= A + B + C + F elementwise, where A is half a V
step, B the effect of the Q/K half steps on the softmax (e^{2 Delta} - 1 times half V's range), C the P
codes' half-level errors (1 / (2 levels) each, or P itself where P rounds to zero) over the row sum, F the
float32 arithmetic. The derivation is in sim/bounds.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    BLOCKS,
    attention_cases,
    emulation_configs,
    float_mode_configs,
    int8_configs,
    integer_configs,
    make_tensor,
)

import sim
from sim.bounds import int8_error_bound

SEEDS = st.integers(0, 2**32 - 1)
ULP_SLACK = 2.0**-20  # 16 float32 ulps per counted operation: see the module docstring


def _call(case, **extra):
    kwargs = {key: case[key] for key in ("is_causal", "scale", "enable_gqa")}
    kwargs.update(extra)
    return kwargs


def _head_map(hq, hkv):
    return np.arange(hq) // (hq // hkv)


def _float32_tolerance(case, config):
    """Elementwise bound on |float-mode sim - float64 reference| from float32 rounding alone."""
    q, k, v = (np.asarray(case[name], np.float64) for name in ("q", "k", "v"))
    d = q.shape[-1]
    scale = case["scale"] if case["scale"] is not None else 1 / np.sqrt(d)
    hm = _head_map(q.shape[1], k.shape[1])
    abs_scores = scale * (np.abs(q) @ np.swapaxes(np.abs(k[:, hm]), -1, -2))  # (B, H, Nq, Nk)
    n_tiles = -(-k.shape[2] // config.block_n)
    delta = ULP_SLACK * (d + 8) * abs_scores.max(axis=-1)  # (B, H, Nq)
    v_range = np.ptp(v[:, hm], axis=2)[:, :, None, :]
    v_max = np.abs(v[:, hm]).max(axis=2)[:, :, None, :]
    return (np.minimum(np.expm1(2 * delta), 2.0)[..., None] * v_range / 2
            + ULP_SLACK * (config.block_n + n_tiles + 8) * v_max)


def _reference(case):
    return sim.reference_attention(case["q"], case["k"], case["v"], **_call(case))


# --- float mode: the tile loop itself ------------------------------------------------------------------


@given(attention_cases(dtypes=(np.float16, np.float32)), float_mode_configs())
def test_float_mode_equals_float64_reference(case, config):
    out = sim.attention(case["q"], case["k"], case["v"], config=config, **_call(case))
    assert out.dtype == np.float32 and out.shape == case["q"].shape
    err = np.abs(out - _reference(case))
    assert (err <= _float32_tolerance(case, config)).all(), f"max err {err.max()}"


@given(attention_cases(), st.sampled_from(BLOCKS), st.sampled_from(BLOCKS), st.sampled_from(BLOCKS))
def test_float_mode_is_tiling_invariant(case, block_m, block_n, other_block_n):
    """block_m changes nothing in float mode (rows are independent); block_n only rounding."""
    config = sim.QuantConfig.none(block_m=block_m, block_n=block_n)
    out = sim.attention(case["q"], case["k"], case["v"], config=config, **_call(case))
    same_n = sim.attention(case["q"], case["k"], case["v"], config=config.replace(block_m=128), **_call(case))
    np.testing.assert_array_equal(out, same_n)
    other = config.replace(block_n=other_block_n)
    out_other = sim.attention(case["q"], case["k"], case["v"], config=other, **_call(case))
    tolerance = _float32_tolerance(case, config) + _float32_tolerance(case, other)
    assert (np.abs(out - out_other) <= tolerance).all()


@given(attention_cases(dtypes=(np.float32,)), float_mode_configs())
def test_float_mode_lse_matches_float64_logsumexp(case, config):
    _, lse = sim.attention(case["q"], case["k"], case["v"], config=config, return_lse=True, **_call(case))
    q, k = (np.asarray(case[name], np.float64) for name in ("q", "k"))
    d = q.shape[-1]
    scale = case["scale"] if case["scale"] is not None else 1 / np.sqrt(d)
    hm = _head_map(q.shape[1], k.shape[1])
    scores = scale * (q @ np.swapaxes(k[:, hm], -1, -2))
    if case["is_causal"]:
        scores = np.where(np.arange(k.shape[2])[None, :] <= np.arange(q.shape[2])[:, None], scores, -np.inf)
    top = scores.max(axis=-1)
    lse_ref = top + np.log(np.exp(scores - top[..., None]).sum(axis=-1))
    # Score errors (as _float32_tolerance) move lse by at most delta; lse's own float32 rounding is
    # a few ulps of |lse|; the row sum's (block_n + n_tiles) ulps enter through log(1 + eps) <= eps.
    abs_scores = scale * (np.abs(q) @ np.swapaxes(np.abs(k[:, hm]), -1, -2))
    n_tiles = -(-k.shape[2] // config.block_n)
    tolerance = ULP_SLACK * ((d + 8) * abs_scores.max(axis=-1) + 4 * np.abs(lse_ref) + config.block_n + n_tiles + 8)
    assert lse.dtype == np.float32 and lse.shape == q.shape[:3]
    assert (np.abs(lse - lse_ref) <= tolerance).all()


# --- INT8 mode: the stated bound -------------------------------------------------------------------------


@given(attention_cases(max_seq=200), integer_configs(), st.booleans())
def test_integer_mode_error_is_within_the_a_priori_bound(case, config, k_smoothing):
    config = config.replace(k_smoothing=k_smoothing)
    out = sim.attention(case["q"], case["k"], case["v"], config=config, **_call(case))
    bound = int8_error_bound(case["q"], case["k"], case["v"], config=config, **_call(case))
    assert np.isfinite(out).all()
    err = np.abs(out - _reference(case))
    assert (err <= bound).all(), f"worst err/bound {(err / bound).max()}"


def test_bound_is_informative_on_normal_inputs():
    """The bound is a worst case but not vacuous: on N(0, 1) inputs it stays well below V's range."""
    rng = np.random.default_rng(0)
    q, k, v = (make_tensor(rng, (1, 2, 256, 64), "normal") for _ in range(3))
    bound = int8_error_bound(q, k, v)
    v_range = np.ptp(v.astype(np.float64), axis=2)[:, :, None, :]
    assert np.median(bound / v_range) < 0.5  # the trivial bound for a convex combination is 1.0


@pytest.mark.parametrize("k_granularity", sim.QK_GRANULARITIES)
@pytest.mark.parametrize("q_granularity", sim.QK_GRANULARITIES)
def test_every_qk_granularity_runs_with_several_key_tiles(q_granularity, k_granularity):
    """Regression: per-tensor K scales must broadcast over every key tile, not only the first."""
    rng = np.random.default_rng(1)
    q, k, v = (make_tensor(rng, (1, 2, 100, 32), "normal") for _ in range(3))
    config = sim.QuantConfig(q_granularity=q_granularity, k_granularity=k_granularity, block_m=32, block_n=32)
    out = sim.attention(q, k, v, config=config)
    assert (np.abs(out - sim.reference_attention(q, k, v)) <= int8_error_bound(q, k, v, config=config)).all()


@settings(max_examples=3)
@given(SEEDS)
def test_quantized_normalizer_removes_the_float_normalizers_bias(seed):
    """Uniform inputs, N = 1024: the float normalizer's output mean is biased low, the quantized one's is not.

    Q, K ~ U(-2, 2) spread the scores so that many P fall below half a code (1/254) and round to zero:
    the numerator loses them, the float row sum does not. V ~ U(0, 1) keeps the output mean away from
    zero so that mean(O) / mean(O_ref) - 1 is well defined. Measured: -0.4% (float), 0 +- 1e-5 (quantized).
    """
    rng = np.random.default_rng(seed)
    shape = (1, 8, 1024, 64)
    q, k = (rng.uniform(-2, 2, shape).astype(np.float32) for _ in range(2))
    v = rng.uniform(0, 1, shape).astype(np.float32)
    ref_mean = sim.reference_attention(q, k, v).mean(axis=(2, 3))

    def mean_deviation(normalizer):  # one sample per head: independent Q, K, V
        out = sim.attention(q, k, v, config=sim.QuantConfig(normalizer=normalizer))
        return (out.mean(axis=(2, 3)) / ref_mean - 1).ravel()

    biased, unbiased = mean_deviation("float"), mean_deviation("quantized")
    assert (biased < -0.002).all()
    standard_error = unbiased.std(ddof=1) / np.sqrt(unbiased.size)
    assert abs(unbiased.mean()) <= 4 * standard_error + 1e-6
    assert abs(unbiased.mean()) < 0.1 * abs(biased.mean())


# --- softmax structure ------------------------------------------------------------------------------------


@given(attention_cases(), int8_configs())
def test_rows_are_convex_combinations_of_the_dequantized_values(case, config):
    config = config.replace(normalizer="quantized")  # l sums exactly the weights that multiplied V
    q, k, v = case["q"], case["k"], case["v"]
    out = sim.attention(q, k, v, config=config, **_call(case)).astype(np.float64)
    ops = sim.quantize_operands(q, k, v, config)
    v_hat = np.asarray(sim.dequantize(ops.v.astype(np.int8), ops.v_scale, config.v_quant_granularity,
                                      config.block_n), np.float64)[:, _head_map(q.shape[1], k.shape[1])]
    if case["is_causal"]:  # row i sees keys 0..i: prefix extremes
        last = np.minimum(np.arange(q.shape[2]), k.shape[2] - 1)
        hi, lo = np.maximum.accumulate(v_hat, axis=2)[:, :, last], np.minimum.accumulate(v_hat, axis=2)[:, :, last]
    else:
        hi, lo = v_hat.max(axis=2, keepdims=True), v_hat.min(axis=2, keepdims=True)
    n_tiles = -(-k.shape[2] // config.block_n)
    slack = ULP_SLACK * (config.block_n + n_tiles + 8) * np.abs(v_hat).max(axis=2, keepdims=True)
    assert (out <= hi + slack).all() and (out >= lo - slack).all()


@given(attention_cases(), st.sampled_from(list(emulation_configs()) + ["none", "int8_quantized"]))
def test_causal_first_row_is_the_first_value(case, name):
    config = {"none": sim.QuantConfig.none(), "int8_quantized": sim.QuantConfig(normalizer="quantized")}.get(
        name) or emulation_configs()[name]
    q, k, v = case["q"], case["k"], case["v"]
    out = sim.attention(q, k, v, **_call(case, is_causal=True), config=config)
    ops = sim.quantize_operands(q, k, v, config)
    hm = _head_map(q.shape[1], k.shape[1])
    if config.pv_is_int:
        first = sim.dequantize(ops.v.astype(np.int8), ops.v_scale, config.v_quant_granularity, config.block_n)
        # (127 * code * scale) / 127: two roundings of float32 away from code * scale.
        np.testing.assert_allclose(out[:, :, 0], first[:, hm, 0], rtol=2.0**-22, atol=0)
    else:  # P = exp2(0) = 1 exactly, l = 1: the value itself, rounded to the PV format (half-INT8: the value
        # divided by its head's power of two, rounded, multiplied back: exact)
        first = ops.v if ops.v_scale is None else ops.v * ops.v_scale
        np.testing.assert_array_equal(out[:, :, 0], first[:, hm, 0])


@given(attention_cases(), int8_configs())
def test_gqa_equals_explicit_head_repetition(case, config):
    q, k, v = case["q"], case["k"], case["v"]
    hm = _head_map(q.shape[1], k.shape[1])
    out = sim.attention(q, k, v, config=config, **_call(case, enable_gqa=True))
    repeated = sim.attention(q, k[:, hm], v[:, hm], config=config, **_call(case, enable_gqa=False))
    np.testing.assert_array_equal(out, repeated)


@given(attention_cases(), int8_configs())
def test_batch_entries_and_heads_are_independent(case, config):
    # Per-tensor scales couple every (batch, head) by design (test_batch_invariance shows it): use per-head ones.
    config = config.replace(**{f: "head" for f in ("q_granularity", "k_granularity", "v_granularity")
                               if getattr(config, f) == "tensor"})
    q, k, v = case["q"], case["k"], case["v"]
    out = sim.attention(q, k, v, config=config, **_call(case))
    group = q.shape[1] // k.shape[1]
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            kv = h // group
            single = sim.attention(q[b : b + 1, h : h + 1], k[b : b + 1, kv : kv + 1], v[b : b + 1, kv : kv + 1],
                                   config=config, **_call(case))
            np.testing.assert_array_equal(out[b, h], single[0, 0])


# --- the other entry points -------------------------------------------------------------------------------


@given(attention_cases(), int8_configs())
def test_attention_int8_on_quantize_outputs_equals_attention(case, config):
    q, k, v = case["q"], case["k"], case["v"]
    q8, sq = sim.quantize(q, config.q_granularity, block_size=config.block_m)
    k8, sk = sim.quantize(k, config.k_granularity, block_size=config.block_n)
    v8, sv = sim.quantize(v, config.v_quant_granularity, block_size=config.block_n)
    out, lse = sim.attention(q, k, v, config=config, return_lse=True, **_call(case))
    out8, lse8 = sim.attention_int8(q8, k8, v8, sq, sk, sv, config=config, return_lse=True, **_call(case))
    np.testing.assert_array_equal(out8, out)
    np.testing.assert_array_equal(lse8, lse)


@given(attention_cases(max_seq=150), int8_configs())
def test_trace_steps_have_the_documented_shapes_and_end_in_the_output(case, config):
    q, k, v = case["q"], case["k"], case["v"]
    trace = sim.attention_trace(q, k, v, config=config, **_call(case))
    np.testing.assert_array_equal(trace.out, sim.attention(q, k, v, config=config, **_call(case)))
    b, hq, nq, d = q.shape
    nk, bn = k.shape[2], config.block_n
    assert len(trace.steps) == -(-nk // bn)
    ops = trace.operands
    k_codes = ops.k[:, _head_map(hq, k.shape[1])].astype(np.int64)
    p_max = 127
    p_min = 0 if config.p_quant == "fixed127" else -128
    previous_m = np.full((b, hq, nq), -np.inf, np.float32)
    for j, step in enumerate(trace.steps):
        lo, hi = j * bn, min((j + 1) * bn, nk)
        assert step.key_tile == j and step.cols == slice(lo, hi)
        assert step.qk.dtype == np.int32 and step.qk.shape == (b, hq, nq, bn)
        for name in ("s", "p"):
            assert getattr(step, name).dtype == np.float32 and getattr(step, name).shape == (b, hq, nq, bn)
        assert step.p_codes.shape == (b, hq, nq, bn)
        for name in ("m", "alpha", "p_row_scale", "l"):
            assert getattr(step, name).dtype == np.float32 and getattr(step, name).shape == (b, hq, nq)
        assert step.acc.dtype == np.float32 and step.acc.shape == (b, hq, nq, d)
        # The integer product is exact; padded key columns are masked to -inf and get P = 0.
        exact = ops.q.astype(np.int64) @ np.swapaxes(k_codes[:, :, lo:hi], -1, -2)
        np.testing.assert_array_equal(step.qk[..., : hi - lo], exact)
        assert np.isneginf(step.s[..., hi - lo :]).all() and (step.p[..., hi - lo :] == 0).all()
        assert (step.p >= 0).all() and (step.p <= 1).all()
        assert step.p_codes.min() >= p_min and step.p_codes.max() <= p_max
        assert (step.m >= previous_m).all() and (step.alpha <= 1).all() and (step.p_row_scale <= 1).all()
        previous_m = step.m


@pytest.mark.parametrize("p_quant, block_n", [("fixed127", 2048), ("signed255", 1024)])
def test_block_n_past_exact_pv_range_is_refused(p_quant, block_n):
    """Past block_n * 127 * levels < 2**24 the P8 @ V8 sums would leave float32's exact range."""
    with pytest.raises(ValueError, match="block_n"):
        sim.QuantConfig(p_quant=p_quant, block_n=block_n)


@pytest.mark.parametrize("p_quant, block_n", [("fixed127", 1024), ("signed255", 512)])
def test_pv_product_is_the_exact_integer_sum_rounded_once(p_quant, block_n):
    """P8 @ V8 is an integer product: the kernels accumulate it in int32 and convert to float32 once, so the
    first tile's accumulator (alpha = 0 there) must be float32(exact sum). At the largest block_n QuantConfig
    accepts, every P is 1 (equal scores) and the V codes lie in [100, 127]: the sums reach ~2**23-2**24,
    where a float32 sum in the wrong order would round."""
    config = sim.QuantConfig(p_quant=p_quant, block_n=block_n, v_granularity="tensor")
    d = 16
    rng = np.random.default_rng(0)
    q = np.ones((1, 1, 1, d), np.float32)
    k = np.ones((1, 1, block_n, d), np.float32)
    v = rng.uniform(100 / 127, 1, (1, 1, block_n, d)).astype(np.float32)
    v[0, 0, 0, 0] = 1.0  # per-tensor scale 1/127: codes round(127 v) in [100, 127]
    trace = sim.attention_trace(q, k, v, config=config)
    weights = trace.steps[0].p_codes.astype(np.int64) + (128 if p_quant == "signed255" else 0)
    assert (weights == config.p_levels).all()
    exact = weights @ trace.operands.v.astype(np.int64)[0, 0]
    assert 2**23 < exact.max() < 2**24
    np.testing.assert_array_equal(trace.steps[0].acc, exact.astype(np.float32))


# --- emulations and degenerate rows ----------------------------------------------------------------------


@settings(max_examples=5)
@given(SEEDS)
def test_emulated_formats_order_by_error_on_normal_inputs(seed):
    """fp16 < half-INT8 < INT8 < FP8 e4m3 < FP8 e5m2 in relative L2 on N(0, 1) inputs (the paper's order)."""
    rng = np.random.default_rng(seed)
    q, k, v = (make_tensor(rng, (1, 4, 256, 64), "normal") for _ in range(3))
    ref = sim.reference_attention(q, k, v)
    errors = {name: sim.relative_l2(sim.attention(q, k, v, config=config), ref)
              for name, config in emulation_configs().items()}
    order = ["fp16", "half_int8", "int8", "fp8_e4m3", "fp8_e5m2"]
    assert [errors[name] for name in order] == sorted(errors.values()), errors


@pytest.mark.parametrize("config_name", list(emulation_configs()) + ["none", "int8_quantized", "int4", "signed255"])
@pytest.mark.parametrize("is_causal", (False, True))
def test_constant_and_zero_rows_never_give_nan(config_name, is_causal):
    config = {"none": sim.QuantConfig.none(), "int8_quantized": sim.QuantConfig(normalizer="quantized"),
              "int4": sim.QuantConfig(qk_format="int4"), "signed255": sim.QuantConfig(p_quant="signed255")}.get(
        config_name) or emulation_configs()[config_name]
    rng = np.random.default_rng(2)
    shape = (1, 2, 77, 32)
    zeros = np.zeros(shape, np.float32)
    for q, k, v in [(zeros, zeros, zeros),
                    (make_tensor(rng, shape, "constant_rows"), make_tensor(rng, shape, "constant_rows"),
                     make_tensor(rng, shape, "constant_rows")),
                    (make_tensor(rng, shape, "zero_rows"), make_tensor(rng, shape, "zero_rows"), zeros.astype(np.float16))]:
        out, lse = sim.attention(q, k, v, is_causal=is_causal, config=config, return_lse=True)
        assert np.isfinite(out).all() and np.isfinite(lse).all()
        if not v.any():
            np.testing.assert_array_equal(out, 0.0)
    # All-zero Q and K: every score is 0, the softmax uniform, the output the (prefix) mean of V.
    v = make_tensor(rng, shape, "normal", np.float32)
    out = sim.attention(zeros, zeros, v, is_causal=is_causal, config=config).astype(np.float64)
    ref = sim.reference_attention(zeros, zeros, v, is_causal=is_causal)
    assert np.isfinite(out).all()
    if config_name == "none":
        np.testing.assert_allclose(out, ref, atol=1e-6 * np.abs(v).max())


@given(attention_cases(max_seq=150, distributions=("normal", "outliers")), int8_configs())
def test_k_smoothing_leaves_float_attention_unchanged_and_quantizes_smoothed_keys(case, config):
    """Subtracting K's per-channel mean moves every score of a row by the same amount: in float
    mode the output is unchanged; in INT8 mode the codes are those of the smoothed keys."""
    kwargs = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=case["enable_gqa"])
    q, k, v = case["q"], case["k"], case["v"]
    plain = sim.attention(q, k, v, config=sim.QuantConfig.none(), **kwargs)
    smoothed = sim.attention(q, k, v, config=sim.QuantConfig.none().replace(k_smoothing=True), **kwargs)
    np.testing.assert_allclose(smoothed, plain, rtol=1e-4, atol=1e-4 * float(np.abs(v.astype(np.float32)).max()))
    ops = sim.quantize_operands(q, k, v, config.replace(k_smoothing=True))
    codes, scales = sim.quantize(sim.smooth_keys(k), config.k_granularity, block_size=config.block_n)
    np.testing.assert_array_equal(ops.k, codes.astype(np.float32))
    np.testing.assert_array_equal(ops.k_scale, scales)


def test_key_means_are_exact_for_float16_keys():
    """The float64 sum of float16 keys is exact (so torch and NumPy agree): compare with fractions."""
    from fractions import Fraction

    rng = np.random.default_rng(3)
    k = (rng.standard_normal((1, 1, 300, 4)) * 100).astype(np.float16)
    means = sim.key_means(k)
    for d in range(4):
        exact = sum(Fraction(float(x)) for x in k[0, 0, :, d]) / 300
        assert means[0, 0, 0, d] == np.float32(float(exact))


def test_recommended_config_beats_the_paper_on_llm_like_outliers():
    """K smoothing is what the recommended configuration needs on LLM-like keys (issue #6)."""
    rng = np.random.default_rng(0)
    q, k, v = sim.make_qkv(rng, (1, 2, 512, 64), (1, 2, 512, 64), "outliers")
    ref = sim.reference_attention(q, k, v)
    paper = sim.relative_l2(sim.attention(q, k, v), ref)
    recommended = sim.relative_l2(sim.attention(q, k, v, config=sim.QuantConfig.recommended()), ref)
    assert recommended < 0.5 * paper
