"""Bad input to the simulator: every case raises ValueError or TypeError whose message names the argument."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.bounds import int8_error_bound


def _qkv(b=1, hq=2, hkv=2, nq=5, nk=7, d=16, dtype=np.float32):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((b, hq, nq, d)).astype(dtype), rng.standard_normal((b, hkv, nk, d)).astype(dtype),
            rng.standard_normal((b, hkv, nk, d)).astype(dtype))


def _with(index, array):
    q, k, v = _qkv()
    args = [q, k, v]
    args[index] = array
    return args


#: Entry points that take what torch SDPA takes (sim.checks.check_sdpa_call), and those that take exactly the
#: kernels' (B, H, N, D) layout (sim.checks.check_attention_shapes).
SDPA_FUNCTIONS = [sim.attention, sim.attention_trace]
STRICT_FUNCTIONS = [int8_error_bound, sim.reference_attention]
ATTENTION_FUNCTIONS = SDPA_FUNCTIONS + [int8_error_bound]


# --- shapes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", STRICT_FUNCTIONS)
@pytest.mark.parametrize("index, name", [(0, "query"), (1, "key"), (2, "value")])
@pytest.mark.parametrize("shape", [(2, 5, 16), (1, 2, 5, 16, 1), (16,)])
def test_wrong_ndim_names_the_argument(fn, index, name, shape):
    with pytest.raises(ValueError, match=rf"{name}: expected 4 dimensions"):
        fn(*_with(index, np.zeros(shape, np.float32)))


@pytest.mark.parametrize("fn", SDPA_FUNCTIONS)
@pytest.mark.parametrize("index, name", [(0, "query"), (1, "key"), (2, "value")])
@pytest.mark.parametrize("shape", [(16,), ()])
def test_fewer_than_two_dimensions_name_the_argument(fn, index, name, shape):
    with pytest.raises(ValueError, match=rf"{name}: expected at least 2 dimensions"):
        fn(*_with(index, np.zeros(shape, np.float32)))


@pytest.mark.parametrize("fn", STRICT_FUNCTIONS)
@pytest.mark.parametrize("index, name, shape", [
    (0, "query", (1, 2, 0, 16)),  # empty query sequence
    (1, "key", (1, 2, 0, 16)),  # empty key sequence
    (0, "query", (0, 2, 5, 16)),  # empty batch
    (0, "query", (1, 2, 5, 0)),  # empty head_dim
])
def test_empty_dimensions_are_rejected_by_the_strict_entry_points(fn, index, name, shape):
    with pytest.raises(ValueError, match=rf"{name}: expected every dimension >= 1"):
        fn(*_with(index, np.zeros(shape, np.float32)))


def test_attention_trace_needs_something_to_trace():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"query: attention_trace needs at least one key"):
        sim.attention_trace(q, k[:, :, :0], v[:, :, :0])


@pytest.mark.parametrize("fn", STRICT_FUNCTIONS)
@pytest.mark.parametrize("make, match", [
    (lambda: _qkv(nk=7)[:2] + (_qkv(nk=8)[2],), r"value: expected the shape of key"),
    (lambda: _qkv(d=16)[:2] + (_qkv(d=32)[2],), r"value: expected the shape of key"),
    (lambda: (_qkv(b=2)[0],) + _qkv(b=1)[1:], r"key: expected batch 2 as query, got 1"),
    (lambda: (_qkv(d=32)[0],) + _qkv(d=16)[1:], r"key: expected head_dim 32 as query, got 16"),
])
def test_mismatched_shapes_name_the_argument(fn, make, match):
    with pytest.raises(ValueError, match=match):
        fn(*make())


@pytest.mark.parametrize("fn", SDPA_FUNCTIONS)
@pytest.mark.parametrize("make, match", [
    (lambda: _qkv(nk=7)[:2] + (_qkv(nk=8)[2],), r"value: expected 7 keys \(seq\) as key, got 8"),
    (lambda: (_qkv(d=32)[0],) + _qkv(d=16)[1:], r"key: expected head_dim 32 as query, got 16"),
    (lambda: (_qkv(b=2)[0],) + _qkv(b=3)[1:], r"key: expected leading dimensions that broadcast with query's \(2,\)"),
    (lambda: _qkv(hq=4, hkv=4)[:2] + (_qkv(hq=4, hkv=3)[2],), r"value: expected 4 heads as query, got 3; pass"),
])
def test_sdpa_shape_mismatches_name_the_argument(fn, make, match):
    with pytest.raises(ValueError, match=match):
        fn(*make())


@pytest.mark.parametrize("fn", ATTENTION_FUNCTIONS + [sim.reference_attention])
def test_gqa_needs_the_flag_and_a_dividing_head_count(fn):
    q, k, v = _qkv(hq=4, hkv=2)
    with pytest.raises(ValueError, match=r"key: expected 4 heads as query, got 2; pass enable_gqa=True"):
        fn(q, k, v)
    q, k, v = _qkv(hq=4, hkv=3)
    with pytest.raises(ValueError, match=r"key: with enable_gqa, expected heads dividing query's 4, got 3"):
        fn(q, k, v, enable_gqa=True)


@pytest.mark.parametrize("mask_shape", [(7,), (3, 5, 7), (1, 3, 5, 7), (2, 1, 2, 5, 7), (5, 2), (1, 2, 5, 8)])
def test_mask_that_does_not_broadcast_to_the_scores_is_refused(mask_shape):
    """attn_mask broadcasts to (B, Hq, Nq, Nk) without enlarging it, with at least two dimensions (torch's rule)."""
    with pytest.raises(ValueError, match=r"attn_mask: expected a shape that broadcasts to \(1, 2, 5, 7\)"):
        sim.attention(*_qkv(), attn_mask=np.ones(mask_shape, np.bool_))


@pytest.mark.parametrize("mask_dtype", [np.int8, np.uint8, np.float16, np.float64])
def test_mask_dtype_must_be_bool_float32_or_the_querys(mask_dtype):
    with pytest.raises(TypeError, match=r"attn_mask: expected dtype bool, float32 or query's float32"):
        sim.attention(*_qkv(), attn_mask=np.zeros((5, 7), mask_dtype))
    with pytest.raises(TypeError, match=r"attn_mask: expected a numpy array or None"):
        sim.attention(*_qkv(), attn_mask=[[True]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_mask_with_nan_or_positive_inf_is_refused(bad):
    mask = np.zeros((5, 7), np.float32)
    mask[2, 3] = bad
    with pytest.raises(ValueError, match=r"attn_mask: expected finite values or -inf, found NaN or \+inf"):
        sim.attention(*_qkv(), attn_mask=mask)


# --- values and types -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", SDPA_FUNCTIONS)
@pytest.mark.parametrize("index, name", [(0, "query"), (1, "key"), (2, "value")])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(fn, index, name, bad):
    args = list(_qkv())
    args[index][0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=rf"{name}: expected finite values"):
        fn(*args)


def test_float64_values_beyond_float32_are_an_overflow_not_a_nan():
    """1e300 is finite: float64 input is computed in float32, where it cannot be represented (issue 11)."""
    q, k, v = (x.astype(np.float64) for x in _qkv())
    k[0, 0, 0, 0] = 1e300
    with pytest.raises(FloatingPointError, match=r"key: \|values\| up to 1.000e\+300 overflow float32"):
        sim.attention(q, k, v)
    k[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"key: expected finite values, found NaN or inf"):
        sim.attention(q, k, v)


@pytest.mark.parametrize("config", [sim.QuantConfig(), sim.QuantConfig.none(), sim.QuantConfig.half_int8()],
                         ids=["int8", "none", "half_int8"])
def test_overflowing_scores_raise_before_computing(config):
    """Finite inputs whose float32 scores overflow: a FloatingPointError a priori (sim.checks), never NaN."""
    q, k, v = _qkv()
    with pytest.raises(FloatingPointError, match=r"the scaled scores could overflow float32"):
        sim.attention(q * np.float32(1e19), k * np.float32(1e19), v, config=config)  # |q . k| ~ 1e38 * D
    with pytest.raises(FloatingPointError, match=r"the P @ V accumulator could overflow float32"):
        sim.attention(q, k, v * np.float32(5e37), config=config)  # Nk * max|V| beyond float32


def test_overflow_through_the_mask_is_refused():
    mask = np.zeros((5, 7), np.float32)
    mask[0, 0] = 3e38  # times log2 e overflows float32
    with pytest.raises(FloatingPointError, match=r"plus attn_mask \* log2 e"):
        sim.attention(*_qkv(), attn_mask=mask)


@pytest.mark.parametrize("fn", ATTENTION_FUNCTIONS)
@pytest.mark.parametrize("index, name", [(0, "query"), (1, "key"), (2, "value")])
@pytest.mark.parametrize("bad", [[[[[1.0]]]], 3.0, "q"])
def test_non_array_input_is_a_type_error(fn, index, name, bad):
    with pytest.raises(TypeError, match=rf"{name}: expected a numpy array"):
        fn(*_with(index, bad))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.bool_, np.complex64, np.float16])
def test_value_dtype_must_be_querys(dtype):
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=rf"value: expected query's dtype float32, got {np.dtype(dtype).name}"):
        sim.attention(q, k, v.astype(dtype))


