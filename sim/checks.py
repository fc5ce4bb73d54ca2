"""The one a-priori check module of the project: the simulator and the torch API refuse the same inputs here,
with the same exception and the same message.

Everything in this file works on numbers, shapes and dtype names (strings), never on arrays or tensors, so that
``sim`` (NumPy) and ``intfa`` (torch) call the same functions with what they read off their own objects:

- :func:`check_sdpa_call`: the shapes of a ``scaled_dot_product_attention`` call as torch accepts them (any
  leading batch dimensions, broadcasting, empty tensors, a value head dim of its own, GQA) -> :class:`SdpaCall`.
- :func:`check_dtypes`, :func:`check_bool`, :func:`check_scale`: the other arguments.
- :func:`check_input_values`, :func:`check_mask_values`, :func:`check_no_overflow`: the values, from a few
  maxima (read by sim directly, by intfa in one host synchronisation when it validates).
- :func:`check_attention_shapes`: the strict (B, H, N, D) rule of the lower-level entry points
  (``attention_int8``, the error bound, the baselines); :func:`check_config`.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .config import LOG2E, QuantConfig, default_scale, qk_scale_factor

#: Largest finite float32: every kernel computes in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Input dtypes (by name) that the attention entry points take, as torch SDPA does (float64 is computed in float32).
INPUT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: Relative slack on the float32 bounds of :func:`check_no_overflow`: each bound is a product of a few float32
#: operations, each rounded (relative error <= 2**-24), so the float64 product may sit a few ulps under the kernel's.
_BOUND_SLACK = 1.0 + 2.0**-20


# --- scalars and dtypes -----------------------------------------------------------------------------------


def check_bool(value, name: str) -> bool:
    """``value`` as a bool; TypeError unless it is one (Python or NumPy bool: ``"False"`` is not)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return bool(value)


def check_scale(scale, head_dim: int) -> float:
    """The softmax scale: ``1/sqrt(head_dim)`` for None, else any finite real number (0 and negative too, as torch).

    With ``head_dim == 0`` every score is an empty sum, 0 whatever the scale; the default is then 1.
    """
    if scale is None:
        return default_scale(head_dim) if head_dim > 0 else 1.0
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a float or None, got {type(scale).__name__}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite float, got {scale}")
    return scale


def check_dtypes(query: str, key: str, value: str, attn_mask: str | None = None) -> None:
    """Dtype names (``"float16"``, ``"bfloat16"``, ``"float32"``, ``"float64"``, ``"bool"``, ...), as torch SDPA:
    one floating dtype for query, key and value; a mask that is bool, float32 or query's dtype. TypeError otherwise.
    """
    if query not in INPUT_DTYPES:
        raise TypeError(f"query: expected dtype float16, bfloat16, float32 or float64, got {query}")
    for name, dtype in (("key", key), ("value", value)):
        if dtype != query:
            raise TypeError(f"{name}: expected query's dtype {query}, got {dtype}")
    if attn_mask is not None and attn_mask not in ("bool", "float32", query):
        raise TypeError(f"attn_mask: expected dtype bool, float32 or query's {query}, got {attn_mask}")


# --- shapes -----------------------------------------------------------------------------------------------


class SdpaCall(NamedTuple):
    """What a ``scaled_dot_product_attention`` call computes, from its shapes.

    The call is computed as ``batch = prod(batch_shape)`` independent (batch, head) problems in the (B, H, N, D)
    layout of the kernels: query (batch, heads_q, seq_q, head_dim), key (batch, heads_kv, seq_k, head_dim),
    value (batch, heads_kv, seq_k, head_dim_v); query head h reads key/value head h // (heads_q // heads_kv).
    The output has shape ``batch_shape + (heads_q, seq_q, head_dim_v)`` less the dimensions the query lacked.

    batch_shape : the leading dimensions before the heads, broadcast over query, key and value.
    out_shape : the output's shape, as torch SDPA returns it.
    scale : the softmax scale (the default uses the original head dim).
    mask_shape : (batch_shape..., heads_q, seq_q, seq_k) that attn_mask broadcasts to, or None without a mask.
    heads_k, heads_v : the head counts key and value come with (1, heads_kv, or a divisor of heads_q); each is
        mapped onto heads_kv (:meth:`head_repeats`).
    """

    batch_shape: tuple
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_k: int
    head_dim: int
    head_dim_v: int
    scale: float
    out_shape: tuple
    mask_shape: tuple | None
    heads_k: int
    heads_v: int

    @property
    def batch(self) -> int:
        return math.prod(self.batch_shape)

    @property
    def empty(self) -> bool:
        """True when the output has no element (nothing to compute)."""
        return 0 in self.out_shape

    def shape4(self, which: str) -> tuple:
        """The (B, H, N, D) shape that "query", "key", "value" or "attn_mask" (B, Hq, Nq, Nk) takes for the kernels."""
        b = self.batch
        return {"query": (b, self.heads_q, self.seq_q, self.head_dim),
                "key": (b, self.heads_kv, self.seq_k, self.head_dim),
                "value": (b, self.heads_kv, self.seq_k, self.head_dim_v),
                "attn_mask": (b, self.heads_q, self.seq_q, self.seq_k)}[which]

    def broadcast_shape(self, which: str) -> tuple:
        """The shape "query", "key", "value" or "attn_mask" is broadcast to before its heads are mapped and its leading
        dims merged: key and value keep their own head count here."""
        b, h, n, d = self.shape4(which)
        h = {"key": self.heads_k, "value": self.heads_v}.get(which, h)
        return self.batch_shape + (h, n, d)

    def head_repeats(self, which: str) -> int:
        """How many consecutive heads of the 4-D operand each head of "key" or "value" becomes (1: as it is)."""
        own = {"key": self.heads_k, "value": self.heads_v}.get(which, self.heads_kv)
        return self.heads_kv // own if own else 1


