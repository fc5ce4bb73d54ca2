"""The FP16/BF16 and FP8 FlashAttention baselines under Triton's interpreter (CPU tensors), against sim.

sim's ``QuantConfig.fp16()`` / ``QuantConfig.fp8()`` run the same tile loop with the same roundings (operands and
P to the format, float32 accumulation, the float P summed into l). The interpreter evaluates exp2 and the dots in
NumPy like sim, but sums in its own order and returns the output rounded to 16 bits, so the kernel must agree
with sim to within the output's rounding, while both sit at the format's own distance from float64 attention.
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from strategies import KERNEL_HEAD_DIMS, attention_cases

import sim
from intfa.kernels import baselines
from intfa.runtime import interpreted
from intfa.kernels.baselines import (
    TileConfig,
    flash_attention_fp8,
    flash_attention_fp16,
    fp8_operands,
)

pytestmark = pytest.mark.skipif(
    not interpreted(),
    reason="compiled mode: conftest switches the interpreter on only where there is no CUDA GPU",
)

# bfloat16 runs on the GPU only (the interpreter mishandles it: the wrappers refuse it on CPU, tested below).
# Output rounding: half an ulp per element at most, a relative L2 of at most 2^-11 for float16.
OUTPUT_ROUNDING = 2.0**-11
SIM_CONFIG = {"fp16": sim.QuantConfig.fp16, "fp8": sim.QuantConfig.fp8}


def _torch(x, dtype):
    return torch.from_numpy(np.asarray(x, np.float32)).to(dtype)


def _run(kernel, q, k, v, *, is_causal, scale, tile):
    """The baseline on float16 numpy inputs; returns its float16 output as float32."""
    qt, kt, vt = (_torch(x, torch.float16) for x in (q, k, v))
    if kernel == "fp8":
        out = flash_attention_fp8(*fp8_operands(qt, kt, vt), is_causal=is_causal, scale=scale, tile=tile)
    else:
        out = flash_attention_fp16(qt, kt, vt, is_causal=is_causal, scale=scale, tile=tile)
    assert out.shape == qt.shape and out.dtype == torch.float16
    return out.float().numpy()


def _sim(kernel, q, k, v, *, is_causal, scale, tile):
    config = SIM_CONFIG[kernel](block_m=tile.block_m, block_n=tile.block_n)
    return sim.attention(q, k, v, is_causal=is_causal, scale=scale, config=config)


def _check_against_sim(kernel, q, k, v, *, is_causal=False, scale=None, tile=baselines.INTERPRETER_TILE):
    out = _run(kernel, q, k, v, is_causal=is_causal, scale=scale, tile=tile)
    assert np.isfinite(out).all()
    expected = _sim(kernel, q, k, v, is_causal=is_causal, scale=scale, tile=tile)
    # Rounding the output is at most half an ulp per element: relative L2 <= one ulp leaves room for sums
    # taken in another order (and the rare P that then rounds the other way).
    assert sim.relative_l2(out, expected) <= 2 * OUTPUT_ROUNDING + 1e-6
    # And the kernel is as close to float64 attention as sim is: its error is the format's, nothing more.
    reference = sim.reference_attention(q, k, v, is_causal=is_causal, scale=scale)
    sim_error = sim.relative_l2(expected, reference)
    assert sim.relative_l2(out, reference) <= sim_error + 2 * OUTPUT_ROUNDING + 1e-6


# Small odd shapes: tails in both sequences, Nq != Nk both ways, decode-like Nq = 1, single keys.
SHAPES = [
    (1, 2, 37, 53, 32),
    (2, 1, 70, 33, 64),
    (1, 1, 1, 100, 64),
    (1, 1, 45, 1, 128),
    (1, 1, 129, 17, 128),
]
TILES = [TileConfig(32, 16), TileConfig(16, 32), TileConfig(64, 64)]


@pytest.mark.parametrize("kernel", ["fp16", "fp8"])
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_sim_on_odd_shapes(kernel, is_causal, shape):
    b, h, nq, nk, d = shape
    rng = np.random.default_rng(hash((kernel, is_causal, shape)) % 2**32)
    q, k, v = (rng.standard_normal((b, h, n, d)).astype(np.float16) for n in (nq, nk, nk))
    _check_against_sim(kernel, q, k, v, is_causal=is_causal)


@pytest.mark.parametrize("tile", TILES, ids=lambda t: f"m{t.block_m}n{t.block_n}")
@pytest.mark.parametrize("kernel", ["fp16", "fp8"])
def test_tile_shapes(kernel, tile):
    """Block shapes wider and narrower than each other: the causal split into unmasked and masked tiles."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((1, 2, n, 64)).astype(np.float16) for n in (77, 91, 91))
    _check_against_sim(kernel, q, k, v, is_causal=True, tile=tile)
    _check_against_sim(kernel, q, k, v, is_causal=False, scale=0.3, tile=tile)