@pytest.mark.parametrize("dtype", [np.int8, np.complex64, np.longdouble])
def test_query_dtype_must_be_a_supported_float(dtype):
    q, k, v = (x.astype(dtype) for x in _qkv())
    with pytest.raises(TypeError, match=r"query: expected dtype float16, bfloat16, float32 or float64"):
        sim.attention(q, k, v)


@pytest.mark.parametrize("fn", STRICT_FUNCTIONS)
@pytest.mark.parametrize("scale, error, match", [
    (0.0, ValueError, r"scale: expected a finite positive float"),
    (-0.5, ValueError, r"scale: expected a finite positive float"),
    (float("nan"), ValueError, r"scale: expected a finite positive float"),
    (float("inf"), ValueError, r"scale: expected a finite positive float"),
    ("0.1", TypeError, r"scale: expected a float or None"),
    (True, TypeError, r"scale: expected a float or None"),
    (np.array([0.1]), TypeError, r"scale: expected a float or None"),
])
def test_bad_scale_strict(fn, scale, error, match):
    with pytest.raises(error, match=match):
        fn(*_qkv(), scale=scale)


@pytest.mark.parametrize("fn", SDPA_FUNCTIONS)
@pytest.mark.parametrize("scale, error, match", [
    (float("nan"), ValueError, r"scale: expected a finite float, got nan"),
    (float("inf"), ValueError, r"scale: expected a finite float, got inf"),
    ("0.1", TypeError, r"scale: expected a float or None"),
    (True, TypeError, r"scale: expected a float or None"),
    (np.array([0.1]), TypeError, r"scale: expected a float or None"),
])
def test_bad_scale(fn, scale, error, match):
    with pytest.raises(error, match=match):
        fn(*_qkv(), scale=scale)


