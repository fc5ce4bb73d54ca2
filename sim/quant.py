"""Quantizers: symmetric integer codes with float32 scales, and rounding to float formats.

Every operation here is one the Triton kernels perform the same way (docs/spec.md, section 2):
float32 max, one IEEE division for the scale and one for its inverse, one multiply, and rounding to
nearest even, which the kernels compute with one IEEE add of 1.5 * 2**23 (no float-to-int conversion:
those run at a quarter of the FMA rate on the GPU and would cost the attention loop dearly).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .config import AMAX_FLOOR, INT_FORMATS, QUANT_GRANULARITIES, n_blocks

_FLOAT_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "fp8_e4m3": np.dtype(ml_dtypes.float8_e4m3fn),
    "fp8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
}


#: 1.5 * 2**23: adding it to a float32 |y| < 2**22 leaves round-half-even(y) in the low mantissa bits.
ROUND_MAGIC = np.float32(12582912.0)


def round_half_even(y: np.ndarray) -> np.ndarray:
    """Round float32 ``y`` to the nearest integer, ties to even, as int32. Valid for |y| < 2**22.

    This is IEEE's own rounding: the kernels compute it as ``bits(y + 1.5 * 2**23) - bits(1.5 * 2**23)``
    (one float32 add, whose rounding *is* this one, then an integer subtract), identical in NumPy,
    Triton's interpreter and on the GPU, and cheaper there than a float-to-int conversion.
    """
    y = np.asarray(y, dtype=np.float32)
    return (y + ROUND_MAGIC).view(np.int32) - ROUND_MAGIC.view(np.int32)


def round_to_format(x: np.ndarray, fmt: str) -> np.ndarray:
    """Round ``x`` to float format ``fmt`` (nearest even) and return it as float32.

    FP8 is saturating: values beyond the largest finite value become that value (e4m3 has no
    infinity, and an unscaled cast of an outlier must not turn into NaN).
    """
    if fmt not in _FLOAT_DTYPES:
        raise ValueError(f"fmt: expected one of {list(_FLOAT_DTYPES)}, got {fmt!r}")
    x = np.asarray(x, dtype=np.float32)
    dtype = _FLOAT_DTYPES[fmt]
    if fmt.startswith("fp8"):
        limit = np.float32(ml_dtypes.finfo(dtype).max)
        x = np.clip(x, -limit, limit)
    return x.astype(dtype).astype(np.float32)


def round_output(x: np.ndarray, fmt: str) -> np.ndarray:
    """The attention output rounded to ``fmt`` ("float16", "bfloat16" or "float32") as the kernels store it.

    Round to nearest even, saturating: a finite float32 value beyond the format's largest finite value becomes
    that value (the paper's float normalizer lets an output exceed max |V| by up to one P level, ~1%, which for V
    near float16's maximum would otherwise overflow to inf where torch SDPA's output is finite). Non-finite values
    stay non-finite. Returns an array of the format's dtype (ml_dtypes.bfloat16 for "bfloat16").
    """
    if fmt not in ("float16", "bfloat16", "float32"):
        raise ValueError(f"fmt: expected 'float16', 'bfloat16' or 'float32', got {fmt!r}")
    x = np.asarray(x, dtype=np.float32)
    dtype = _FLOAT_DTYPES[fmt]
    limit = np.float32(ml_dtypes.finfo(dtype).max)
    return np.where(np.isfinite(x), np.clip(x, -limit, limit), x).astype(dtype)


def power_of_two_scales(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-(batch, head) powers of two that bring max |x| into [1, 2): (scale, inverse), (B, H, 1, 1) float32.

    ``scale = 2**(e - 1)`` where ``amax = max(max |x| over the (b, h), AMAX_FLOOR)`` lies in [2**(e-1), 2**e)
    (``np.frexp``); ``inverse = 2**(1 - e)``. Both are exact float32 powers of two (AMAX_FLOOR keeps the inverse
    below 2**120), so ``x * inverse`` and the output's ``* scale`` round nothing where the values stay normal.
    Half-INT8's V (:attr:`sim.QuantConfig.v_power_of_two`).
    """
    amax = np.maximum(_group_absmax(np.asarray(x, np.float32), "head", None), np.float32(AMAX_FLOOR))
    _, exponent = np.frexp(amax)
    return np.ldexp(np.float32(1.0), exponent - 1).astype(np.float32), np.ldexp(np.float32(1.0), 1 - exponent).astype(np.float32)


