"""The Triton kernels under TRITON_INTERPRET=1 against sim: the same bits (docs/spec.md, level 1).

Every int8 configuration must reproduce sim exactly: quantization codes and scales, the attention
output (float32, and fp16 after rounding), the log-sum-exp, and the kernel's per-tile integer
intermediates. Values are compared bit for bit except for the sign of zero (spec 4.1: a skipped
causal tile can leave -0.0 where sim's no-op gives +0.0). Half-INT8's float P @ V product is the one
exception, with a tolerance derived below.

Sizes stay small so that the whole file runs in well under five minutes on two cores.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sim
from sim import quantize_operands, trace_operands
from strategies import (
    KERNEL_HEAD_DIMS,
    attention_cases,
    int8_configs,
    make_tensor,
    masked_attention_cases,
    quant_inputs,
)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton decorates the kernels
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED, attention_forward, dispatch, quantize_int8  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")

MAX_SEQ = 80  # hypothesis cases: a few key tiles at block_n 16/32, one at 64/128
SMALL_BLOCKS = (16, 32, 64)


# --- helpers ------------------------------------------------------------------------------------------


def assert_same_bits(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Equal dtype, shape and bit pattern, with -0.0 taken as +0.0 (adding +0.0 maps -0.0 to +0.0)."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a = (actual + actual.dtype.type(0.0)).view(f"u{actual.dtype.itemsize}")
    e = (expected + expected.dtype.type(0.0)).view(f"u{expected.dtype.itemsize}")
    differ = a != e
    if differ.any():
        idx = tuple(np.argwhere(differ)[0])
        raise AssertionError(
            f"{what}: {int(differ.sum())} of {differ.size} elements differ; first at {idx}: "
            f"kernel {actual[idx]!r}, sim {expected[idx]!r}"
        )


def sim_attention(q, k, v, cfg, *, is_causal, scale, enable_gqa):
    """sim.attention's (out, lse)."""
    return sim.attention(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, config=cfg,
                         return_lse=True)


def sim_attention_int8(codes, scales, cfg, *, is_causal, scale, enable_gqa):
    """sim.attention_int8's (out, lse) on pre-quantized numpy operands."""
    return sim.attention_int8(*codes, *scales, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa, config=cfg,
                              return_lse=True)


def quantize_like_sim(q, k, v, cfg):
    """sim's codes and scales for (q, k, v) under ``cfg``, as numpy arrays."""
    q8, qs = sim.quantize(q, cfg.q_granularity, block_size=cfg.block_m)
    k8, ks = sim.quantize(k, cfg.k_granularity, block_size=cfg.block_n)
    v8, vs = sim.quantize(v, cfg.v_quant_granularity, block_size=cfg.block_n)
    return (q8, k8, v8), (qs, ks, vs)


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


@st.composite
def kernel_configs(draw, pv_formats=("int8",), batch_invariant=True):
    """int8_configs with the small blocks, every p_scale, and (optionally) half-INT8 P formats.

    ``batch_invariant`` (the torch API's configs): no "tensor" granularity; the lower-level entries take it too.
    """
    cfg = draw(int8_configs(blocks=SMALL_BLOCKS, batch_invariant=batch_invariant))
    pv_format = draw(st.sampled_from(pv_formats))
    p_scale = draw(st.sampled_from(sim.P_SCALES)) if pv_format == "int8" else "fixed"
    return cfg.replace(pv_format=pv_format, p_scale=p_scale)


def make_case(*, seed=0, batch=1, heads_q=2, heads_kv=1, seq_q=17, seq_k=17, head_dim=32, distribution="normal",
              is_causal=False, scale=None):
    """A fixed attention case in the format of strategies.attention_cases (for @example and regressions)."""
    rng = np.random.default_rng(seed)
    return dict(q=make_tensor(rng, (batch, heads_q, seq_q, head_dim), distribution),
                k=make_tensor(rng, (batch, heads_kv, seq_k, head_dim), distribution),
                v=make_tensor(rng, (batch, heads_kv, seq_k, head_dim), distribution),
                is_causal=is_causal, enable_gqa=heads_q != heads_kv, scale=scale, distribution=distribution)


def run_api(case, cfg, dtype=torch.float32):
    return intfa.scaled_dot_product_attention(
        t(case["q"]).to(dtype), t(case["k"]).to(dtype), t(case["v"]).to(dtype), is_causal=case["is_causal"],
        scale=case["scale"], enable_gqa=case["enable_gqa"], config=cfg,
    )


def kernel_mask(case) -> np.ndarray | None:
    """The case's attn_mask broadcast to (B, Hq, Nq, Nk), bool or float32 (exact from float16): what the kernel takes."""
    mask = case.get("attn_mask")
    if mask is None:
        return None
    b, hq, nq, _ = case["q"].shape
    full = np.broadcast_to(mask, (b, hq, nq, case["k"].shape[2]))
    return np.ascontiguousarray(full if full.dtype == np.bool_ else full.astype(np.float32))


