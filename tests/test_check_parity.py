"""sim and the torch API refuse the same inputs, with the same exception and the same message (issue 11).

Both call sim.checks (the one a-priori check module). Each row below is one bad input, given to sim.attention as
NumPy arrays and to intfa.scaled_dot_product_attention as CPU tensors with ``validate=True``; both must raise the
same exception class with the same text. Before issue 11, sim gave NaN and a NumPy warning where intfa raised
FloatingPointError, called a finite float64 1e300 "NaN or inf", and ran grouped-query attention for
``enable_gqa="False"``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import sim

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")

CONFIG = sim.QuantConfig(block_m=16, block_n=16)


def qkv(dtype=np.float32, hq=2, hkv=2, nq=12, nk=20, d=32, dv=None):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype)
            for shape in ((1, hq, nq, d), (1, hkv, nk, d), (1, hkv, nk, dv or d))]


def poke(arrays, index, position, value):
    arrays = [a.copy() for a in arrays]
    arrays[index][position] = value
    return arrays


def scaled(arrays, factors):
    return [(a * np.asarray(f, a.dtype)).astype(a.dtype) for a, f in zip(arrays, factors)]


def mask_with(value, dtype=np.float32):
    mask = np.zeros((12, 20), dtype)
    mask[3, 4] = value
    return mask


ROWS = {
    "NaN in query": (poke(qkv(), 0, (0, 1, 3, 5), np.nan), {}, ValueError),
    "inf in key": (poke(qkv(), 1, (0, 0, 0, 0), np.inf), {}, ValueError),
    "-inf in value": (poke(qkv(), 2, (0, 1, 19, 31), -np.inf), {}, ValueError),
    "float64 1e300 in key": (poke(qkv(np.float64), 1, (0, 0, 2, 2), 1e300), {}, FloatingPointError),
    "float64 NaN in value": (poke(qkv(np.float64), 2, (0, 0, 2, 2), np.nan), {}, ValueError),
    "scores overflow float32": (scaled(qkv(), (1e19, 1e19, 1)), {}, FloatingPointError),
    "accumulator overflows float32": (scaled(qkv(), (1, 1, 1e36)), {}, FloatingPointError),
    "NaN in the mask": (qkv(), dict(attn_mask=mask_with(np.nan)), ValueError),
    "+inf in the mask": (qkv(), dict(attn_mask=mask_with(np.inf)), ValueError),
    "mask overflows the scores": (qkv(), dict(attn_mask=mask_with(3e38)), FloatingPointError),
    "mask of int8": (qkv(), dict(attn_mask=np.zeros((12, 20), np.int8)), TypeError),
    "mask of a wrong shape": (qkv(), dict(attn_mask=np.zeros((12, 21), np.bool_)), ValueError),
    "enable_gqa='False'": (qkv(hq=4), dict(enable_gqa="False"), TypeError),
    "is_causal=1": (qkv(), dict(is_causal=1), TypeError),
    "scale nan": (qkv(), dict(scale=float("nan")), ValueError),
    "scale '0.1'": (qkv(), dict(scale="0.1"), TypeError),
    "heads without enable_gqa": (qkv(hq=4), {}, ValueError),
    "heads not dividing": (qkv(hq=4, hkv=3), dict(enable_gqa=True), ValueError),
    "key head dim": ([qkv()[0], qkv(d=16)[1], qkv(d=16)[2]], {}, ValueError),
    "value keys": ([*qkv()[:2], qkv(nk=21)[2]], {}, ValueError),
    "mixed dtypes": ([*qkv()[:2], qkv(np.float16)[2]], {}, TypeError),
    "integer query": ([x.astype(np.int32) for x in qkv()], {}, TypeError),
    "one dimension": ([x[0, 0, 0] for x in qkv()], {}, ValueError),
    "batches that do not broadcast": ([np.concatenate([x, x]) for x in qkv()[:1]] +
                                      [np.concatenate([x, x, x]) for x in qkv()[1:]], {}, ValueError),
}


def raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def to_torch(value):
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", list(ROWS))
def test_sim_and_intfa_refuse_alike(name):
    arrays, kwargs, expected = ROWS[name]
    in_sim = raised(lambda: sim.attention(*arrays, config=CONFIG, **kwargs))
    in_intfa = raised(lambda: intfa.scaled_dot_product_attention(
        *map(to_torch, arrays), config=CONFIG, validate=True, **{k: to_torch(v) for k, v in kwargs.items()}))
    assert type(in_sim) is expected, f"sim raised {type(in_sim).__name__}: {in_sim}"
    assert type(in_intfa) is expected, f"intfa raised {type(in_intfa).__name__}: {in_intfa}"
    assert str(in_intfa) == str(in_sim)


def test_the_checks_are_one_module():
    """Both sides import the shared checks: sim.attention and intfa's front end call the same functions."""
    import importlib

    api, frontend, simulator, checks = (importlib.import_module(name) for name in
                                        ("intfa.api", "intfa.frontend", "sim.attention", "sim.checks"))
    for shared in ("check_sdpa_call", "check_dtypes", "check_bool"):
        assert getattr(api, shared) is getattr(checks, shared)
        assert getattr(simulator, shared) is getattr(checks, shared)
    for shared in ("check_input_values", "check_mask_values", "check_no_overflow"):
        assert getattr(frontend, shared) is getattr(checks, shared)
        assert getattr(simulator, shared) is getattr(checks, shared)
