"""Hypothesis strategies shared by every test file: sim's tests and the kernel's fuzz the same space.

Arrays come from a drawn seed through NumPy (hypothesis' own array strategies are slow at attention
sizes); shapes, distributions and configurations are drawn by hypothesis and shrink as usual.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import sim
from sim.inputs import QKV_FAMILIES, TENSOR_FAMILIES, make_qkv, make_tensor  # noqa: F401 (re-exported)

#: Input families, defined once in sim.inputs: per-tensor ones for quantizer tests, and the attention
#: triples (with the LLM-like "outliers" and the ill-conditioned "extreme_outliers").
DISTRIBUTIONS = QKV_FAMILIES
SIM_HEAD_DIMS = (16, 32, 48, 64, 80, 128, 256)
KERNEL_HEAD_DIMS = (32, 64, 128)
BLOCKS = (16, 32, 64, 128)


@st.composite
def attention_cases(draw, head_dims=SIM_HEAD_DIMS, max_seq=300, distributions=DISTRIBUTIONS, dtypes=(np.float16,)):
    """A full SDPA call: dict with q, k, v (numpy), is_causal, enable_gqa, scale, distribution.

    Odd lengths, Nq != Nk, GQA/MQA (Hq a multiple of Hkv), causal and not, explicit scales.
    """
    batch = draw(st.integers(1, 2))
    heads_kv = draw(st.integers(1, 3))
    group = draw(st.sampled_from((1, 1, 2, 3)))
    seq_q = draw(st.integers(1, max_seq))
    seq_k = draw(st.one_of(st.just(seq_q), st.integers(1, max_seq)))
    head_dim = draw(st.sampled_from(head_dims))
    distribution = draw(st.sampled_from(distributions))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, k, v = make_qkv(rng, (batch, heads_kv * group, seq_q, head_dim), (batch, heads_kv, seq_k, head_dim),
                       distribution, dtype)
    scale = draw(st.one_of(st.none(), st.floats(0.01, 1.0)))
    return dict(q=q, k=k, v=v, is_causal=draw(st.booleans()), enable_gqa=group > 1 or draw(st.booleans()),
                scale=scale, distribution=distribution)


@st.composite
def int8_configs(draw, blocks=BLOCKS, p_quants=sim.P_QUANTS):
    """A full-INT8 QuantConfig: every granularity, tile size, P scheme and scale, and normalizer.

    K smoothing is left off here (it changes what quantize() is given, which the quantizer-level tests
    compare directly); its own tests draw it (test_sim_attention, test_kernel_interpreter).
    """
    return sim.QuantConfig(
        q_granularity=draw(st.sampled_from(sim.QK_GRANULARITIES)),
        k_granularity=draw(st.sampled_from(sim.QK_GRANULARITIES)),
        v_granularity=draw(st.sampled_from(sim.V_GRANULARITIES)),
        block_m=draw(st.sampled_from(blocks)),
        block_n=draw(st.sampled_from(blocks)),
        p_quant=draw(st.sampled_from(p_quants)),
        p_scale=draw(st.sampled_from(sim.P_SCALES)),
        normalizer=draw(st.sampled_from(sim.NORMALIZERS)),
    )


@st.composite
def quant_inputs(draw, max_seq=200, head_dims=SIM_HEAD_DIMS):
    """(x, granularity, block_size): one tensor to quantize at a drawn granularity."""
    batch = draw(st.integers(1, 2))
    heads = draw(st.integers(1, 3))
    seq = draw(st.integers(1, max_seq))
    head_dim = draw(st.sampled_from(head_dims))
    distribution = draw(st.sampled_from(TENSOR_FAMILIES))
    granularity = draw(st.sampled_from(sim.QUANT_GRANULARITIES))
    block = draw(st.sampled_from(BLOCKS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_tensor(rng, (batch, heads, seq, head_dim), distribution, draw(st.sampled_from((np.float16, np.float32))))
    return x, granularity, block


# --- added for the simulator's property tests (tests/test_sim_*.py) -----------------------------------


@st.composite
def integer_configs(draw, blocks=BLOCKS):
    """Any QuantConfig whose two products use integer codes: :func:`int8_configs` with either P scale,
    or the same with INT4 Q and K."""
    config = draw(int8_configs(blocks=blocks))
    return config.replace(qk_format=draw(st.sampled_from(("int8", "int8", "int4"))),
                          p_scale=draw(st.sampled_from(sim.P_SCALES)))


@st.composite
def float_mode_configs(draw, blocks=BLOCKS):
    """``QuantConfig.none`` at a drawn tile size: the float32 tile loop, no quantization."""
    return sim.QuantConfig.none(block_m=draw(st.sampled_from(blocks)), block_n=draw(st.sampled_from(blocks)))


def emulation_configs(block_m: int = 128, block_n: int = 64) -> dict:
    """The paper's comparison formats by name, every one at the same tile size."""
    return {
        "fp16": sim.QuantConfig.fp16(block_m, block_n),
        "half_int8": sim.QuantConfig.half_int8(block_m, block_n),
        "int8": sim.QuantConfig(block_m=block_m, block_n=block_n),
        "fp8_e4m3": sim.QuantConfig.fp8("e4m3", block_m, block_n),
        "fp8_e5m2": sim.QuantConfig.fp8("e5m2", block_m, block_n),
    }