def scale_shape(x_shape, granularity: str, block_size: int | None = None) -> tuple:
    """The scales' shape for an (B, H, N, D) tensor quantized at ``granularity`` (table in docs/spec.md).

    The one statement of it: :func:`quantize` produces it, ``attention_int8`` (sim's and intfa's) and the
    Triton quantizer check or allocate it.
    """
    b, h, n, d = x_shape
    if granularity == "tensor":
        return (1, 1, 1, 1)
    if granularity == "head":
        return (b, h, 1, 1)
    if granularity == "token":
        return (b, h, n, 1)
    if granularity == "channel":
        return (b, h, 1, d)
    nb = n_blocks(n, block_size)
    return (b, h, nb, 1) if granularity == "block" else (b, h, nb, d)


def _group_absmax(x: np.ndarray, granularity: str, block_size: int | None) -> np.ndarray:
    """max |x| over each quantization group, float32, shaped as the scales."""
    ax = np.abs(x)
    if granularity == "tensor":
        return ax.max(axis=(0, 1, 2, 3), keepdims=True)
    if granularity == "head":
        return ax.max(axis=(2, 3), keepdims=True)
    if granularity == "token":
        return ax.max(axis=3, keepdims=True)
    if granularity == "channel":
        return ax.max(axis=2, keepdims=True)
    b, h, n, d = x.shape
    nb = n_blocks(n, block_size)
    padded = np.zeros((b, h, nb * block_size, d), np.float32)
    padded[:, :, :n] = ax
    blocks = padded.reshape(b, h, nb, block_size, d).max(axis=3)  # (b, h, nb, d)
    return blocks.max(axis=3, keepdims=True) if granularity == "block" else blocks


def expand_scales(scales: np.ndarray, n: int, granularity: str, block_size: int | None = None):
    """Broadcast scales from :func:`quantize` to one per row: (B or 1, H or 1, n, D or 1) float32."""
    scales = np.asarray(scales, np.float32)
    if granularity in ("block", "block_channel"):
        return np.repeat(scales, block_size, axis=2)[:, :, :n]
    return scales


def _check_4d(x, name):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (batch, heads, seq, head_dim), got shape {x.shape}")


def quantize(x: np.ndarray, granularity: str = "token", *, block_size: int | None = None, bits: int = 8):
    """Symmetric quantization of ``x`` to integer codes with float32 scales.

    Parameters
    ----------
    x : (B, H, N, D) array, any float dtype (converted to float32 first; exact for fp16/bf16).
    granularity : "tensor" | "head" | "token" | "channel" | "block" | "block_channel"
        Which elements share a scale: all; one (b, h) matrix; one (b, h, n) row; one (b, h, d) column;
        ``block_size`` consecutive tokens of one (b, h); those tokens per channel.
    block_size : int, needed by "block" and "block_channel".
    bits : 8 or 4. Codes lie in [-qmax, qmax], qmax = 2**(bits-1) - 1 (-128 is never produced, so
        negation is closed and zero is exact).

    Returns
    -------
    codes : (B, H, N, D) int8
    scales : float32, shaped (1,1,1,1), (B,H,1,1), (B,H,N,1), (B,H,1,D), (B,H,ceil(N/block),1) or
        (B,H,ceil(N/block),D) by granularity. ``codes * expand_scales(scales, N, ...)`` reconstructs x.

    Rule: amax = max(max|x| over the group, AMAX_FLOOR); scale = amax / qmax;
    codes = clip(round_half_even(x * (qmax / amax)), -qmax, qmax).
    """
    _check_4d(x, "x")
    if granularity not in QUANT_GRANULARITIES:
        raise ValueError(f"granularity: expected one of {list(QUANT_GRANULARITIES)}, got {granularity!r}")
    if granularity in ("block", "block_channel"):
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size: expected a positive int for granularity {granularity!r}, got {block_size!r}")
    qmax = {8: INT_FORMATS["int8"], 4: INT_FORMATS["int4"]}.get(bits)
    if qmax is None:
        raise ValueError(f"bits: expected 8 or 4, got {bits!r}")
    if min(x.shape) < 1:
        raise ValueError(f"x: expected every dimension >= 1, got shape {x.shape}")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("x: expected finite values, found NaN or inf")

    qmax_f = np.float32(qmax)
    amax = np.maximum(_group_absmax(x, granularity, block_size), np.float32(AMAX_FLOOR))
    scales = (amax / qmax_f).astype(np.float32)
    inv_scales = (qmax_f / amax).astype(np.float32)
    y = x * expand_scales(inv_scales, x.shape[2], granularity, block_size)
    codes = np.clip(round_half_even(y), -qmax, qmax).astype(np.int8)
    assert scales.shape == scale_shape(x.shape, granularity, block_size)
    return codes, scales


def dequantize(codes: np.ndarray, scales: np.ndarray, granularity: str, block_size: int | None = None):
    """codes * scales as float32, (B, H, N, D)."""
    rows = expand_scales(scales, codes.shape[2], granularity, block_size)
    return codes.astype(np.float32) * rows
