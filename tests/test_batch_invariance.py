"""Batch and head invariance (issue 11): a sequence's output bytes do not depend on the batch it is computed in.

Every configuration :class:`sim.QuantConfig` names keeps its scale groups within one (batch, head) matrix (the
paper's V scale is one number per (batch, head), as the authors' code keeps it), so one sequence's output is the
same bytes alone and at any (batch, head) index of any batch, whatever its neighbours hold. Checked in sim for
every named configuration, and through the interpreted kernels for those they run. The one granularity that
couples sequences, "tensor", is shown to do so, and the torch API refuses it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from strategies import batch_placements, is_kernel_config, named_configs

import sim

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED  # noqa: E402

NAMED = named_configs(block_m=16, block_n=16)
KERNEL_NAMED = sorted(name for name, config in NAMED.items() if is_kernel_config(config))


def same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_every_named_configuration_is_batch_invariant_and_the_kernels_run_three():
    assert {"paper", "recommended", "half_int8", "fp16", "fp8_e4m3", "fp8_e5m2", "none"} <= set(NAMED)
    assert all(config.batch_invariant for config in NAMED.values())
    assert NAMED["paper"].v_granularity == "head"
    assert KERNEL_NAMED == ["half_int8", "paper", "recommended"]


@pytest.mark.parametrize("name", sorted(NAMED))
@given(placement=batch_placements())
def test_sim_output_bytes_do_not_depend_on_the_batch(name, placement):
    kwargs = dict(is_causal=placement["is_causal"], scale=placement["scale"], config=NAMED[name])
    alone = sim.attention(*placement["single"], **kwargs)
    in_batch = sim.attention(*placement["batch"], **kwargs)
    assert same_bytes(in_batch[placement["index"]], alone[0, 0])


@pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("name", KERNEL_NAMED)
@settings(max_examples=4)
@given(placement=batch_placements(max_seq=24, max_batch=2, max_heads=2))
def test_kernel_output_bytes_do_not_depend_on_the_batch(name, placement):
    kwargs = dict(is_causal=placement["is_causal"], scale=placement["scale"], config=NAMED[name])
    alone = intfa.scaled_dot_product_attention(*map(torch.from_numpy, placement["single"]), **kwargs)
    in_batch = intfa.scaled_dot_product_attention(*map(torch.from_numpy, placement["batch"]), **kwargs)
    assert same_bytes(in_batch[placement["index"]].numpy(), alone[0, 0].numpy())


def test_a_tensor_wide_scale_couples_the_batch_and_the_torch_api_refuses_it():
    """The counter-example the property rules out: per-tensor V, a neighbour with a 20x larger V (issue 11)."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 1, 64, 32)).astype(np.float32) for _ in range(3))
    v[1] *= 20
    config = sim.QuantConfig(v_granularity="tensor", block_m=16, block_n=16)
    alone = sim.attention(q[:1], k[:1], v[:1], config=config)
    assert not same_bytes(sim.attention(q, k, v, config=config)[:1], alone)
    with pytest.raises(ValueError, match=r"config: v_granularity 'tensor' shares one scale across every sequence"):
        intfa.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), config=config)
    with pytest.raises(ValueError, match=r"q_granularity and k_granularity 'tensor'"):
        intfa.quantize_operands(*map(torch.from_numpy, (q, k, v)),
                                sim.QuantConfig(q_granularity="tensor", k_granularity="tensor"))