def _split(shape: tuple) -> tuple:
    """(leading dims, heads) of an SDPA operand; heads is 1 for an operand without a heads dimension."""
    return (tuple(shape[:-3]), shape[-3]) if len(shape) >= 3 else ((), 1)


def check_sdpa_call(q_shape, k_shape, v_shape, mask_shape=None, *, enable_gqa: bool, scale) -> SdpaCall:
    """Validate the shapes of an SDPA call as torch accepts them in inference; raise ValueError naming the argument.

    query (..., Hq, Nq, E), key (..., Hk, Nk, E), value (..., Hk, Nk, Ev): at least 2 dimensions each; the leading
    dimensions (heads included) broadcast against each other as torch's batched matmul does (a dimension of size 1
    is shared). With ``enable_gqa`` key and value may have Hk heads dividing Hq (query head h reads h // (Hq/Hk)).
    Any size may be 0. attn_mask (``mask_shape``) must broadcast to (..., Hq, Nq, Nk) without enlarging it, and
    have at least 2 dimensions. Returns the :class:`SdpaCall`.
    """
    shapes = {"query": tuple(q_shape), "key": tuple(k_shape), "value": tuple(v_shape)}
    for name, shape in shapes.items():
        if len(shape) < 2:
            raise ValueError(f"{name}: expected at least 2 dimensions (..., seq, head_dim), got shape {shape}")
    q_shape, k_shape, v_shape = shapes.values()
    seq_q, head_dim = q_shape[-2:]
    seq_k, head_dim_v = v_shape[-2:]
    if k_shape[-1] != head_dim:
        raise ValueError(f"key: expected head_dim {head_dim} as query, got {k_shape[-1]}")
    if k_shape[-2] != seq_k:
        raise ValueError(f"value: expected {k_shape[-2]} keys (seq) as key, got {seq_k}")
    (q_lead, heads_q), (k_lead, heads_k), (v_lead, heads_v) = (_split(s) for s in shapes.values())
    if heads_q == 1 and max(heads_k, heads_v) > 1:
        heads_q = max(heads_k, heads_v)  # one query head, broadcast over the key/value heads
    for name, heads in (("key", heads_k), ("value", heads_v)):
        if heads in (heads_q, 1) or (enable_gqa and heads > 0 and heads_q % heads == 0):
            continue  # equal; one head shared by all (broadcast); or grouped-query attention
        if enable_gqa:
            raise ValueError(f"{name}: with enable_gqa, expected heads dividing query's {heads_q}, got {heads}")
        raise ValueError(
            f"{name}: expected {heads_q} heads as query, got {heads}; pass enable_gqa=True for grouped-query attention"
        )
    # Key and value with one head count share the kernels' head map (query head h reads h // (Hq / Hkv)); with two
    # different counts both are mapped onto the query's heads first.
    heads_kv = heads_k if heads_k == heads_v else heads_q
    try:
        batch_shape = tuple(np.broadcast_shapes(q_lead, k_lead, v_lead))
    except ValueError:
        raise ValueError(
            f"key: expected leading dimensions that broadcast with query's {q_lead}, got {k_lead} (value {v_lead})"
        ) from None
    scale = check_scale(scale, head_dim)
    lead_out = batch_shape + (heads_q,) if max(len(q_shape), len(k_shape), len(v_shape)) >= 3 else ()
    out_shape = lead_out + (seq_q, head_dim_v)
    scores_shape = None
    if mask_shape is not None:
        mask_shape = tuple(mask_shape)
        scores_shape = batch_shape + (heads_q, seq_q, seq_k)
        shown = lead_out + (seq_q, seq_k)
        fits = len(mask_shape) >= 2 and len(mask_shape) <= len(shown)
        if fits:
            try:
                fits = tuple(np.broadcast_shapes(mask_shape, shown)) == shown
            except ValueError:
                fits = False
        if not fits:
            raise ValueError(f"attn_mask: expected a shape that broadcasts to {shown} (..., seq_q, seq_k), got {mask_shape}")
    return SdpaCall(batch_shape, heads_q, heads_kv, seq_q, seq_k, head_dim, head_dim_v, scale, out_shape, scores_shape,
                    heads_k, heads_v)


class AttentionShape(NamedTuple):
    batch: int
    heads_q: int
    heads_kv: int
    seq_q: int
    seq_k: int
    head_dim: int
    scale: float