@pytest.mark.parametrize("scale", [np.float32(0.125), np.float64(0.125), 1, 0.0, -0.7])
def test_numpy_integer_zero_and_negative_scales_are_accepted(scale):
    """SDPA takes any finite real number; a NumPy float32 scalar (e.g. 1 / np.sqrt(np.float32(64))) is one."""
    out = sim.attention(*_qkv(), scale=scale)
    np.testing.assert_array_equal(out, sim.attention(*_qkv(), scale=float(scale)))


@pytest.mark.parametrize("is_causal", [1, "yes", None])
def test_is_causal_must_be_a_bool(is_causal):
    with pytest.raises(TypeError, match=r"is_causal: expected a bool"):
        sim.attention(*_qkv(), is_causal=is_causal)


@pytest.mark.parametrize("fn", [sim.attention, sim.attention_int8])
@pytest.mark.parametrize("enable_gqa", ["False", 1, None])
def test_enable_gqa_must_be_a_bool(fn, enable_gqa):
    """A truthy string used to run grouped-query attention (issue 11); torch SDPA refuses it, so does sim."""
    args = _qkv() if fn is sim.attention else _quantized()
    with pytest.raises(TypeError, match=r"enable_gqa: expected a bool"):
        fn(*args, enable_gqa=enable_gqa)


@pytest.mark.parametrize("fn", [sim.attention, sim.attention_trace, sim.attention_int8, int8_error_bound])
def test_config_must_be_a_quantconfig(fn):
    args = _qkv() if fn is not sim.attention_int8 else _quantized()
    with pytest.raises(TypeError, match=r"config: expected a sim.QuantConfig"):
        fn(*args, config={"block_n": 64})


def test_error_bound_needs_integer_formats():
    with pytest.raises(ValueError, match=r"config: expected integer qk_format"):
        int8_error_bound(*_qkv(), config=sim.QuantConfig.fp16())


# --- QuantConfig --------------------------------------------------------------------------------------------