def check_api_against_sim(case, cfg):
    """Float32 inputs (the fp16 case values, exactly) -> float32 output: sim's bits."""
    out = run_api(case, cfg)
    expected, _ = sim_attention(case["q"], case["k"], case["v"], cfg, is_causal=case["is_causal"],
                                scale=case["scale"], enable_gqa=case["enable_gqa"])
    assert_same_bits(out.numpy(), expected, f"output {cfg}")


# --- quantization -------------------------------------------------------------------------------------


@given(quant_inputs(max_seq=100, head_dims=KERNEL_HEAD_DIMS + (48,)))
@example((make_case(seq_q=1)["q"], "tensor", 16))
@example((make_case(seq_q=113, distribution="zero_rows")["q"], "block_channel", 32))
def test_quantize_matches_sim(inputs):
    x, granularity, block = inputs
    codes, scales = intfa.quantize(t(x), granularity, block_size=block)
    expected_codes, expected_scales = sim.quantize(x, granularity, block_size=block)
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert_same_bits(codes.numpy(), expected_codes, f"codes ({granularity})")
    assert_same_bits(scales.numpy(), expected_scales, f"scales ({granularity})")


@pytest.mark.parametrize("granularity", sim.QUANT_GRANULARITIES)
def test_quantize_bfloat16_and_seq_contiguous_layout(granularity):
    """bf16 input (loaded and widened exactly), and V's transposed (sequence-contiguous) code layout."""
    x = make_case(seq_q=37, head_dim=64, distribution="extreme_outliers")["q"]
    x_bf16 = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    expected_codes, expected_scales = sim.quantize(x_bf16.float().numpy(), granularity, block_size=16)
    codes, scales = quantize_int8(x_bf16, granularity, block_size=16, seq_contiguous=True)
    assert codes.stride(2) == 1, "seq_contiguous codes must have the sequence contiguous"
    assert_same_bits(codes.numpy(), expected_codes, "codes")
    assert_same_bits(scales.numpy(), expected_scales, "scales")


def test_quantize_strided_input():
    x = make_case(seq_q=40, head_dim=32)["q"]  # (1, 2, 40, 32)
    strided = t(x).transpose(1, 2).contiguous().transpose(1, 2)[:, :, ::2]  # non-contiguous heads and tokens
    codes, scales = intfa.quantize(strided, "token")
    expected_codes, expected_scales = sim.quantize(np.ascontiguousarray(x[:, :, ::2]), "token")
    assert_same_bits(codes.numpy(), expected_codes, "codes")
    assert_same_bits(scales.numpy(), expected_scales, "scales")


def test_quantize_rounds_halves_to_even():
    """Exact ties: a row whose max is 127 has inv = 1, so y = x, and halves go to the even neighbour."""
    halves = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 126.5, -126.5, 0.49999997, 127.0], np.float32)
    x = np.zeros((1, 1, 2, 32), np.float32)
    x[0, 0, :, : halves.size] = halves
    codes, _ = intfa.quantize(t(x), "token")
    assert codes[0, 0, 0, : halves.size].tolist() == [0, 2, 2, 4, 0, -2, -2, 126, -126, 0, 127]
    assert_same_bits(codes.numpy(), sim.quantize(x, "token")[0], "codes")


@pytest.mark.parametrize("granularity", ["token", "channel", "tensor"])
def test_quantize_launch_parameters_do_not_change_results(granularity):
    """Tile height and warps are speed-only: several tiles per head, tails, both code layouts."""
    x = make_case(seq_q=100, head_dim=64, distribution="extreme_outliers")["q"]
    expected_codes, expected_scales = sim.quantize(x, granularity)
    for tile_elements, num_warps, seq_contiguous in ((512, 1, False), (1024, 2, True), (16384, 8, True)):
        codes, scales = quantize_int8(t(x), granularity, seq_contiguous=seq_contiguous, tile_elements=tile_elements,
                                      num_warps=num_warps)
        assert_same_bits(codes.numpy(), expected_codes, f"codes, tile {tile_elements}")
        assert_same_bits(scales.numpy(), expected_scales, f"scales, tile {tile_elements}")


# NaN and inf are detected inside the quantize kernels, from NaN-propagating group maxima: every
# position of a group must count, in the first, a middle and the last (tail) tile, for each granularity.
NONFINITE_POSITIONS = [(0, 0, 0, 0), (0, 1, 50, 17), (1, 1, 112, 47), (1, 0, 64, 40)]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy on the poisoned tile
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("granularity", sim.QUANT_GRANULARITIES)
def test_quantize_refuses_nonfinite_anywhere(granularity, value):
    x = torch.from_numpy(make_case(batch=2, seq_q=113, head_dim=48)["q"])  # tails in N and a padded D
    for position in NONFINITE_POSITIONS:
        bad = x.clone()
        bad[position] = value
        with pytest.raises(ValueError, match="x: expected finite values, found NaN or inf"):
            intfa.quantize(bad, granularity, block_size=24)
        flag = torch.zeros(2, dtype=torch.int32)
        quantize_int8(bad, granularity, block_size=24, seq_contiguous=True, nonfinite_flag=flag[1:])
        assert flag.tolist() == [0, 1], f"flag at {position}"
    flag = torch.zeros(1, dtype=torch.int32)
    quantize_int8(x, granularity, block_size=24, nonfinite_flag=flag)
    assert flag.item() == 0


