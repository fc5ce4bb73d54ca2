"""The straight-through backward of intfa.scaled_dot_product_attention (issue 11; intfa/autograd.py).

The forward stays the INT8 kernel (here Triton's interpreter); the backward is torch SDPA's gradient of float
attention at the same inputs (here torch's CPU backward). So, for any upstream gradient G:

- the output is the INT8 output, bit for bit, and carries a grad_fn whenever autograd records;
- d(loss)/d(query, key, value, float attn_mask) equals ``torch.autograd.grad(F.scaled_dot_product_attention(...),
  inputs, G)``: the same function at the same inputs and G, so equal up to the float reduction order of torch's own
  CPU backward, which is not deterministic from one call to the next with GQA (hence a float32-rounding tolerance);
- through a model, the chain rule uses that gradient at the INT8 output's G: what quantization-aware fine-tuning
  needs.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import sim

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")

CONFIG = sim.QuantConfig(block_m=16, block_n=16)


def tensors(*shapes, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype) for shape in shapes]


def _causal_bool(n_q, n_k):
    return torch.ones(n_q, n_k, dtype=torch.bool).tril()


CASES = {
    "plain": dict(shapes=((2, 2, 20, 32), (2, 2, 24, 32), (2, 2, 24, 32)), kwargs={}),
    # A positive scale: torch 2.13's CPU flash backend returns NaN for is_causal with a negative scale (forward and
    # backward; its math backend does not), and the backward here is torch's.
    "causal gqa scale": dict(shapes=((1, 4, 20, 32), (1, 2, 20, 32), (1, 2, 20, 32)),
                             kwargs=dict(is_causal=True, enable_gqa=True, scale=0.4)),
    "negative scale": dict(shapes=((1, 2, 12, 32), (1, 2, 16, 32), (1, 2, 16, 32)), kwargs=dict(scale=-0.3)),
    "bool mask, empty rows": dict(shapes=((2, 2, 12, 32), (2, 2, 20, 32), (2, 2, 20, 32)),
                                  kwargs=dict(attn_mask=torch.rand(12, 20, generator=torch.Generator().manual_seed(3))
                                              .gt(0.4).index_fill_(0, torch.tensor([2]), False))),
    "float mask and causal": dict(shapes=((1, 2, 16, 32), (1, 2, 20, 32), (1, 2, 20, 32)),
                                  kwargs=dict(attn_mask="float", is_causal=True)),
    "3-D, Ev != E, head dim 8": dict(shapes=((3, 10, 8), (3, 14, 8), (3, 14, 5)), kwargs={}),
    "float64": dict(shapes=((1, 2, 12, 32), (1, 2, 12, 32), (1, 2, 12, 32)), kwargs={}, dtype=torch.float64),
}


def make(name):
    spec = CASES[name]
    q, k, v = tensors(*spec["shapes"], dtype=spec.get("dtype", torch.float32))
    kwargs = dict(spec["kwargs"])
    if kwargs.get("attn_mask") == "float":
        kwargs["attn_mask"] = torch.randn(q.shape[-2], k.shape[-2], generator=torch.Generator().manual_seed(4))
    return q, k, v, kwargs


def assert_same_gradient(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Equal up to float rounding of the reduction order: a few ulps of the gradient's magnitude."""
    eps = torch.finfo(expected.dtype).eps
    torch.testing.assert_close(actual, expected, rtol=16 * eps, atol=64 * eps * float(expected.abs().max()), msg=what)


def sdpa_gradients(inputs: dict, kwargs: dict, grad_out: torch.Tensor) -> dict:
    """torch SDPA's gradients at ``inputs`` for upstream ``grad_out`` (is_causal with a mask combined, as torch's
    math backend refuses both)."""
    leaves = {name: x.detach().requires_grad_() for name, x in inputs.items()}
    kwargs = dict(kwargs)
    mask = leaves.pop("attn_mask", kwargs.pop("attn_mask", None))
    if kwargs.get("is_causal") and mask is not None:
        causal = _causal_bool(leaves["query"].shape[-2], leaves["key"].shape[-2])
        kwargs["is_causal"] = False
        full = mask.masked_fill(~causal, float("-inf")) if mask.dtype != torch.bool else mask & causal
    else:
        full = mask
    out = F.scaled_dot_product_attention(leaves["query"], leaves["key"], leaves["value"], attn_mask=full, **kwargs)
    targets = list(leaves.values()) + ([mask] if mask is not None and mask.requires_grad else [])
    names = list(leaves) + (["attn_mask"] if len(targets) > len(leaves) else [])
    return dict(zip(names, torch.autograd.grad(out, targets, grad_out)))