_BAD_VALUES = {
    "q_granularity": ["channel", "row", ""],
    "k_granularity": ["channel", "TOKEN"],
    "v_granularity": ["token", "block_channel", "HEAD"],
    "qk_format": ["int2", "fp8", "float64"],
    "pv_format": ["int4", "e4m3"],
    "p_quant": ["signed127", "fixed255"],
    "p_scale": ["row_max", "dynamic"],
    "normalizer": ["exact", None],
    "p_fp8_scale": ["448", "max"],
    "fp8_accumulation": ["fp16", "fp22+fp32"],
}


@pytest.mark.parametrize("field, value", [(f, v) for f, values in _BAD_VALUES.items() for v in values])
def test_unknown_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"QuantConfig\.{field}: expected one of"):
        sim.QuantConfig(**{field: value})


def test_every_config_field_is_covered_by_a_bad_value():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(sim.QuantConfig)}
    assert fields == set(_BAD_VALUES) | {"block_m", "block_n", "warp_rows", "k_smoothing", "fp8_scaled", "v_smoothing"}


@pytest.mark.parametrize("config", [sim.QuantConfig(), sim.QuantConfig.recommended(), sim.QuantConfig.sage_attention2(),
                                    sim.QuantConfig(block_n=np.int64(64), k_smoothing=np.bool_(True))])
def test_fields_json_names_the_config_and_rebuilds_it(config):
    import json

    fields = json.loads(config.fields_json)
    assert sim.QuantConfig(**fields) == config
    assert list(fields) == sorted(fields) and all(type(v) in (str, int, bool) for v in fields.values())
    assert config.replace(block_m=64).fields_json != config.fields_json or config.block_m == 64