# --- attention: full INT8 -----------------------------------------------------------------------------


@given(attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=MAX_SEQ), kernel_configs())
@example(make_case(seq_q=70, seq_k=45, heads_q=2, heads_kv=1, is_causal=True),
         sim.QuantConfig(block_m=16, block_n=16, k_granularity="head", q_granularity="head"))
@example(make_case(seq_q=33, seq_k=64, head_dim=64, distribution="zero_rows", is_causal=True),
         sim.QuantConfig(block_m=32, block_n=16, v_granularity="block", p_quant="signed255", p_scale="tile_max"))
def test_attention_float32_matches_sim(case, cfg):
    check_api_against_sim(case, cfg)


@given(attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=MAX_SEQ), kernel_configs(batch_invariant=False))
@example(make_case(seq_q=1, seq_k=1), sim.QuantConfig(block_m=16, block_n=16))
@example(make_case(seq_q=20, seq_k=37), sim.QuantConfig(block_m=16, block_n=16, q_granularity="tensor",
                                                        k_granularity="tensor", v_granularity="tensor"))
def test_attention_int8_fp16_output_and_lse_match_sim(case, cfg):
    """Pre-quantized inputs (sim's codes and scales): fp16 output is sim's rounded, lse sim's bits."""
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = intfa.attention_int8(*map(t, codes), *map(t, scales), is_causal=case["is_causal"], scale=case["scale"],
                                    enable_gqa=case["enable_gqa"], config=cfg, out_dtype=torch.float16,
                                    return_lse=True)
    expected_out, expected_lse = sim_attention_int8(codes, scales, cfg, is_causal=case["is_causal"],
                                                    scale=case["scale"], enable_gqa=case["enable_gqa"])
    assert_same_bits(out.numpy(), expected_out.astype(np.float16), "fp16 output")
    assert_same_bits(lse.numpy(), expected_lse, "lse")


@given(masked_attention_cases(head_dims=(32, 64), max_seq=48), kernel_configs(batch_invariant=False))
def test_tile_intermediates_match_sim_trace(case, cfg):
    """The kernel's integer scores and P codes of every visited tile are sim's trace (with an attn_mask too)."""
    ops = quantize_operands(case["q"], case["k"], case["v"], cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    shape = sim.check_attention_shapes(case["q"].shape, case["k"].shape, case["v"].shape,
                                       enable_gqa=case["enable_gqa"], scale=case["scale"])
    mask = kernel_mask(case)
    _, _, trace = attention_forward(*codes, t(ops.q_scale), t(ops.k_scale), t(ops.v_scale), config=cfg,
                                    scale=shape.scale, is_causal=case["is_causal"], out_dtype=torch.float32,
                                    trace=True, return_lse=True, attn_mask=None if mask is None else t(mask))
    steps = trace_operands(ops, config=cfg, is_causal=case["is_causal"], scale=shape.scale, attn_mask=mask).steps
    bn, nk = cfg.block_n, shape.seq_k
    visited = trace["qk"].numpy() != np.iinfo(np.int32).min
    for step in steps:
        cols = slice(step.key_tile * bn, step.key_tile * bn + (step.cols.stop - step.cols.start))
        width = cols.stop - cols.start
        seen = visited[..., cols]
        assert (trace["qk"].numpy()[..., cols][seen] == step.qk[..., :width][seen]).all(), f"qk, tile {step.key_tile}"
        assert (trace["p_codes"].numpy()[..., cols][seen] == step.p_codes[..., :width][seen]).all(), \
            f"P codes, tile {step.key_tile}"
    assert visited[..., :nk].any()


# --- attention: half-INT8 -----------------------------------------------------------------------------

# Half-INT8 multiplies float P by float V. Each product of two fp16 (or bf16) values is exact in
# float32; their sum over a key tile is rounded in whatever order the summing code chooses: sim uses
# float32 BLAS, the interpreter np.matmul. Everything else (codes, m, l, lse) is identical, so the
# outputs differ only by that reordering: per tile at most block_n * 2**-24 * sum_t p |v|, and after
# the division by l (>= the largest p of the row) at most block_n * 2**-24 * max|v| per tile. With a
# factor 2 for the alpha-rescaled carry across tiles, the bound below is conservative yet ~1e-5
# relative to max|v|, far below fp16's own resolution.


def half_int8_tolerance(v: np.ndarray, cfg) -> float:
    return 2.0 * cfg.block_n * 2.0**-24 * float(np.abs(v.astype(np.float32)).max()) + 1e-30


@given(attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=MAX_SEQ), kernel_configs(pv_formats=("float16", "bfloat16")))
def test_half_int8_matches_sim(case, cfg):
    out = run_api(case, cfg)
    expected, _ = sim_attention(case["q"], case["k"], case["v"], cfg, is_causal=case["is_causal"],
                                scale=case["scale"], enable_gqa=case["enable_gqa"])
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=half_int8_tolerance(case["v"], cfg))


