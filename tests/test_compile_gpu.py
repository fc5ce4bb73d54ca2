"""torch.compile and CUDA graphs over the custom operators (issue 12, item 6), on the GPU.

A model calling :func:`intfa.scaled_dot_product_attention` compiles with ``fullgraph=True`` (inductor) and its
compiled forward is captured in a ``torch.cuda.CUDAGraph`` and replayed: the operator reads nothing back to the host
(validate None on CUDA), so capture succeeds, and the replay follows new inputs written into the captured buffers.
``mode="reduce-overhead"`` (inductor's own CUDA graphs) must give the eager output too.
Run: ``pytest -m gpu tests/test_compile_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch
from test_ops import Block

import intfa

pytestmark = pytest.mark.gpu

CONFIG = intfa.QuantConfig.recommended()


def make_block():
    """tests/test_ops.py's attention block at a GPU-sized width, in the recommended configuration."""
    return Block(width=512, heads=8, config=CONFIG)


def _inputs(seed):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(2, 300, 512, device="cuda", dtype=torch.float16, generator=generator)
    keep = torch.ones(2, 300, dtype=torch.bool, device="cuda")
    keep[1, 200:] = False
    return x, keep


@torch.no_grad()
def test_compiled_model_captures_in_a_cuda_graph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = make_block().cuda().half().eval()
    x, keep = _inputs(0)
    compiled = torch.compile(block, fullgraph=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # compile, autotune, allocate outside the capture
            compiled(x, keep)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compiled(x, keep)
    new_x, _ = _inputs(1)
    x.copy_(new_x)
    graph.replay()
    torch.cuda.synchronize()
    expected = block(x, keep)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-3)  # inductor's fused linear layers vs eager's


@torch.no_grad()
def test_reduce_overhead_mode_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    block = make_block().cuda().half().eval()
    x, keep = _inputs(2)
    compiled = torch.compile(block, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):  # warm-up runs, then the recorded graph replays
        out = compiled(x, keep).clone()
    torch.testing.assert_close(out, block(x, keep), rtol=0, atol=2e-3)


@torch.no_grad()
def test_attention_int8_op_captures_in_a_cuda_graph():
    torch._dynamo.reset()
    q, k, v = (torch.randn(1, 8, 1024, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    config = CONFIG.replace(k_smoothing=False)  # made outside the compiled region, as a model's attribute would be
    operands = intfa.quantize_operands(q, k, v, config)

    def attend(*ops):
        return intfa.attention_int8(*ops, config=config, is_causal=True)

    compiled = torch.compile(attend, fullgraph=True)
    for _ in range(2):
        compiled(*operands)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = compiled(*operands)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, attend(*operands))
