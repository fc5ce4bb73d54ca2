"""Properties of sim.quantize / sim.dequantize: the symmetric integer quantizer every operand goes through.

Float32 slack used below. quantize computes inv = fl(qmax / amax), y = fl(x * inv), scale = fl(amax / qmax):
three roundings of relative size <= 2**-24 each, so x / scale differs from y by at most
3 * (1 + 2**-22) * 2**-24 * |y| <= 4 * qmax * 2**-24 (|y| <= qmax (1 + 2**-23)). Rounding y leaves at most
1/2, so |x - code * scale| <= scale * (1/2 + 4 qmax 2**-24) in exact arithmetic (checked in float64).
dequantize rounds code * scale once more: + 2**-24 * |code * scale| <= qmax * 2**-24 * scale.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import BLOCKS, make_tensor, quant_inputs

import sim

BITS = st.sampled_from((8, 4))


def _qmax(bits: int) -> int:
    return sim.INT_FORMATS["int8" if bits == 8 else "int4"]


def _half_step_slack(qmax: int) -> float:
    return 4 * qmax * 2.0**-24  # see the module docstring


def _expected_amax(x: np.ndarray, granularity: str, block: int) -> np.ndarray:
    """max |x| of every group, float64, in quantize's scale shapes: written independently of sim."""
    a = np.abs(np.asarray(x, np.float64))
    n = a.shape[2]
    if granularity == "tensor":
        return np.full((1, 1, 1, 1), a.max())
    if granularity == "head":
        return a.max(axis=(2, 3), keepdims=True)
    if granularity == "token":
        return a.max(axis=3, keepdims=True)
    if granularity == "channel":
        return a.max(axis=2, keepdims=True)
    starts = range(0, n, block)
    if granularity == "block":
        return np.stack([a[:, :, s : s + block].max(axis=(2, 3)) for s in starts], axis=2)[..., None]
    return np.stack([a[:, :, s : s + block].max(axis=2) for s in starts], axis=2)  # block_channel


def _scale_rows(scales, n, granularity, block):
    return np.asarray(sim.expand_scales(scales, n, granularity, block), np.float64)