def test_half_int8_lse_exact():
    case = make_case(seq_q=40, seq_k=70, head_dim=64, is_causal=True)
    cfg = sim.QuantConfig.half_int8(block_m=16, block_n=32)
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    v16 = torch.from_numpy(case["v"])
    shape = sim.check_attention_shapes(case["q"].shape, case["k"].shape, case["v"].shape, enable_gqa=True, scale=None)
    _, lse = attention_forward(t(codes[0]), t(codes[1]), v16, t(scales[0]), t(scales[1]), None, config=cfg,
                               scale=shape.scale, is_causal=True, out_dtype=torch.float32, return_lse=True)
    _, expected_lse = sim_attention(case["q"], case["k"], case["v"], cfg, is_causal=True, scale=None, enable_gqa=True)
    assert_same_bits(lse.numpy(), expected_lse, "half-INT8 lse")


# --- attn_mask, saturation, half-INT8's power-of-two V (issue 11) ----------------------------------------


@given(masked_attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=MAX_SEQ), kernel_configs())
@example(dict(make_case(batch=2, seq_q=33, seq_k=40, distribution="normal"),
              attn_mask=np.arange(40)[None, None, None, :] < np.array([0, 23])[:, None, None, None]),
         sim.QuantConfig(block_m=16, block_n=16))  # padding: one sequence fully masked, one keeping 23 keys
@example(dict(make_case(seq_q=20, seq_k=50, is_causal=True),
              attn_mask=np.where(np.arange(50) % 3 == 0, -np.inf, np.float32(np.finfo(np.float32).min))[None, :]
              .repeat(20, 0).astype(np.float32)),
         sim.QuantConfig.recommended(block_m=16, block_n=32))  # finfo.min rows (finite) with causal
def test_masked_attention_matches_sim(case, cfg):
    """attn_mask bool or additive (float32), in a broadcast shape, with or without causal: sim's bits."""
    mask = case["attn_mask"]
    mask32 = None if mask is None or mask.dtype == np.bool_ else mask.astype(np.float32)
    mask = mask if mask32 is None else mask32
    out = intfa.scaled_dot_product_attention(
        t(case["q"]).float(), t(case["k"]).float(), t(case["v"]).float(), attn_mask=None if mask is None else t(mask),
        is_causal=case["is_causal"], scale=case["scale"], enable_gqa=case["enable_gqa"], config=cfg)
    expected = sim.attention(case["q"].astype(np.float32), case["k"].astype(np.float32), case["v"].astype(np.float32),
                             attn_mask=mask, is_causal=case["is_causal"], scale=case["scale"],
                             enable_gqa=case["enable_gqa"], config=cfg)
    assert_same_bits(out.numpy(), expected, f"masked output {cfg}")


def test_fully_masked_rows_return_what_torch_sdpa_returns():
    """A row without a visible key: torch SDPA returns 0 (torch 2.13 on CPU, math and flash backends alike)."""
    case = make_case(seq_q=24, seq_k=30, heads_q=2, heads_kv=2)
    q, k, v = (t(case[n]).float() for n in "qkv")
    keep = torch.ones(24, 30, dtype=torch.bool)
    keep[[0, 5, 23]] = False
    additive = torch.zeros(24, 30).masked_fill(~keep, float("-inf"))
    for mask in (keep, additive):
        out = intfa.scaled_dot_product_attention(q, k, v, attn_mask=mask, config=sim.QuantConfig(block_m=16, block_n=16))
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert torch.equal(out[:, :, [0, 5, 23]], expected[:, :, [0, 5, 23]])
        assert torch.equal(out[:, :, [0, 5, 23]], torch.zeros_like(out[:, :, [0, 5, 23]]))
        assert torch.isfinite(out).all()


def test_float64_mask_below_float32s_range_stays_finite_in_sim_and_kernel():
    """A float64 model's mask rows of finfo(float64).min: torch averages them uniformly (equal finite scores), so
    they become float32's lowest, not -inf (which would mask the row): sim and the kernel alike, to the bit."""
    case = make_case(seq_q=24, seq_k=30, heads_q=2, heads_kv=2)
    q, k, v = (case[n].astype(np.float64) for n in "qkv")
    mask = np.zeros((24, 30))
    mask[3] = np.finfo(np.float64).min
    mask[7, ::2] = -1e300
    mask[9, :5] = -np.inf
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    expected = sim.attention(q, k, v, attn_mask=mask, config=cfg)
    out = intfa.scaled_dot_product_attention(*map(t, (q, k, v)), attn_mask=t(mask), config=cfg)
    np.testing.assert_array_equal(out.numpy(), expected)
    uniform = v.mean(axis=2)  # row 3 sees every key with the same (finite) bias
    assert np.abs(expected[:, :, 3] - uniform).max() < 0.05 * np.abs(uniform).max()


