"""The authors' INT-FlashAttention Triton code, defects included, emulated on top of the simulator.

The notebooks show what the original code (INT-FlashAttention2024/INT-FlashAttention,
``flash_atten_full_int8.py``) computes where it differs from this project. Each emulation reuses
:func:`sim.attention_int8` (the one tile loop) on operands arranged as the original kernel would see
them; none of them re-implements the loop.

The defects and where each is emulated:

1. **Causal running max lost** (:func:`causal_running_max_lost`). The original's inner loop returns
   ``(acc, l_i)`` but not ``m_i``, so the diagonal stage of a causal call starts again from
   ``m_i = -inf``. Its first tile then rescales by ``alpha = exp2(-inf - m) = 0``: the accumulator and
   normalizer of every key before the diagonal block are multiplied by zero. What survives is
   attention over the diagonal block of ``block_m`` keys only.
2. **No boundary handling** (:func:`tail_past_block`). Loads have no mask or boundary check, and the
   non-causal loop runs to ``N`` in whole ``block_n`` tiles, so the last tile reads the K and V rows
   (and per-token K scales) that follow this (batch, head) slice in contiguous memory: the first rows
   of the next slice, or whatever lies past the end of the tensor for the last one.
3. **Normalizer summing float P**: ``l`` adds up ``P`` before rounding while the numerator multiplies
   ``round(127 P)``. That is already a configuration: ``QuantConfig(normalizer="float")``, the paper's
   default (:func:`authors_config`). ``normalizer="quantized"`` is the project's fix.

Not emulated: float16 scales (subnormal for small rows, NaN for all-zero rows), the P codes being
formed in float16 arithmetic (a relative 2**-11 perturbation of P before rounding), and the output
rows past ``N`` that the last query tile stores into the next slice (a write race whose winner
depends on the GPU's schedule).
"""

from __future__ import annotations

import numpy as np

from .attention import attention_int8, quantize_operands
from .checks import check_attention_shapes, check_config
from .config import QuantConfig, n_blocks


def authors_config(block_m: int = 128, block_n: int = 64) -> QuantConfig:
    """The authors' full-INT8 configuration: the paper's, with their 64-key tiles and ``l`` summing the float P.

    INT8 Q and K per token, V per (batch, head) (their ``v_scale`` is (B, H)), P codes ``round(127 P)``, ``normalizer="float"``.
    """
    return QuantConfig.paper().replace(block_m=block_m, block_n=block_n, normalizer="float")


def _check_full_int8(config) -> QuantConfig:
    config = check_config(config, authors_config())
    if config.qk_format != "int8" or config.pv_format != "int8":
        raise ValueError(f"config: the authors' full-INT8 kernel needs qk_format and pv_format 'int8', got {config}")
    return config


def _int8(codes: np.ndarray) -> np.ndarray:
    """Operands hold integer codes as float32; attention_int8 takes them as int8."""
    return codes.astype(np.int8)


