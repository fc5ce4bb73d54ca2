"""Inputs of the accuracy studies: synthetic Q, K, V families and activations captured from a real model.

Every study draws its inputs through :func:`input_cases`, so that one family name means the same
numbers everywhere (figures, notebooks, tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from sim.inputs import make_qkv

#: Synthetic families, defined in :mod:`sim.inputs` (the tests draw the same ones). "outliers" is the
#: LLM-like family: K with large per-channel offsets, Q with a few scaled channels, V with a few
#: massive tokens.
SYNTHETIC_FAMILIES = ("normal", "uniform", "outliers")
#: "real": Q, K, V captured from all-MiniLM-L6-v2 on English text (:mod:`.capture`); one layer a sample.
FAMILIES = SYNTHETIC_FAMILIES + ("real",)


def synthetic_qkv(family: str, *, seq_len: int, heads: int, head_dim: int, seed: int, batch: int = 1,
                  dtype=np.float16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q, K, V of one synthetic family, each (batch, heads, seq_len, head_dim) ``dtype``, drawn in that
    order from ``numpy.random.default_rng(seed)``."""
    for name, value in (("seq_len", seq_len), ("heads", heads), ("head_dim", head_dim), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if family not in SYNTHETIC_FAMILIES:
        raise ValueError(f"family: expected one of {SYNTHETIC_FAMILIES}, got {family!r}")
    shape = (batch, heads, seq_len, head_dim)
    return make_qkv(np.random.default_rng(seed), shape, shape, family, dtype)


@dataclasses.dataclass
class InputCase:
    """One sample of a study: Q, K, V in SDPA layout and where they came from.

    ``sample`` is the seed of a synthetic family, or the layer index for "real". Q may hold a subset of
    the query rows (:func:`.harness.subsample_queries`); ``seq_len`` is the number of keys.
    """

    family: str
    sample: int
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray

    @property
    def seq_len(self) -> int:
        """N, the number of keys (every query attends to all of them)."""
        return self.k.shape[2]


def real_available() -> tuple[bool, str]:
    """Whether the real-activation family can be captured here, and if not, why."""
    from .capture import minilm_available

    return minilm_available()


def input_cases(families: Sequence[str], *, seq_len: int, heads: int, head_dim: int, seeds: Sequence[int],
                real_tokens: int = 512) -> Iterator[InputCase]:
    """Yield the samples of each family: ``len(seeds)`` draws of a synthetic one, every layer of "real".

    Real samples have the model's shape (1, 12 heads, tokens, 32), not ``heads``/``head_dim``/``seq_len``:
    their text has ``real_tokens`` tokens at most. Raises RuntimeError for "real" where it cannot be
    captured (check :func:`real_available` first to skip it).
    """
    for family in families:
        if family == "real":
            from .capture import capture_minilm

            for layer in capture_minilm(max_tokens=real_tokens):
                yield InputCase("real", layer.layer, layer.q, layer.k, layer.v)
        elif family in SYNTHETIC_FAMILIES:
            for seed in seeds:
                q, k, v = synthetic_qkv(family, seq_len=seq_len, heads=heads, head_dim=head_dim, seed=seed)
                yield InputCase(family, int(seed), q, k, v)
        else:
            raise ValueError(f"families: expected names from {FAMILIES}, got {family!r}")