def test_output_at_float16s_maximum_saturates_instead_of_overflowing():
    """Issue 11: V = +-65504 gave inf on 3328 of 8192 outputs: the float normalizer (the paper's) lets the output
    exceed max |V| by up to one P level. The output now saturates at 65504, as sim.round_output says."""
    case = make_case(seq_q=64, seq_k=64, heads_q=2, heads_kv=2, head_dim=64)
    v = np.full(case["v"].shape, 65504.0, np.float16)
    v[..., ::2] = -65504.0
    q, k = (t(case[n]) for n in "qk")
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    out = intfa.scaled_dot_product_attention(q, k, t(v), config=cfg)
    float_out = sim.attention(case["q"], case["k"], v, config=cfg)
    assert (np.abs(float_out) > 65504).any(), "the case must exceed float16's range before rounding"
    assert torch.isfinite(out).all()
    assert_same_bits(out.numpy(), sim.round_output(float_out, "float16"), "saturated float16 output")
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), t(v).float()).half()
    assert torch.isfinite(reference).all()


@pytest.mark.parametrize("magnitude", [1e-9, 1e6])
def test_half_int8_scales_bfloat16_values_outside_float16s_range(magnitude):
    """Half-INT8 rounds V to float16: bf16 V of 1e-9 used to become zeros, of 1e6 was refused. The power of two
    per (batch, head) keeps both (within half-INT8's usual error of SDPA)."""
    case = make_case(seq_q=40, seq_k=40, head_dim=64)
    q, k = (t(case[n]).to(torch.bfloat16) for n in "qk")
    v = (t(case["v"]).float() * magnitude).to(torch.bfloat16)
    cfg = sim.QuantConfig.half_int8(block_m=16, block_n=16)
    out = intfa.scaled_dot_product_attention(q, k, v, enable_gqa=True, config=cfg).float()
    expected = sim.attention(*(x.float().numpy() for x in (q, k, v)), enable_gqa=True, config=cfg)
    np.testing.assert_allclose(out.numpy(), sim.round_output(expected, "bfloat16").astype(np.float32), rtol=2.0**-7,
                               atol=0)
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True)
    assert sim.relative_l2(out.numpy().astype(np.float64), reference.numpy().astype(np.float64)) < 0.05


# --- regressions: shapes and layouts ------------------------------------------------------------------


@pytest.mark.parametrize("seq", [1, 17, 113, 339])
def test_sequence_tails(seq):
    cfg = sim.QuantConfig(block_m=32, block_n=64)
    check_api_against_sim(make_case(seq_q=seq, seq_k=seq, heads_q=1, head_dim=32, is_causal=True), cfg)


