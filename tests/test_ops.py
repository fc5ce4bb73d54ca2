"""The custom operators of intfa.ops (issue 12, item 6): torch.library's own checks, fake shapes, fullgraph compile.

- ``torch.library.opcheck`` on both operators: schema, autograd registration, the fake implementation against the
  real one, and AOT dispatch with dynamic shapes;
- the SDPA operator's fake output has torch SDPA's output shape for broadcast, GQA, 2-D and Ev != E calls, without
  running a kernel;
- ``torch.compile(fullgraph=True)`` of a module that calls :func:`intfa.scaled_dot_product_attention` and of a
  function calling :func:`intfa.attention_int8` (backend "aot_eager": no graph break, and the compiled result is
  the eager result to the bit), gradients included.

Under Triton's interpreter (CPU); the CUDA-graph half is tests/test_compile_gpu.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sim

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
import intfa  # noqa: E402
from intfa import ops  # noqa: E402
from intfa.kernels import INTERPRETED  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")

CONFIG = sim.QuantConfig(block_m=16, block_n=16)


def tensors(*shapes, seed=0, requires_grad=False):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).requires_grad_(requires_grad) for shape in shapes]


def test_config_key_round_trips_and_names_bad_configs():
    for cfg in (None, CONFIG, sim.QuantConfig.recommended(), sim.QuantConfig.half_int8()):
        assert ops._config(ops.config_key(cfg)) == cfg
    with pytest.raises(TypeError, match="config"):
        ops.config_key("paper")


def test_opcheck_sdpa():
    q, k, v = tensors((1, 2, 20, 32), (1, 2, 20, 32), (1, 2, 20, 32), requires_grad=True)
    mask = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1)) > 0.2
    torch.library.opcheck(torch.ops.intfa.scaled_dot_product_attention.default,
                          (q, k, v, mask, False, None, False, ops.config_key(CONFIG), None))


def test_opcheck_attention_int8():
    with torch.no_grad():
        operands = intfa.quantize_operands(*tensors((1, 4, 20, 32), (1, 2, 20, 32), (1, 2, 20, 32)), CONFIG)
    torch.library.opcheck(torch.ops.intfa.attention_int8.default,
                          (*operands, True, None, True, ops.config_key(CONFIG), torch.float16, True, None, None, None,
                           None, "top_left", "auto"))


@pytest.mark.parametrize("shapes, gqa", [
    (((2, 4, 7, 32), (2, 4, 9, 32), (2, 4, 9, 32)), False),
    (((3, 8, 7, 16), (3, 2, 9, 16), (3, 2, 9, 24)), True),  # GQA, value head dim of its own
    (((5, 32), (9, 32), (9, 8)), False),  # 2-D
    (((2, 1, 6, 32), (1, 4, 5, 32), (4, 5, 32)), False),  # one query head, broadcast batch
    (((2, 3, 1, 6, 32), (3, 1, 5, 32), (3, 1, 5, 32)), False),  # two leading dims
])
def test_fake_output_has_torch_sdpa_shape(shapes, gqa):
    q, k, v = tensors(*shapes)
    expected = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(x) for x in (q, k, v))
        out = torch.ops.intfa.scaled_dot_product_attention(fq, fk, fv, None, False, None, gqa, "", None)
    assert out.shape == expected.shape and out.dtype == expected.dtype


class Block(torch.nn.Module):
    """A small attention block: projections, intfa attention with a padding mask, an output projection (also the
    model of tests/test_compile_gpu.py)."""

    def __init__(self, width=64, heads=2, config=CONFIG):
        super().__init__()
        torch.manual_seed(0)
        self.heads, self.config = heads, config
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.out = torch.nn.Linear(width, width)

    def forward(self, x, keep):
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        mask = keep[:, None, None, :]  # (B, 1, 1, Nk) bool: padding
        y = intfa.scaled_dot_product_attention(q, k, v, attn_mask=mask, config=self.config)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


def test_fullgraph_compile_of_a_module_matches_eager_with_gradients():
    torch._dynamo.reset()
    block = Block()
    (x,) = tensors((2, 20, 64), seed=3)
    keep = torch.ones(2, 20, dtype=torch.bool)
    keep[1, 14:] = False
    eager = block(x, keep)
    eager_grads = torch.autograd.grad(eager.square().sum(), list(block.parameters()))
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")  # raises on any graph break
    out = compiled(x, keep)
    assert torch.equal(out, eager)
    grads = torch.autograd.grad(out.square().sum(), list(block.parameters()))
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want)  # float SDPA's backward, up to its reduction order


def test_fullgraph_compile_of_attention_int8():
    torch._dynamo.reset()
    operands = intfa.quantize_operands(*tensors((1, 2, 24, 32), (1, 2, 40, 32), (1, 2, 40, 32), seed=4), CONFIG)

    def attend(*ops_):
        out, lse = intfa.attention_int8(*ops_, config=CONFIG, is_causal=True, return_lse=True, out_dtype=torch.float32)
        return out * 2, lse

    eager = attend(*operands)
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")(*operands)
    assert all(torch.equal(a, b) for a, b in zip(compiled, eager))
    # Arguments reach the operator: a kernel the CPU cannot run is refused under compile as in eager mode.
    torch._dynamo.reset()
    with pytest.raises(ValueError, match="kernel: the Gluon kernel needs a Hopper GPU"):
        torch.compile(lambda *o: intfa.attention_int8(*o, config=CONFIG, kernel="gluon"), fullgraph=True,
                      backend="aot_eager")(*operands)


def test_compiled_calls_refuse_what_eager_calls_refuse():
    """Under torch.compile the public functions refuse dropout as in eager mode (the operator has no dropout
    argument: it must not hand the call back to the public function, which would route it to the operator again),
    and a config with NumPy field values still becomes the operator's string."""
    torch._dynamo.reset()
    q, k, v = tensors((1, 2, 8, 32), (1, 2, 8, 32), (1, 2, 8, 32))
    def attend(*x):
        return intfa.scaled_dot_product_attention(*x, dropout_p=0.1)

    with pytest.raises(NotImplementedError, match="dropout_p"):  # a graph break: the check runs eagerly
        torch.compile(attend, backend="aot_eager")(q, k, v)
    torch._dynamo.reset()
    with pytest.raises(Exception, match="dropout_p: the INT8 kernel implements no dropout"):  # fullgraph: dynamo's
        torch.compile(attend, fullgraph=True, backend="aot_eager")(q, k, v)                 # error quotes ours
    numpy_config = CONFIG.replace(block_n=np.int64(CONFIG.block_n))
    assert ops.config_key(numpy_config) == ops.config_key(CONFIG)


def test_padded_head_dim_output_has_the_fake_strides():
    """A head dim below the kernels' least is padded and the output sliced back: it must come out contiguous, as
    the operator's fake implementation (what inductor plans with) says."""
    q, k, v = tensors((1, 2, 8, 16), (1, 2, 8, 16), (1, 2, 8, 16))
    torch.library.opcheck(torch.ops.intfa.scaled_dot_product_attention.default,
                          (q, k, v, None, False, None, False, ops.config_key(CONFIG), None))