@given(quant_inputs(), BITS)
def test_codes_are_int8_in_symmetric_range_and_scales_have_the_granularity_shape(case, bits):
    x, granularity, block = case
    qmax = _qmax(bits)
    codes, scales = sim.quantize(x, granularity, block_size=block, bits=bits)
    assert codes.dtype == np.int8 and codes.shape == x.shape
    assert codes.min() >= -qmax and codes.max() <= qmax  # in particular -128 never appears
    b, h, n, d = x.shape
    nb = -(-n // block)
    expected_shape = {"tensor": (1, 1, 1, 1), "head": (b, h, 1, 1), "token": (b, h, n, 1), "channel": (b, h, 1, d),
                      "block": (b, h, nb, 1), "block_channel": (b, h, nb, d)}[granularity]
    assert scales.dtype == np.float32 and scales.shape == expected_shape
    assert np.isfinite(scales).all() and (scales > 0).all()


@given(quant_inputs(), BITS)
def test_scale_is_group_absmax_over_qmax_and_the_max_element_maps_to_qmax(case, bits):
    x, granularity, block = case
    qmax = _qmax(bits)
    codes, scales = sim.quantize(x, granularity, block_size=block, bits=bits)
    amax = np.maximum(_expected_amax(x, granularity, block), sim.AMAX_FLOOR)
    # scale = fl(amax / qmax): one rounding.
    np.testing.assert_allclose(scales.astype(np.float64), amax / qmax, rtol=2.0**-23, atol=0)
    # Every element whose |x| equals its group's amax (above the floor) becomes +-qmax, with its sign.
    amax_rows = _scale_rows(amax, x.shape[2], granularity, block)  # amax broadcast per element
    x64 = np.asarray(x, np.float64)
    at_max = (np.abs(x64) == amax_rows) & (amax_rows > sim.AMAX_FLOOR)
    assert at_max.any() or not (np.abs(x64) > 0).any()
    np.testing.assert_array_equal(codes[at_max], (np.sign(x64[at_max]) * qmax).astype(np.int8))


@given(quant_inputs(), BITS)
def test_reconstruction_error_is_at_most_half_a_step(case, bits):
    x, granularity, block = case
    qmax = _qmax(bits)
    codes, scales = sim.quantize(x, granularity, block_size=block, bits=bits)
    step = _scale_rows(scales, x.shape[2], granularity, block)
    x64 = np.asarray(x, np.float64)
    err = np.abs(x64 - codes.astype(np.float64) * step)
    assert (err <= step * (0.5 + _half_step_slack(qmax))).all()
    # dequantize is codes * scales rounded once to float32.
    deq = sim.dequantize(codes, scales, granularity, block)
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert (np.abs(x64 - deq) <= step * (0.5 + _half_step_slack(qmax) + qmax * 2.0**-24)).all()


@given(quant_inputs(), BITS)
def test_quantize_is_odd_and_dequantize_then_quantize_is_a_fixed_point(case, bits):
    x, granularity, block = case
    codes, scales = sim.quantize(x, granularity, block_size=block, bits=bits)
    neg_codes, neg_scales = sim.quantize(-x, granularity, block_size=block, bits=bits)
    np.testing.assert_array_equal(neg_codes, -codes)  # symmetric: no -128 to break negation
    np.testing.assert_array_equal(neg_scales, scales)
    # Requantizing the reconstruction gives the same codes (its group max is +-qmax * scale).
    deq = sim.dequantize(codes, scales, granularity, block)
    codes2, _ = sim.quantize(deq, granularity, block_size=block, bits=bits)
    np.testing.assert_array_equal(codes2, codes)


@given(st.sampled_from(sim.QUANT_GRANULARITIES), st.sampled_from(BLOCKS), BITS, st.integers(0, 2**32 - 1))
def test_zero_groups_give_zero_codes_and_finite_scales(granularity, block, bits, seed):
    rng = np.random.default_rng(seed)
    x = make_tensor(rng, (2, 2, 70, 32), "normal", np.float32)
    x[1] = 0.0  # a whole batch entry: every granularity but "tensor" has all-zero groups there
    x[0, 0, 3] = 0.0  # one zero token
    x[0, 1, :, 5] = 0.0  # one zero channel
    zeros = np.zeros_like(x)
    for arr in (x, zeros):
        codes, scales = sim.quantize(arr, granularity, block_size=block, bits=bits)
        assert np.isfinite(scales).all() and (scales > 0).all()
        np.testing.assert_array_equal(codes[arr == 0], 0)
        assert np.isfinite(sim.dequantize(codes, scales, granularity, block)).all()
    _, zero_scales = sim.quantize(zeros, granularity, block_size=block, bits=bits)
    np.testing.assert_array_equal(zero_scales, np.float32(sim.AMAX_FLOOR / _qmax(bits)))


@given(quant_inputs(), st.sampled_from((np.float16, ml_dtypes.bfloat16, np.float32, np.float64)))
def test_low_precision_inputs_quantize_as_their_float32_values(case, dtype):
    """fp16 and bf16 convert to float32 exactly, so their codes are those of the float32 values."""
    x, granularity, block = case
    low = np.asarray(x, np.float32).astype(dtype)
    codes, scales = sim.quantize(low, granularity, block_size=block)
    codes32, scales32 = sim.quantize(low.astype(np.float32), granularity, block_size=block)
    np.testing.assert_array_equal(codes, codes32)
    np.testing.assert_array_equal(scales, scales32)


@pytest.mark.parametrize("granularity", sim.QUANT_GRANULARITIES)
@pytest.mark.parametrize("bits", (8, 4))
def test_tiny_values_near_the_amax_floor(granularity, bits):
    """Groups just above, at and below AMAX_FLOOR (incl. float32 subnormals): finite, half-step exact."""
    qmax = _qmax(bits)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 4, 32, 16)).astype(np.float32)
    x[:, 0] *= np.float32(4 * sim.AMAX_FLOOR)  # above the floor: ordinary quantization
    x[:, 1] *= np.float32(sim.AMAX_FLOOR)  # at most the floor
    x[:, 2] *= np.float32(2.0**-140)  # float32 subnormals, far below the floor
    x[:, 3, :, 0] = np.float32(sim.AMAX_FLOOR)  # exactly the floor in every token
    x[:, 3, :, 1:] = 0.0
    codes, scales = sim.quantize(x, granularity, block_size=16, bits=bits)
    assert np.isfinite(scales).all() and (scales >= np.float32(sim.AMAX_FLOOR / qmax)).all()
    step = _scale_rows(scales, x.shape[2], granularity, 16)
    err = np.abs(x.astype(np.float64) - codes.astype(np.float64) * step)
    assert (err <= step * (0.5 + _half_step_slack(qmax))).all()
    if granularity == "token":
        # Groups above the floor use their full range; groups below it are scaled from the floor.
        assert (np.abs(codes[:, 0]).max(axis=-1) == qmax).all()
        np.testing.assert_array_equal(np.abs(codes[:, 3, :, 0]), qmax)
        np.testing.assert_array_equal(codes[:, 2], 0)  # 2**-140 / (2**-119 / qmax) < 1/2


def test_round_half_even_rounds_ties_to_even():
    y = np.array([-2.5, -1.5, -0.5, -0.49, 0.0, 0.49, 0.5, 1.5, 2.5, 126.5, 0.5 - 2**-25], np.float32)
    np.testing.assert_array_equal(sim.round_half_even(y), [-2, -2, 0, 0, 0, 0, 0, 2, 2, 126, 0])


@given(st.floats(-(2.0**22) + 1, 2.0**22 - 1, width=32))
def test_round_half_even_is_ieee_rint(y):
    """The magic-number add is exactly IEEE round-to-nearest-even (NumPy's rint) in its range."""
    y32 = np.float32(y)
    assert sim.round_half_even(y32) == np.rint(y32)