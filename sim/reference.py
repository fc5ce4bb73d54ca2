"""Float64 attention: the ground truth every error in the project is measured against."""

from __future__ import annotations

import numpy as np

from .checks import check_attention_shapes


def reference_attention(q, k, v, *, is_causal=False, scale=None, enable_gqa=False):
    """softmax(scale * Q K^T) V in float64, torch SDPA's semantics (top-left causal, GQA).

    q : (B, Hq, Nq, D), k and v : (B, Hkv, Nk, D), any float dtype. Returns (B, Hq, Nq, D) float64.
    """
    shape = check_attention_shapes(np.shape(q), np.shape(k), np.shape(v), enable_gqa=enable_gqa, scale=scale)
    q, k, v = (np.asarray(x).astype(np.float64) for x in (q, k, v))
    head_map = np.arange(shape.heads_q) // (shape.heads_q // shape.heads_kv)
    k, v = k[:, head_map], v[:, head_map]
    s = (q @ np.swapaxes(k, -1, -2)) * shape.scale
    if is_causal:
        keep = np.arange(shape.seq_k)[None, :] <= np.arange(shape.seq_q)[:, None]
        s = np.where(keep, s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v
