"""Synthetic input families: one definition for the tests, the experiments and the notebooks.

Per-tensor families (:func:`make_tensor`) treat Q, K and V alike; :func:`make_qkv` draws an attention
triple, where "outliers" gives each operand the structure seen in LLM attention inputs.
"""

from __future__ import annotations

import numpy as np

#: Families :func:`make_tensor` draws.
#: "normal" N(0, 1); "uniform" U(-1, 1); "extreme_outliers": normal with 1/16 of the channels scaled by one
#: factor from [20, 100] and 2% of the tokens by 50 (scores reach 1e5: softmax is an argmax there, and
#: any 8-bit Q or K loses it: a robustness family, not a model of real inputs); "constant_rows": every
#: row one repeated value; "zero_rows": normal with a quarter of the rows exactly zero.
TENSOR_FAMILIES = ("normal", "uniform", "extreme_outliers", "constant_rows", "zero_rows")
#: Families :func:`make_qkv` draws: the above, and "outliers" (LLM-like, per operand, see make_qkv).
QKV_FAMILIES = ("normal", "uniform", "outliers") + TENSOR_FAMILIES[2:]


def make_tensor(rng: np.random.Generator, shape, family: str, dtype=np.float16) -> np.ndarray:
    """One (B, H, N, D) array of a per-tensor family, rounded to ``dtype``."""
    if family == "normal":
        x = rng.standard_normal(shape)
    elif family == "uniform":
        x = rng.uniform(-1.0, 1.0, shape)
    elif family == "extreme_outliers":
        x = rng.standard_normal(shape)
        channels = rng.choice(shape[3], size=max(1, shape[3] // 16), replace=False)
        x[..., channels] *= rng.uniform(20, 100)
        tokens = rng.random(shape[2]) < 0.02
        x[:, :, tokens, :] *= 50
    elif family == "constant_rows":
        x = np.broadcast_to(rng.standard_normal(shape[:3] + (1,)), shape).copy()
    elif family == "zero_rows":
        x = rng.standard_normal(shape)
        x[:, :, rng.random(shape[2]) < 0.25, :] = 0.0
    else:
        raise ValueError(f"family: expected one of {TENSOR_FAMILIES}, got {family!r}")
    return np.asarray(x, dtype=np.float32).astype(dtype)


def make_qkv(rng: np.random.Generator, q_shape, kv_shape, family: str, dtype=np.float16):
    """Q (q_shape), K and V (kv_shape) of one family, rounded to ``dtype``, drawn in that order.

    "outliers" models what LLM attention inputs look like: K carries a large per-channel offset
    shared by all tokens on 1/16 of its channels (|offset| from [8, 16]), Q has 1/16 of its channels
    scaled by 4, and V has 2% of its tokens scaled by 10 ("massive activation" tokens). Scores keep a
    softmax that is peaked but not an argmax. Every other family draws each tensor independently with
    :func:`make_tensor`.
    """
    if family != "outliers":
        return tuple(make_tensor(rng, shape, family, dtype) for shape in (q_shape, kv_shape, kv_shape))
    d = q_shape[3]
    n_out = max(1, d // 16)
    q = rng.standard_normal(q_shape)
    q[..., rng.choice(d, size=n_out, replace=False)] *= 4.0
    k = rng.standard_normal(kv_shape)
    offsets = rng.uniform(8.0, 16.0, n_out) * rng.choice([-1.0, 1.0], n_out)
    k[..., rng.choice(d, size=n_out, replace=False)] += offsets
    v = rng.standard_normal(kv_shape)
    v[:, :, rng.random(kv_shape[2]) < 0.02, :] *= 10.0
    return tuple(np.asarray(x, dtype=np.float32).astype(dtype) for x in (q, k, v))
