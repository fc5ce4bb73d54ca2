"""Input checks shared by the simulator and the torch API: one wording for every error."""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from .config import QuantConfig, default_scale


class AttentionShape(NamedTuple):
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_k: int
    head_dim: int
    scale: float


def check_attention_shapes(q_shape, k_shape, v_shape, *, enable_gqa: bool, scale) -> AttentionShape:
    """Validate SDPA-layout shapes: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D).

    Raises ValueError naming the argument and what was expected. Returns the sizes and the softmax
    scale (``1/sqrt(D)`` when ``scale`` is None).
    """
    for name, shape in (("query", q_shape), ("key", k_shape), ("value", v_shape)):
        if len(shape) != 4:
            raise ValueError(
                f"{name}: expected 4 dimensions (batch, heads, seq, head_dim), got shape {tuple(shape)}"
            )
        if min(shape) < 1:
            raise ValueError(f"{name}: expected every dimension >= 1 (no empty sequences), got shape {tuple(shape)}")
    b, hq, nq, d = q_shape
    if tuple(k_shape) != tuple(v_shape):
        raise ValueError(f"value: expected the shape of key {tuple(k_shape)}, got {tuple(v_shape)}")
    bk, hkv, nk, dk = k_shape
    if bk != b:
        raise ValueError(f"key: expected batch {b} as query, got {bk}")
    if dk != d:
        raise ValueError(f"key: expected head_dim {d} as query, got {dk}")
    if hkv != hq:
        if not enable_gqa:
            raise ValueError(
                f"key: expected {hq} heads as query, got {hkv}; pass enable_gqa=True for grouped-query attention"
            )
        if hq % hkv:
            raise ValueError(f"key: with enable_gqa, expected heads dividing query's {hq}, got {hkv}")
    if scale is None:
        scale = default_scale(d)
    else:
        if isinstance(scale, bool) or type(scale).__name__ == "bool_" or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")
        scale = float(scale)
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale: expected a finite positive float, got {scale}")
    return AttentionShape(b, hq, hkv, nq, nk, d, scale)


def check_config(config, default: QuantConfig | None = None) -> QuantConfig:
    """``config`` itself, or ``default`` (the paper's configuration) where it is None.

    Raises TypeError naming the argument unless it is a :class:`sim.QuantConfig` or None. What formats a
    caller supports it checks itself.
    """
    if config is None:
        return QuantConfig() if default is None else default
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config: expected a sim.QuantConfig or None, got {type(config).__name__}")
    return config
