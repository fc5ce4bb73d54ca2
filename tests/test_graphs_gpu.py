"""The torch API on the GPU's hot path: no host synchronisation, so both calls can be captured in a CUDA graph.

``scaled_dot_product_attention`` and ``attention_int8`` read nothing back to the host unless ``validate=True``
(issue 9, item 6): a host synchronisation inside stream capture is an error, so capturing each call in a
``torch.cuda.CUDAGraph`` and replaying it proves there is none, and the replay must give the eager call's bytes.
Run: ``pytest -m gpu tests/test_graphs_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

import intfa

pytestmark = pytest.mark.gpu

CONFIGS = {"paper": intfa.QuantConfig.paper(), "recommended": intfa.QuantConfig.recommended()}


def _capture(fn):
    """Warm ``fn`` up on a side stream (compilation, allocator), capture it in a graph; returns (graph, output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_captures_in_a_cuda_graph(config_name, causal):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 1000, 128, device="cuda", dtype=torch.float16) for _ in range(3))
    cfg = CONFIGS[config_name]
    graph, out = _capture(lambda: intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, config=cfg))
    eager = intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, config=cfg)
    for x in (q, k, v):  # new inputs in the captured buffers: the replay must follow them
        x.copy_(torch.randn_like(x))
    graph.replay()
    expected = intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, config=cfg)
    assert not torch.equal(eager, expected), "the new inputs must change the output, or the check below proves nothing"
    assert torch.equal(out, expected)


def test_attention_int8_captures_in_a_cuda_graph():
    torch.manual_seed(1)
    cfg = intfa.QuantConfig.paper()
    q, k, v = (torch.randn(1, 8, 2048, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    ops = intfa.quantize_operands(q, k, v, cfg)
    graph, out = _capture(lambda: intfa.attention_int8(*ops, config=cfg))
    graph.replay()
    assert torch.equal(out, intfa.attention_int8(*ops, config=cfg))


def test_validate_true_still_synchronises_and_raises():
    """The opt-in check reads the flags back: outside a graph it raises the named error, as on the CPU."""
    q, k, v = (torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    k[0, 1, 7, 3] = float("nan")
    with pytest.raises(ValueError, match="key: expected finite values"):
        intfa.scaled_dot_product_attention(q, k, v, validate=True)
    out = intfa.scaled_dot_product_attention(q, k, v)  # default on CUDA: no read-back, NaN propagates as in SDPA
    assert torch.isnan(out[0, 1]).all() and torch.isfinite(out[0, 0]).all()