@pytest.mark.parametrize("field", ["k_smoothing", "fp8_scaled", "v_smoothing"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_bool_fields_must_be_bools(field, value):
    with pytest.raises(TypeError, match=rf"QuantConfig\.{field}: expected a bool"):
        sim.QuantConfig(**{field: value})


@pytest.mark.parametrize("field", ["block_m", "block_n", "warp_rows"])
@pytest.mark.parametrize("value, error, match", [
    (48, ValueError, r"expected a power of two >= 16, got 48"),
    (8, ValueError, r"expected a power of two >= 16, got 8"),
    (0, ValueError, r"expected a power of two >= 16, got 0"),
    (-64, ValueError, r"expected a power of two >= 16, got -64"),
    (64.0, TypeError, r"expected an int, got float"),
    ("64", TypeError, r"expected an int, got str"),
    (True, TypeError, r"expected an int, got bool"),
])
def test_bad_block_sizes(field, value, error, match):
    with pytest.raises(error, match=rf"QuantConfig\.{field}: {match}"):
        sim.QuantConfig(**{field: value})


def test_replace_validates_like_a_new_instance():
    with pytest.raises(ValueError, match=r"QuantConfig\.normalizer"):
        sim.QuantConfig().replace(normalizer="exact")


def test_tile_scaled_p_needs_int8_pv():
    with pytest.raises(ValueError, match=r"QuantConfig\.p_scale"):
        sim.QuantConfig(pv_format="float16", p_scale="tile_max")


def test_fp8_flavour_is_checked():
    with pytest.raises(ValueError, match=r"fmt: expected 'e4m3' or 'e5m2'"):
        sim.QuantConfig.fp8("e3m4")


# --- quantize ------------------------------------------------------------------------------------------------


def test_quantize_bad_input():
    x = _qkv()[0]
    with pytest.raises(TypeError, match=r"x: expected a numpy array"):
        sim.quantize(x.tolist())
    with pytest.raises(ValueError, match=r"x: expected 4 dimensions"):
        sim.quantize(x[0])
    with pytest.raises(ValueError, match=r"x: expected every dimension >= 1"):
        sim.quantize(x[:, :, :0])
    with pytest.raises(ValueError, match=r"granularity: expected one of"):
        sim.quantize(x, "row")
    with pytest.raises(ValueError, match=r"bits: expected 8 or 4"):
        sim.quantize(x, bits=16)
    for block_size in (None, 0, -16, 16.0, True):
        with pytest.raises(ValueError, match=r"block_size: expected a positive int"):
            sim.quantize(x, "block", block_size=block_size)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"x: expected finite values"):
        sim.quantize(bad)


def test_round_to_format_bad_format():
    with pytest.raises(ValueError, match=r"fmt: expected one of"):
        sim.round_to_format(np.zeros(3, np.float32), "fp4")


# --- attention_int8 -----------------------------------------------------------------------------------------


def _quantized(config=None, **shape):
    config = config or sim.QuantConfig()
    q, k, v = _qkv(**shape)
    q8, sq = sim.quantize(q, config.q_granularity, block_size=config.block_m)
    k8, sk = sim.quantize(k, config.k_granularity, block_size=config.block_n)
    v8, sv = sim.quantize(v, config.v_quant_granularity, block_size=config.block_n)
    return q8, k8, v8, sq, sk, sv


_CODE_NAMES = ["q_codes", "k_codes", "v_codes", "q_scale", "k_scale", "v_scale"]


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_attention_int8_codes_must_be_int8(index, dtype):
    args = list(_quantized())
    args[index] = args[index].astype(dtype)
    with pytest.raises(TypeError, match=rf"{_CODE_NAMES[index]}: expected an int8 numpy array"):
        sim.attention_int8(*args)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_attention_int8_codes_must_avoid_minus_128(index):
    args = list(_quantized())
    args[index] = args[index].copy()
    args[index][0, 0, 0, 0] = -128
    with pytest.raises(ValueError, match=rf"{_CODE_NAMES[index]}: expected codes in \[-127, 127\]"):
        sim.attention_int8(*args)


def test_attention_int8_code_shapes_are_checked():
    q8, k8, v8, sq, sk, sv = _quantized()
    with pytest.raises(ValueError, match=r"value: expected the shape of key"):
        sim.attention_int8(q8, k8, v8[:, :, :-1], sq, sk, sv)
    with pytest.raises(ValueError, match=r"query: expected 4 dimensions"):
        sim.attention_int8(q8[0], k8, v8, sq, sk, sv)


@pytest.mark.parametrize("index", [3, 4, 5])
def test_attention_int8_scales_must_be_float32_of_the_granularity_shape(index):
    name = _CODE_NAMES[index]
    args = list(_quantized())
    good = args[index]
    args[index] = good.astype(np.float64)
    with pytest.raises(TypeError, match=rf"{name}: expected a float32 numpy array"):
        sim.attention_int8(*args)
    args[index] = good.tolist()
    with pytest.raises(TypeError, match=rf"{name}: expected a float32 numpy array"):
        sim.attention_int8(*args)
    args[index] = np.concatenate([good, good], axis=0)
    with pytest.raises(ValueError, match=rf"{name}: expected shape {re_shape(good.shape)}"):
        sim.attention_int8(*args)
    for bad in (np.nan, np.inf, -1.0):
        args[index] = good.copy()
        args[index].flat[0] = bad
        with pytest.raises(ValueError, match=rf"{name}: expected finite non-negative scales"):
            sim.attention_int8(*args)


def re_shape(shape):
    import re

    return re.escape(str(tuple(shape)))


def test_attention_int8_scales_must_match_the_configured_granularity():
    """Per-token scales passed where the config says V per (batch, head): a shape error naming v_scale."""
    q8, k8, v8, sq, sk, _ = _quantized()
    _, token_scales = sim.quantize(_qkv()[2], "token")
    with pytest.raises(ValueError, match=r"v_scale: expected shape \(1, 2, 1, 1\)"):
        sim.attention_int8(q8, k8, v8, sq, sk, token_scales)


def test_attention_int8_refuses_overflow_as_the_torch_api():
    q8, k8, v8, sq, sk, sv = _quantized()
    with pytest.raises(FloatingPointError, match=r"the scaled scores could overflow float32"):
        sim.attention_int8(q8, k8, v8, sq * np.float32(1e36), sk, sv)


def test_attention_int8_needs_int8_formats():
    with pytest.raises(ValueError, match=r"config: attention_int8 needs qk_format and pv_format 'int8'"):
        sim.attention_int8(*_quantized(), config=sim.QuantConfig(qk_format="int4"))


def test_attention_int8_rejects_head_dims_whose_integer_product_is_inexact():
    """127 * 127 * D must stay below 2**24 for the float32 integer GEMM to be exact (D <= 1024), as
    sim.attention already enforces."""
    q8, k8, v8, sq, sk, sv = _quantized(d=2048, nq=1, nk=1, hq=1, hkv=1)
    with pytest.raises(ValueError, match=r"head_dim <= 1024"):
        sim.attention_int8(q8, k8, v8, sq, sk, sv)