@given(attention_cases(head_dims=KERNEL_HEAD_DIMS, max_seq=100))
def test_fuzz_against_sim(case):
    """The shared fuzzing space (distributions with outliers, zero and constant rows, explicit scales).

    The baselines do not do GQA: grouped key/value heads are repeated to the query's count first, which is
    the same attention.
    """
    q, k, v = case["q"], case["k"], case["v"]
    group = q.shape[1] // k.shape[1]
    k, v = (np.repeat(x, group, axis=1) for x in (k, v))
    for kernel in ("fp16", "fp8"):
        _check_against_sim(kernel, q, k, v, is_causal=case["is_causal"], scale=case["scale"])


@pytest.mark.parametrize("is_causal", [False, True])
def test_fp16_matches_torch_sdpa(is_causal):
    rng = np.random.default_rng(3)
    q, k, v = (torch.from_numpy(rng.standard_normal((2, 3, n, 64)).astype(np.float16)) for n in (50, 61, 61))
    out = flash_attention_fp16(q, k, v, is_causal=is_causal)
    expected = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=is_causal)
    torch.testing.assert_close(out.float(), expected, atol=2e-3, rtol=2e-3)


def test_strided_inputs_give_the_same_output():
    """Views in (B, N, H, D) memory order, as models hold them, read through their strides."""
    rng = np.random.default_rng(11)
    q, k, v = (torch.from_numpy(rng.standard_normal((2, n, 3, 32)).astype(np.float16)) for n in (40, 29, 29))
    strided = [x.transpose(1, 2) for x in (q, k, v)]
    contiguous = [x.contiguous() for x in strided]
    assert not strided[0].is_contiguous()
    for is_causal in (False, True):
        torch.testing.assert_close(flash_attention_fp16(*strided, is_causal=is_causal),
                                   flash_attention_fp16(*contiguous, is_causal=is_causal), atol=0, rtol=0)


def test_fp8_operands_layout_and_saturation():
    rng = np.random.default_rng(5)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 2, n, 64)).astype(np.float16)) for n in (20, 37, 37))
    v[0, 0, 3, 5] = 1000.0
    q8, k8, v8 = fp8_operands(q, k, v)
    assert q8.dtype == k8.dtype == v8.dtype == torch.float8_e4m3fn
    assert v8.shape == v.shape and v8.stride(-2) == 1  # sequence-contiguous: K-major for P @ V
    assert v8.stride(-1) % 16 == 0  # each channel's keys start on a 16-byte boundary
    assert v8[0, 0, 3, 5].float().item() == 448.0  # saturated, not NaN
    torch.testing.assert_close(q8.float(), q.float().to(torch.float8_e4m3fn).float(), atol=0, rtol=0)


def test_fp8_accepts_fp16_and_any_fp8_v_layout():
    """fp16 in (cast inside), pre-cast operands, and a row-major fp8 V (re-laid out inside) agree bit for bit."""
    rng = np.random.default_rng(9)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 2, n, 32)).astype(np.float16)) for n in (33, 45, 45))
    q8, k8, v8 = fp8_operands(q, k, v)
    from_fp16 = flash_attention_fp8(q, k, v, is_causal=True)
    precast = flash_attention_fp8(q8, k8, v8, is_causal=True)
    row_major_v = flash_attention_fp8(q8, k8, v8.contiguous(), is_causal=True)
    torch.testing.assert_close(from_fp16, precast, atol=0, rtol=0)
    torch.testing.assert_close(row_major_v, precast, atol=0, rtol=0)


def test_bad_input_names_the_argument():
    q = torch.randn(1, 2, 16, 64, dtype=torch.float16)
    with pytest.raises(TypeError, match="query"):
        flash_attention_fp16(q.float(), q, q)
    with pytest.raises(TypeError, match="key, value"):
        flash_attention_fp16(q, q.bfloat16(), q.bfloat16())
    with pytest.raises(ValueError, match="head_dim"):
        flash_attention_fp16(*(torch.randn(1, 2, 16, 48, dtype=torch.float16),) * 3)
    with pytest.raises(ValueError, match="enable_gqa"):
        flash_attention_fp16(q, q[:, :1], q[:, :1])
    with pytest.raises(ValueError, match="scale"):
        flash_attention_fp16(q, q, q, scale=-1.0)
    with pytest.raises(TypeError, match="is_causal"):
        flash_attention_fp16(q, q, q, is_causal=1)
    with pytest.raises(TypeError, match="out_dtype"):
        flash_attention_fp8(q, q, q, out_dtype=torch.float32)
    with pytest.raises(TypeError, match="bfloat16 runs on CUDA only"):
        flash_attention_fp16(q.bfloat16(), q.bfloat16(), q.bfloat16())
    with pytest.raises(TypeError, match="bfloat16 runs on CUDA only"):
        flash_attention_fp8(q, q, q, out_dtype=torch.bfloat16)
    with pytest.raises(TypeError, match="tile"):
        flash_attention_fp16(q, q, q, tile=(64, 64))
    with pytest.raises(ValueError, match="block_n"):
        TileConfig(64, 24)
