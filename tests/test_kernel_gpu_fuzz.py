"""The compiled kernels fuzzed with the shared strategies, the GPU contract as the oracle (issue 11; spec 4.2).

``pytest -m gpu tests/test_kernel_gpu_fuzz.py`` runs the CI profile's few cases; the long run is
``HYPOTHESIS_PROFILE=gpu-thorough pytest -m gpu tests/test_kernel_gpu_fuzz.py`` (3000 cases: shapes with tails,
Nq != Nk, GQA, causal, masks of every kind and broadcast shape, every batch-invariant configuration, float16 and
bfloat16). Every failure it finds is pinned below as an ``@example``.

The oracle is the contract level 2 states, made exact where it is exact (docs/spec.md, section 4):

- Quantization: the codes and scales :func:`intfa.quantize_operands` computes on the GPU are sim's, bit for bit.
- Full INT8: the kernel's integer scores Q8 K8^T (its trace) are sim's on every visited tile; its P codes differ
  from sim's by at most one step (exp2 is ``ex2.approx``, FMA contraction rounds once), more where scores are huge
  (:func:`contract.p_code_allowance`), and none passes the top code (which would wrap in int8). The output then differs
  from sim's by at most ``2 * max|V^| / levels`` per P code that differs in the row (a code moves the numerator by
  at most one level of one value, and the quantized normalizer's sum by one level; the row's weights sum to at least
  ``levels``, the row max's P being 1), plus float32 slack for the rescaling exponentials and sums.
- Half-INT8: P is rounded to 16 bits from an exp2 a few ulps off: at most one 16-bit ulp (2**-10 relative, 2**-7
  for bfloat16) per key, so the output moves by at most that times max|V|, plus the same slack.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from contract import dequantized_v_max, p_code_allowance
from strategies import masked_attention_cases, named_configs

import sim
from sim.config import default_scale

import intfa  # noqa: E402  (conftest sets TRITON_INTERPRET=1 where there is no GPU)
from intfa.kernels import attention_forward  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
INT32_MIN = np.iinfo(np.int32).min
#: Float32 slack per counted operation (the rescaling exp2 of each tile, the sums): 64 ulps, generously.
SLACK = 2.0**-18
FUZZ_HEAD_DIMS = (32, 48, 64, 128)


@st.composite
def gpu_configs(draw):
    """Every configuration the torch API runs compiled: the named ones, and drawn full-INT8 and half-INT8 ones
    (block_n >= 32: the compiled INT8 P @ V product reduces over 32 keys)."""
    named = [c for c in named_configs(64, 64).values() if c.qk_format == "int8" and not c.simulated_only]
    drawn = sim.QuantConfig(
        q_granularity=draw(st.sampled_from(("head", "block", "token"))),
        k_granularity=draw(st.sampled_from(("head", "block", "token"))),
        v_granularity=draw(st.sampled_from(("head", "channel", "block"))),
        block_m=draw(st.sampled_from((64, 128))), block_n=draw(st.sampled_from((32, 64, 128))),
        p_quant=draw(st.sampled_from(sim.P_QUANTS)), p_scale=draw(st.sampled_from(sim.P_SCALES)),
        normalizer=draw(st.sampled_from(sim.NORMALIZERS)), k_smoothing=draw(st.booleans()),
    )
    half = sim.QuantConfig.half_int8(64, draw(st.sampled_from((32, 64, 128)))).replace(
        pv_format=draw(st.sampled_from(("float16", "bfloat16"))))
    return draw(st.sampled_from(named + [drawn, half]))


def cuda(x: np.ndarray | None) -> torch.Tensor | None:
    return None if x is None else torch.from_numpy(np.ascontiguousarray(x)).to(DEVICE)


def full_mask(case) -> np.ndarray | None:
    """The case's attn_mask broadcast to (B, Hq, Nq, Nk): bool, or float32 (exact from float16)."""
    mask = case["attn_mask"]
    if mask is None:
        return None
    b, hq, nq, _ = case["q"].shape
    mask = np.broadcast_to(mask, (b, hq, nq, case["k"].shape[2]))
    return np.ascontiguousarray(mask if mask.dtype == np.bool_ else mask.astype(np.float32))