@pytest.mark.parametrize("name", list(CASES))
def test_forward_is_int8_and_gradients_are_sdpas(name):
    q, k, v, kwargs = make(name)
    plain = intfa.scaled_dot_product_attention(q, k, v, config=CONFIG, **kwargs)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    out = intfa.scaled_dot_product_attention(*leaves, config=CONFIG, **kwargs)
    assert out.requires_grad and type(out.grad_fn).__name__ == "StraightThroughAttentionBackward"
    assert torch.equal(out.detach(), plain)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(out.dtype)
    out.backward(grad_out)
    expected = sdpa_gradients(dict(query=q, key=k, value=v), kwargs, grad_out)
    for leaf, name_ in zip(leaves, ("query", "key", "value")):
        assert_same_gradient(leaf.grad, expected[name_], name_)


def test_a_float_mask_that_requires_grad_gets_sdpas_gradient():
    q, k, v, kwargs = make("float mask and causal")
    mask = kwargs.pop("attn_mask").requires_grad_()
    out = intfa.scaled_dot_product_attention(q, k, v, attn_mask=mask, config=CONFIG, **kwargs)
    out.sum().backward()
    expected = sdpa_gradients(dict(query=q, key=k, value=v, attn_mask=mask), kwargs, torch.ones_like(out))
    assert_same_gradient(mask.grad, expected["attn_mask"], "attn_mask")


def test_a_regulariser_does_not_drop_the_attention_term():
    """Issue 11: with requires_grad inputs the output had no grad_fn, so loss = attention + regulariser
    backpropagated the regulariser alone."""
    q, k, v, _ = make("plain")
    q.requires_grad_()
    loss = intfa.scaled_dot_product_attention(q, k, v, config=CONFIG).sum() + (q ** 2).sum()
    loss.backward()
    attention_part = sdpa_gradients(dict(query=q, key=k, value=v), {}, torch.ones(2, 2, 20, 32))["query"]
    torch.testing.assert_close(q.grad, attention_part + 2 * q.detach(), rtol=0, atol=1e-6)
    assert attention_part.abs().max() > 1e-3  # the attention term is there, and not negligible


def test_fine_tuning_through_a_projection_uses_float_gradients_at_the_int8_output():
    """Quantization-aware fine-tuning: the loss sees the INT8 output, the weights move along float attention's
    gradient (the chain rule with SDPA's backward at the INT8 output's upstream gradient)."""
    x, k, v, target = tensors((1, 2, 20, 32), (1, 2, 20, 32), (1, 2, 20, 32), (1, 2, 20, 32), seed=5)
    weight = torch.eye(32).add(0.05 * torch.randn(32, 32, generator=torch.Generator().manual_seed(6)))
    w_int8 = weight.clone().requires_grad_()
    out = intfa.scaled_dot_product_attention(x @ w_int8, k, v, config=CONFIG)
    ((out - target) ** 2).sum().backward()
    upstream = 2 * (out.detach() - target)
    w_float = weight.clone().requires_grad_()
    F.scaled_dot_product_attention(x @ w_float, k, v).backward(upstream)
    assert_same_gradient(w_int8.grad, w_float.grad, "weight")


def test_without_autograd_recording_the_output_is_plain():
    q, k, v, _ = make("plain")
    q.requires_grad_()
    with torch.no_grad():
        out = intfa.scaled_dot_product_attention(q, k, v, config=CONFIG)
    assert out.grad_fn is None and not out.requires_grad


def test_second_order_gradients_are_not_available():
    """The backward is first order (once_differentiable): the gradient itself carries no graph."""
    q, k, v, _ = make("plain")
    q.requires_grad_()
    out = intfa.scaled_dot_product_attention(q, k, v, config=CONFIG)
    (grad_q,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    assert grad_q.grad_fn is None
    with pytest.raises(RuntimeError):
        grad_q.sum().backward()


def test_quantizers_refuse_inputs_that_require_grad():
    """Int8 codes carry no gradient: a quantizer given a tensor that requires one says so instead of detaching."""
    q, k, v, _ = make("plain")
    q.requires_grad_()
    with pytest.raises(RuntimeError, match="x: requires grad, but int8 codes carry no gradient"):
        intfa.quantize(q, "token")
    with pytest.raises(RuntimeError, match="query: requires grad"):
        intfa.quantize_operands(q, k, v, CONFIG)
    with torch.no_grad():
        intfa.quantize(q, "token")