@pytest.mark.parametrize("seq_q, seq_k", [(100, 30), (30, 100), (1, 77), (77, 1)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_seq_q_differs_from_seq_k(seq_q, seq_k, is_causal):
    """Causal with Nq > Nk (late rows see every key) and Nq < Nk (top-left: later keys never seen)."""
    cfg = sim.QuantConfig(block_m=16, block_n=32, normalizer="quantized")
    check_api_against_sim(make_case(seq_q=seq_q, seq_k=seq_k, heads_q=1, is_causal=is_causal), cfg)


@pytest.mark.parametrize("heads_q, heads_kv", [(4, 2), (3, 1)])
def test_gqa_and_mqa(heads_q, heads_kv):
    cfg = sim.QuantConfig(block_m=16, block_n=16, k_granularity="block", v_granularity="channel")
    check_api_against_sim(make_case(heads_q=heads_q, heads_kv=heads_kv, seq_q=30, seq_k=45, batch=2), cfg)


@pytest.mark.parametrize("distribution", ["zero_rows", "constant_rows"])
def test_zero_and_constant_rows(distribution):
    cfg = sim.QuantConfig(block_m=16, block_n=16, p_quant="signed255", normalizer="quantized")
    check_api_against_sim(make_case(seq_q=40, seq_k=40, distribution=distribution, is_causal=True), cfg)


def test_all_zero_inputs_give_zero_output():
    q = torch.zeros(1, 1, 20, 32)
    out = intfa.scaled_dot_product_attention(q, q, q, config=sim.QuantConfig(block_m=16, block_n=16))
    assert torch.equal(out, torch.zeros_like(out))


def test_strided_inputs():
    """Non-contiguous query/key/value (heads and sequence swapped in memory, every other token)."""
    case = make_case(seq_q=60, seq_k=60, heads_q=2, heads_kv=2, head_dim=64)
    cfg = sim.QuantConfig(block_m=16, block_n=16, q_granularity="block", v_granularity="block")

    def strided(x):
        return t(x).transpose(1, 2).contiguous().transpose(1, 2)[:, :, ::2].float()

    out = intfa.scaled_dot_product_attention(strided(case["q"]), strided(case["k"]), strided(case["v"]), config=cfg)
    expected, _ = sim_attention(*(np.ascontiguousarray(case[n][:, :, ::2]) for n in "qkv"), cfg, is_causal=False,
                                scale=None, enable_gqa=False)
    assert_same_bits(out.numpy(), expected, "output")


def test_head_dim_padding():
    """A head dim that is not a power of two runs padded (masked) in registers."""
    check_api_against_sim(make_case(head_dim=48, seq_q=20, seq_k=33), sim.QuantConfig(block_m=16, block_n=16))


def test_bfloat16_inputs_and_output():
    case = make_case(seq_q=25, seq_k=40, head_dim=64, is_causal=True)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    out = run_api(case, cfg, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    bf = {n: torch.from_numpy(case[n]).to(torch.bfloat16).float().numpy() for n in "qkv"}
    expected, _ = sim_attention(bf["q"], bf["k"], bf["v"], cfg, is_causal=True, scale=None, enable_gqa=True)
    assert torch.equal(out, torch.from_numpy(expected).to(torch.bfloat16))


def test_default_config_is_the_papers():
    case = make_case(seq_q=130, seq_k=130, heads_q=1)  # more than one default tile (128 x 64)
    out = run_api(case, None)
    expected, _ = sim_attention(case["q"], case["k"], case["v"], sim.QuantConfig(), is_causal=False, scale=None,
                                enable_gqa=False)
    assert_same_bits(out.numpy(), expected, "output")


# --- bad input ----------------------------------------------------------------------------------------


def _qkv(n=16, d=32, dtype=torch.float16):
    x = torch.randn(1, 2, n, d, generator=torch.Generator().manual_seed(0)).to(dtype)
    return x, x.clone(), x.clone()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(attn_mask=torch.ones(16, 16, dtype=torch.int32)), TypeError, "attn_mask: expected dtype bool"),
        (dict(attn_mask=torch.ones(15, 16, dtype=torch.bool)), ValueError, "attn_mask: expected a shape"),
        (dict(attn_mask=[[True]]), TypeError, "attn_mask: expected a torch.Tensor"),
        (dict(dropout_p=0.1), NotImplementedError, "dropout_p"),
        (dict(is_causal=1), TypeError, "is_causal"),
        (dict(enable_gqa="False"), TypeError, "enable_gqa: expected a bool"),
        (dict(scale=float("nan")), ValueError, "scale: expected a finite float"),
        (dict(validate=1), TypeError, "validate: expected a bool"),
        (dict(config="paper"), TypeError, "config"),
        (dict(config=sim.QuantConfig(qk_format="float16")), ValueError, "qk_format 'int8'"),
        (dict(config=sim.QuantConfig(pv_format="fp8_e4m3")), ValueError, "pv_format"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    q, k, v = _qkv()
    with pytest.raises(error, match=match):
        intfa.scaled_dot_product_attention(q, k, v, **kwargs)


def test_bad_tensors():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="query"):
        intfa.scaled_dot_product_attention(q.numpy(), k, v)
    with pytest.raises(ValueError, match="key"):
        intfa.scaled_dot_product_attention(q, k[:, :, :, :16], v)  # head dims differ
    with pytest.raises(ValueError, match="value"):
        intfa.scaled_dot_product_attention(q, k, v[:, :, :8])  # key and value shapes differ
    with pytest.raises(ValueError, match="enable_gqa"):
        intfa.scaled_dot_product_attention(torch.cat([q, q], 1), k, v)  # 4 query heads, 2 key heads
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        intfa.scaled_dot_product_attention(q[0, 0, 0], k[0, 0, 0], v[0, 0, 0])
    with pytest.raises(TypeError, match="key: expected query's dtype float16, got float32"):
        intfa.scaled_dot_product_attention(q, k.float(), v)
    with pytest.raises(TypeError, match="query: expected dtype float16, bfloat16, float32 or float64"):
        intfa.scaled_dot_product_attention(q.int(), k.int(), v.int())
    with pytest.raises(NotImplementedError, match="head_dim: the INT8 kernel supports head dims up to 256"):
        intfa.scaled_dot_product_attention(*_qkv(d=512))
    for name, i in (("query", 0), ("key", 1), ("value", 2)):
        bad = list(_qkv())
        bad[i][0, 0, 3, 5] = float("nan")
        with pytest.raises(ValueError, match=f"{name}: expected finite"):
            intfa.scaled_dot_product_attention(*bad)
    inf_k = k.clone()
    inf_k[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="key: expected finite"):
        intfa.scaled_dot_product_attention(q, inf_k, v)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("config", [sim.QuantConfig(block_m=16, block_n=16, v_granularity="channel"),
                                    sim.QuantConfig(block_m=16, block_n=16, q_granularity="head",
                                                    k_granularity="block", v_granularity="block"),
                                    sim.QuantConfig.half_int8(block_m=16, block_n=16)], ids=["channel", "block", "half"])
def test_nonfinite_inputs_named(config):
    for name, i in (("query", 0), ("key", 1), ("value", 2)):
        for value, position in ((float("nan"), (0, 1, 15, 31)), (float("-inf"), (0, 0, 7, 0))):
            bad = list(_qkv(dtype=torch.float32))
            bad[i][position] = value
            with pytest.raises(ValueError, match=f"{name}: expected finite values, found NaN or inf"):
                intfa.scaled_dot_product_attention(*bad, config=config)


def test_score_overflow_raises_before_launch():
    """Finite inputs whose scaled scores exceed float32: refused a priori, from the scales."""
    q, k, v = _qkv(dtype=torch.float32)
    big = q * 1e19  # |q . k| ~ 1e38 * D: beyond float32
    with pytest.raises(FloatingPointError, match="scaled scores could overflow float32"):
        intfa.scaled_dot_product_attention(big, big.clone(), v)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    codes, scales = quantize_like_sim(*(x.numpy() for x in (q, k, v)), cfg)
    huge = torch.from_numpy(scales[0]) * 1e36
    with pytest.raises(FloatingPointError, match="scaled scores"):
        intfa.attention_int8(*map(t, codes), huge, *map(t, scales[1:]), config=cfg)
    with pytest.raises(FloatingPointError, match="P @ V accumulator"):
        intfa.scaled_dot_product_attention(q, k, v * 1e36)


def test_large_finite_inputs_below_the_bound_run():
    """Just inside the bound the result is finite (and sim's), so the check is not overly cautious."""
    case = make_case(seq_q=20, seq_k=20, head_dim=32)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    for n in "qk":
        case[n] = case[n].astype(np.float32) * np.float32(1e16)  # scores ~ 1e32 * D, below 3.4e38
    case["v"] = case["v"].astype(np.float32) * np.float32(1e30)
    out = run_api(case, cfg)
    assert bool(torch.isfinite(out).all())
    check_api_against_sim(case, cfg)


def test_mismatched_devices():
    q, k, v = _qkv()
    meta = torch.empty_like(k, device="meta")
    with pytest.raises(ValueError, match="key: expected device"):
        intfa.scaled_dot_product_attention(q, meta, v)


def test_bad_quantize_arguments():
    x = _qkv()[0]
    with pytest.raises(ValueError, match="granularity"):
        intfa.quantize(x, "row")
    with pytest.raises(ValueError, match="block_size"):
        intfa.quantize(x, "block")
    with pytest.raises(TypeError, match="x: expected dtype"):
        intfa.quantize(x.to(torch.int32), "token")
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        intfa.quantize(x.numpy(), "token")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="x: expected finite"):
        intfa.quantize(bad, "token")


def test_bad_attention_int8_arguments():
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    q, k, v = (x.float().numpy() for x in _qkv())
    codes, scales = quantize_like_sim(q, k, v, cfg)
    codes, scales = list(map(t, codes)), list(map(t, scales))
    with pytest.raises(TypeError, match="q_codes: expected dtype int8"):
        intfa.attention_int8(codes[0].float(), *codes[1:], *scales, config=cfg)
    with pytest.raises(ValueError, match="k_scale: expected shape"):
        intfa.attention_int8(*codes, scales[0], scales[1][:, :, :3], scales[2], config=cfg)
    with pytest.raises(TypeError, match="v_scale: expected dtype float32"):
        intfa.attention_int8(*codes, *scales[:2], scales[2].double(), config=cfg)
    minus128 = codes[1].clone()
    minus128[0, 0, 0, 0] = -128
    with pytest.raises(ValueError, match="k_codes: expected codes in"):
        intfa.attention_int8(codes[0], minus128, codes[2], *scales, config=cfg)
    negative = scales[0].clone()
    negative[0, 0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="q_scale: expected finite non-negative"):
        intfa.attention_int8(*codes, negative, *scales[1:], config=cfg)
    with pytest.raises(ValueError, match="pv_format 'int8'"):
        intfa.attention_int8(*codes, *scales, config=cfg.replace(pv_format="float16"))
    with pytest.raises(TypeError, match="out_dtype"):
        intfa.attention_int8(*codes, *scales, config=cfg, out_dtype=torch.int8)
    for short_v in (codes[2][:, :, :-1], codes[2][..., :-16], codes[2][:, :1]):  # fewer keys, channels, heads
        with pytest.raises(ValueError, match="value: expected the shape of key"):
            intfa.attention_int8(*codes[:2], short_v.contiguous(), *scales, config=cfg)
    with pytest.raises(ValueError, match="kernel: expected 'auto', 'tl' or 'gluon'"):
        intfa.attention_int8(*codes, *scales, config=cfg, kernel="cuda")
    with pytest.raises(ValueError, match="kernel: the Gluon kernel needs a Hopper GPU .* no interpreter"):
        intfa.attention_int8(*codes, *scales, config=cfg, kernel="gluon")
    with pytest.raises(ValueError, match="kernel: the Gluon kernel is a prefill kernel"):
        intfa.attention_int8(*codes, *scales, config=cfg, kernel="gluon", kv_splits=2)


def test_kernel_choice():
    """kernel="auto" is the Gluon kernel on Hopper wherever it takes the operands and was measured faster
    (dispatch.default_prefill_launch), the tl kernel everywhere else; kernel="tl" is the tl kernel, which on the
    CPU gives "auto"'s bytes."""
    paper, rec = sim.QuantConfig.paper(), sim.QuantConfig.recommended()
    auto = dispatch.default_prefill_launch
    assert auto("sm90", 128, False, 16384, 16384, paper, None) == dispatch.gluon_launch(128, False)
    assert auto("sm90", 64, True, 8192, 8192, paper, None) == dispatch.gluon_launch(64, True)
    assert dispatch.gluon_launch(128, False).kernel == dispatch.gluon_launch(64, True).kernel == "gluon"
    tl_launch = dispatch.prefill_launch("sm90", 128, False, 16384, paper)
    assert tl_launch.kernel == "tl" and tl_launch.int_cvt
    assert auto("sm90", 128, False, 16384, 16384, paper, "head dim 96 not in (64, 128)") == tl_launch
    # Where the tl kernel was measured faster: below 4k keys at D=128 non-causal, below 16k at D=128 causal and D=64
    # non-causal, below 8k at D=64 causal; with V block scales the Gluon kernel from 4k on, but for D=128 causal
    # from 16k.
    assert auto("sm90", 128, False, 2048, 2048, paper, None).kernel == "tl"
    assert auto("sm90", 128, False, 4096, 4096, paper, None) == dispatch.gluon_launch(128, False)
    assert auto("sm90", 128, True, 8192, 8192, paper, None).kernel == "tl"
    assert auto("sm90", 128, True, 16384, 16384, paper, None) == dispatch.gluon_launch(128, True)
    assert auto("sm90", 128, True, 8192, 8192, rec, None).kernel == "tl"
    assert auto("sm90", 128, True, 16384, 16384, rec, None) == dispatch.gluon_launch(128, True)
    for causal in (False, True):
        assert auto("sm90", 64, causal, 2048, 2048, rec, None).kernel == "tl"
        assert auto("sm90", 64, causal, 4096, 4096, rec, None) == dispatch.gluon_launch(64, causal)
    assert auto("sm90", 64, False, 8192, 8192, paper, None).kernel == "tl"
    assert auto("sm90", 64, False, 16384, 16384, paper, None) == dispatch.gluon_launch(64, False)
    assert auto("sm90", 64, True, 4096, 4096, paper, None).kernel == "tl"
    assert auto("sm90", 128, False, 4096, 4096, rec, None) == dispatch.gluon_launch(128, False)
    assert auto("sm90", 128, False, 2048, 2048, rec, None).kernel == "tl"
    block_q = paper.replace(q_granularity="block", block_m=64)
    assert auto("sm90", 128, False, 16384, 16384, block_q, None).kernel == "tl"
    for arch in ("cpu", "sm80", "sm100"):
        assert auto(arch, 128, False, 16384, 16384, paper, None).kernel == "tl"
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    q, k, v = (x.float().numpy() for x in _qkv())
    codes, scales = quantize_like_sim(q, k, v, cfg)
    codes, scales = list(map(t, codes)), list(map(t, scales))
    assert torch.equal(intfa.attention_int8(*codes, *scales, config=cfg, kernel="tl"),
                       intfa.attention_int8(*codes, *scales, config=cfg))


@settings(max_examples=4)
@given(attention_cases(head_dims=(32, 64), max_seq=48), kernel_configs(batch_invariant=False))
def test_int_cvt_launch_gives_the_same_bits(case, cfg):
    """Launch.int_cvt (I2F conversions of the int32 products instead of the magic-number add) changes no bit: both
    are exact for the kernel's products (|x| < 2**22), so the launch option is speed only."""
    if not cfg.pv_is_int:
        return  # half-INT8 has no int32 P8 @ V8 product; its scores convert alike
    ops = quantize_operands(case["q"], case["k"], case["v"], cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    shape = sim.check_attention_shapes(case["q"].shape, case["k"].shape, case["v"].shape,
                                       enable_gqa=case["enable_gqa"], scale=case["scale"])
    block_m = cfg.block_m if cfg.q_granularity == "block" else 64
    outs = [attention_forward(*codes, t(ops.q_scale), t(ops.k_scale), t(ops.v_scale), config=cfg, scale=shape.scale,
                              is_causal=case["is_causal"], out_dtype=torch.float32, return_lse=True,
                              launch=dispatch.Launch(block_m, 4, 3, True, int_cvt=int_cvt))
            for int_cvt in (False, True)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_quantconfig_is_sims():
    assert intfa.QuantConfig is sim.QuantConfig


@settings(max_examples=8)
@given(attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=80, distributions=("normal", "outliers")))
def test_k_smoothing_matches_sim_bit_for_bit(case):
    """The recommended configuration (K smoothing, block V, signed255, tile_max, quantized l)."""
    config = sim.QuantConfig.recommended(block_m=16, block_n=32)
    kwargs = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=case["enable_gqa"])
    expected = sim.attention(case["q"], case["k"], case["v"], config=config, **kwargs)
    q, k, v = (torch.from_numpy(case[name]) for name in ("q", "k", "v"))
    out = intfa.scaled_dot_product_attention(q.float(), k.float(), v.float(), config=config, **kwargs)
    np.testing.assert_array_equal(out.numpy(), expected)