def check_attention_shapes(q_shape, k_shape, v_shape, *, enable_gqa: bool, scale) -> AttentionShape:
    """Validate strict SDPA-layout shapes: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D), every size >= 1.

    The rule of the lower-level entry points (pre-quantized operands, the error bound, the baselines), which take
    exactly the kernels' layout; :func:`check_sdpa_call` is the drop-in's. Raises ValueError naming the argument
    and what was expected. Returns the sizes and the softmax scale (``1/sqrt(D)`` when ``scale`` is None; a given
    scale must be positive here).
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


# --- values -----------------------------------------------------------------------------------------------


def check_input_values(name: str, *, finite: bool, abs_max: float) -> None:
    """Refuse a query, key or value holding NaN or inf (ValueError), or finite values beyond float32's range.

    ``abs_max`` is max |x| in the input's own dtype (float64 holds values up to 1.8e308): a value that float32
    rounds to inf is finite but cannot be computed with, a FloatingPointError that says so.
    """
    if not finite:
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    with np.errstate(over="ignore"):
        fits = bool(np.isfinite(np.float32(abs_max)))
    if not fits:
        raise FloatingPointError(
            f"{name}: |values| up to {abs_max:.3e} overflow float32 (largest {FLOAT32_MAX:.3e}); the computation is in "
            "float32 (float64 input is converted): scale the input down"
        )


def check_mask_values(*, nan_or_pos_inf: bool) -> None:
    """Refuse an additive attn_mask holding NaN or +inf (-inf is the masking value); torch SDPA returns NaN there."""
    if nan_or_pos_inf:
        raise ValueError("attn_mask: expected finite values or -inf, found NaN or +inf")


def mask_bias_max(mask_max: float) -> float:
    """The largest score increment an additive mask adds in the exp2 domain, f32(mask) * f32(log2 e), or 0.

    ``mask_max`` is the mask's largest value (-inf for an all -inf mask); negative increments only lower scores.
    """
    return max(0.0, float(mask_max)) * float(np.float32(LOG2E))


def check_no_overflow(*, q_max: float, k_max: float, v_max: float, head_dim: int, seq_k: int, scale: float,
                      config: QuantConfig, mask_max: float = float("-inf")) -> None:
    """Raise FloatingPointError if the tile loop's float32 arithmetic could overflow (docs/spec.md, section 3).

    Finite inputs give finite results unless a float32 intermediate overflows, which this bounds a priori from a
    few maxima (in float64):

    - ``q_max``, ``k_max``: the largest Q and K scales for integer formats, max |q| and max |k| for float formats.
    - ``v_max``: max |V| as the tile loop multiplies it: ``127 * max(v_scale)`` for INT8 V, max |v| for float V.
    - ``mask_max``: the additive mask's largest value (-inf: none, or only -inf).

    Scores (spec 3.1), integer formats: ``s = (f32(qk) * f32(q_scale * qk_const)) * k_scale`` with
    ``|qk| <= 127**2 D`` bounds every intermediate by ``q_max * |qk_const| * 127**2 * D * max(1, k_max)``; float
    formats: ``|qk| <= D * q_max * k_max`` and ``s = qk * qk_const``. An additive mask then adds at most
    ``max(mask, 0) * f32(log2 e)``. The accumulator (3.4): at most ``W * Nk * v_max`` (``W`` the largest P weight:
    255 for signed255, 127 for fixed127, 1 for float P), and the output divides it by ``l_eff >= 1``. Everything
    else is bounded by these or lies in [0, 1]; exp2 of an overflowed negative difference is the 0 it should be.
    """
    qk_const = abs(float(qk_scale_factor(scale)))
    if config.qk_is_int:
        qmax = 127 if config.qk_format == "int8" else 7
        score_bound = q_max * qk_const * qmax * qmax * head_dim * max(1.0, k_max)
        what = f"max(q_scale) * max(k_scale) * {qmax}**2 * D * |f32(scale * log2 e)|"
    else:
        score_bound = head_dim * q_max * k_max * max(1.0, qk_const)
        what = "D * max|q| * max|k| * |f32(scale * log2 e)|"
    score_bound = (score_bound + mask_bias_max(mask_max)) * _BOUND_SLACK
    if not score_bound < FLOAT32_MAX:
        plus_mask = " plus attn_mask * log2 e" if mask_max > 0 else ""
        raise FloatingPointError(
            f"the scaled scores could overflow float32: {what}{plus_mask} reaches {score_bound:.3e} >= "
            f"{FLOAT32_MAX:.3e} (inputs too large in magnitude; scale them down)"
        )
    weight_max = config.p_levels  # fixed127: codes <= 127; signed255: code + 128 <= 255; float P: p <= 1
    acc_bound = weight_max * seq_k * v_max * _BOUND_SLACK
    if not acc_bound < FLOAT32_MAX:
        raise FloatingPointError(
            f"the P @ V accumulator could overflow float32: {weight_max} * Nk * max|V| reaches {acc_bound:.3e} >= "
            f"{FLOAT32_MAX:.3e} (value too large in magnitude; scale it down)"
        )