def check_quantization(case, cfg):
    """intfa.quantize_operands on the GPU gives sim's codes and scales exactly; returns both operand sets."""
    ops = intfa.quantize_operands(*(cuda(case[n]) for n in "qkv"), cfg)
    expected = sim.quantize_operands(case["q"], case["k"], case["v"], cfg)
    np.testing.assert_array_equal(ops.q_codes.cpu().numpy(), expected.q.astype(np.int8))
    np.testing.assert_array_equal(ops.k_codes.cpu().numpy(), expected.k.astype(np.int8))
    np.testing.assert_array_equal(ops.q_scale.cpu().numpy(), expected.q_scale)
    np.testing.assert_array_equal(ops.k_scale.cpu().numpy(), expected.k_scale)
    np.testing.assert_array_equal(ops.v_scale.cpu().numpy(), expected.v_scale)
    v = ops.v.cpu()
    np.testing.assert_array_equal(v.numpy() if cfg.pv_is_int else v.float().numpy(),
                                  expected.v.astype(np.int8) if cfg.pv_is_int else expected.v)
    return ops, expected


@given(masked_attention_cases(head_dims=FUZZ_HEAD_DIMS, max_seq=300, dtypes=(np.float16,)), gpu_configs())
def test_compiled_kernel_within_the_gpu_contract(case, cfg):
    is_causal, gqa = case["is_causal"], case["enable_gqa"]
    scale = default_scale(case["q"].shape[-1]) if case["scale"] is None else case["scale"]
    mask = full_mask(case)
    ops, expected = check_quantization(case, cfg)
    out = attention_forward(*ops, config=cfg, scale=scale, is_causal=is_causal, out_dtype=torch.float32,
                            attn_mask=cuda(mask), trace=cfg.pv_is_int)
    trace = None
    if cfg.pv_is_int:
        out, trace = out
    out = out.cpu().numpy()
    sim_trace = sim.trace_operands(expected, config=cfg, is_causal=is_causal, scale=scale, attn_mask=mask)
    nk, n_tiles = case["k"].shape[2], len(sim_trace.steps)
    v_max = dequantized_v_max(expected, cfg)
    slack = SLACK * (n_tiles + cfg.block_n + 8) * v_max
    diff = np.abs(out.astype(np.float64) - sim_trace.out)
    if cfg.pv_is_int:
        qk, p_codes = trace["qk"].cpu().numpy()[..., :nk], trace["p_codes"].cpu().numpy()[..., :nk]
        visited = qk != INT32_MIN
        sim_qk = np.concatenate([s.qk for s in sim_trace.steps], axis=-1)[..., :nk]
        sim_p = np.concatenate([s.p_codes for s in sim_trace.steps], axis=-1)[..., :nk]
        np.testing.assert_array_equal(qk[visited], sim_qk[visited])
        steps = np.where(visited, np.abs(p_codes.astype(np.int64) - sim_p), 0)
        allowed = p_code_allowance(expected, cfg, scale, mask)[..., None]  # 1 step; more for huge |s| (contract.py)
        assert (steps <= allowed).all(), f"P codes {int(steps.max())} steps from sim's (allowed {int(allowed.max())})"
        assert (p_codes[visited] <= 127).all(), "a P code past the top (127 for both codings): it would wrap in int8"
        bound = 2.0 * steps.sum(axis=-1)[..., None] * v_max / cfg.p_levels + slack
    else:
        ulp = 2.0**-10 if cfg.pv_format == "float16" else 2.0**-7
        visible_keys = nk if mask is None else np.asarray(mask if mask.dtype == np.bool_ else mask != -np.inf).sum(-1)
        bound = np.broadcast_to(ulp * np.asarray(visible_keys, np.float64), diff.shape[:3])[..., None] * v_max + slack
    worst = np.unravel_index(np.argmax(diff - bound), diff.shape)
    assert (diff <= bound).all(), (f"kernel vs sim differs by {diff[worst]:.3e} > bound {np.broadcast_to(bound, diff.shape)[worst]:.3e} "
                                   f"at {worst}")