def _scale_rows(scale: np.ndarray, granularity: str, block: int, lo: int, hi: int) -> np.ndarray:
    """The part of a scale array that covers sequence positions [lo, hi) (lo a multiple of ``block``)."""
    if granularity in ("tensor", "head", "channel"):
        return scale
    if granularity == "token":
        return scale[:, :, lo:hi]
    return scale[:, :, lo // block : n_blocks(hi, block)]  # "block" or "block_channel"


def causal_running_max_lost(q, k, v, *, scale=None, enable_gqa=False, config=None) -> np.ndarray:
    """Causal attention as the authors' full-INT8 kernel computes it: only the diagonal block survives.

    Query tile ``i`` (rows ``[i*block_m, (i+1)*block_m)``) attends to keys ``[i*block_m, (i+1)*block_m)``
    under the causal mask and to nothing before them, because the running max was not carried into the
    diagonal stage (module docstring, defect 1). Quantization is of the whole tensors, as the original.

    Parameters
    ----------
    q : (B, Hq, N, D), k and v : (B, Hkv, N, D) float arrays; the original has one sequence length.
    config : full-INT8 :class:`sim.QuantConfig` with ``block_m`` a multiple of ``block_n`` (the
        original's diagonal stage walks ``block_m`` keys in ``block_n`` steps); default
        :func:`authors_config`.

    Returns (B, Hq, N, D) float32. Rows of the first query tile are unaffected (nothing precedes
    their diagonal block); every later row loses all keys before its tile.
    """
    config = _check_full_int8(config)
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    shape = check_attention_shapes(q.shape, k.shape, v.shape, enable_gqa=enable_gqa, scale=scale)
    if shape.seq_q != shape.seq_k:
        raise ValueError(f"key: the authors' kernel has one sequence length; expected {shape.seq_q} keys, got {shape.seq_k}")
    bm, bn = config.block_m, config.block_n
    if bm % bn:
        raise ValueError(f"config: the authors' diagonal stage needs block_m a multiple of block_n, got {bm} and {bn}")
    ops = quantize_operands(q, k, v, config)
    n = shape.seq_q
    out = np.empty(q.shape, np.float32)
    for lo in range(0, n, bm):
        hi = min(lo + bm, n)
        out[:, :, lo:hi] = attention_int8(
            _int8(ops.q[:, :, lo:hi]), _int8(ops.k[:, :, lo:hi]), _int8(ops.v[:, :, lo:hi]),
            _scale_rows(ops.q_scale, config.q_granularity, bm, lo, hi),
            _scale_rows(ops.k_scale, config.k_granularity, bn, lo, hi),
            _scale_rows(ops.v_scale, config.v_quant_granularity, bn, lo, hi),
            is_causal=True, scale=shape.scale, enable_gqa=enable_gqa, config=config,
        )
    return out


def tail_past_block(q, k, v, *, scale=None, enable_gqa=False, config=None, garbage_seed=0) -> np.ndarray:
    """Non-causal attention as the authors' kernel computes it when N is not a multiple of ``block_n``.

    The last key tile is read whole (module docstring, defect 2): keys ``N .. ceil(N/block_n)*block_n``
    of slice (b, h) are the first rows of the next slice in the contiguous (B, H, N, D) layout, codes
    and per-token K scales alike; past the end of the tensor they are ``garbage``: int8 codes drawn
    uniformly from [-127, 127] and K scales drawn from the tensor's own, with ``garbage_seed``.

    Parameters
    ----------
    q : (B, Hq, N, D), k and v : (B, Hkv, N, D) float arrays.
    config : full-INT8 :class:`sim.QuantConfig` with per-token K and V per tensor, head or channel (scales that
        do not run along the sequence, as the original); default :func:`authors_config`.

    Returns (B, Hq, N, D) float32: the rows the original stores within bounds. When N is a multiple of
    ``block_n`` this equals :func:`sim.attention` with the same config.
    """
    config = _check_full_int8(config)
    if config.k_granularity != "token":
        raise ValueError(f"config: the emulation reads per-token K scales past N; expected k_granularity 'token', got {config.k_granularity!r}")
    if config.v_granularity not in ("tensor", "head", "channel"):
        raise ValueError(f"config: expected v_granularity 'tensor', 'head' or 'channel' (no scale along the sequence), got {config.v_granularity!r}")
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    shape = check_attention_shapes(q.shape, k.shape, v.shape, enable_gqa=enable_gqa, scale=scale)
    ops = quantize_operands(q, k, v, config)
    b, hkv, n, d = k.shape
    n_read = n_blocks(n, config.block_n) * config.block_n
    overrun = n_read - n
    rng = np.random.default_rng(garbage_seed)

    def with_following_memory(rows: np.ndarray, garbage: np.ndarray) -> np.ndarray:
        """(B, Hkv, N, X) -> (B, Hkv, n_read, X): each slice followed by what lies after it in memory."""
        flat = np.concatenate([rows.reshape(b * hkv * n, -1), garbage])
        starts = np.arange(b * hkv)[:, None] * n
        return flat[starts + np.arange(n_read)[None, :]].reshape(b, hkv, n_read, -1)

    k_codes = with_following_memory(_int8(ops.k), rng.integers(-127, 128, (overrun, d)).astype(np.int8))
    v_codes = with_following_memory(_int8(ops.v), rng.integers(-127, 128, (overrun, d)).astype(np.int8))
    k_scale = with_following_memory(ops.k_scale, rng.choice(ops.k_scale.ravel(), (overrun, 1)))
    return attention_int8(
        _int8(ops.q), k_codes, v_codes, ops.q_scale, k_scale.astype(np.float32), ops.v_scale,
        is_causal=False, scale=shape.scale, enable_gqa=enable_gqa, config=config,
    )
