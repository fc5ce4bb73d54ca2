"""The torch API: a drop-in for ``torch.nn.functional.scaled_dot_product_attention`` and its parts.

- :func:`scaled_dot_product_attention`: quantize Q, K, V as a :class:`sim.QuantConfig` says and run
  the INT8 FlashAttention kernel. Same argument names and (batch, heads, seq, head_dim) layout as
  torch's; fp16/bf16 (or float32) in, the same dtype out.
- :func:`quantize_operands`: Q, K, V quantized as a config says, in the layout the kernels read.
- :func:`quantize`: int8 codes and float32 scales, identical to :func:`sim.quantize`.
- :func:`attention_int8`: attention over pre-quantized operands (an INT8 KV cache, contiguous or paged), mirroring
  :func:`sim.attention_int8`; small query counts run the split-KV decode kernel.

CUDA tensors run the compiled kernels. CPU tensors run them through Triton's interpreter, which must
be switched on with ``TRITON_INTERPRET=1`` in the environment before Triton is first imported; the
interpreted kernels reproduce sim to the bit.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sim.checks import check_attention_shapes, check_config
from sim.config import INT_FORMATS, QUANT_GRANULARITIES, QuantConfig, qk_scale_factor
from sim.decode import (check_causal_alignment, check_kv_splits, check_paged_cache, check_seq_lens,
                        keys_per_scale_row, paged_scale_shape)

from .kernels import attention_forward
from .kernels.prefill import HALF_PV_DTYPES, MAX_HEAD_DIM, MIN_HEAD_DIM, OUT_DTYPES
from .kernels.quantize import QUANTIZE_DTYPES, quantize_int8, scale_shape
from .runtime import check_device

_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QMAX = INT_FORMATS["int8"]
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# --- checks -------------------------------------------------------------------------------------------


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def _raise_if_nonfinite(flags: list, names: tuple) -> None:
    """Raise for the first tensor whose non-finite flag (read back from the kernels) is set."""
    for flag, name in zip(flags, names):
        if flag:
            raise ValueError(f"{name}: expected finite values, found NaN or inf")


def _check_head_dim(head_dim: int, name: str = "query") -> None:
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(
            f"{name}: the INT8 kernel supports head_dim in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {head_dim}"
        )


def _check_config(config) -> QuantConfig:
    config = check_config(config)
    if config.qk_format != "int8":
        raise ValueError(
            f"config: the Triton kernel implements qk_format 'int8' only, got {config.qk_format!r} "
            "(sim.attention simulates the other formats)"
        )
    if not (config.pv_is_int or config.pv_format in HALF_PV_DTYPES):
        raise ValueError(
            f"config: the Triton kernel implements pv_format 'int8', 'float16' or 'bfloat16', got "
            f"{config.pv_format!r} (sim.attention simulates the other formats)"
        )
    return config


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")
    return value


#: Relative slack on the float32 bounds below: each bound is a product of a few float32 operations, each
#: rounded (relative error <= 2**-24), so the float64 product may sit a few ulps under what the kernel computes.
_BOUND_SLACK = 1.0 + 2.0**-20


def _check_no_overflow(q_scale_max: float, k_scale_max: float, v_max: float, *, head_dim: int, seq_k: int,
                       scale: float, config: QuantConfig) -> None:
    """Raise FloatingPointError before launching if the kernel's float32 arithmetic could overflow.

    Finite inputs give finite results unless a float32 intermediate overflows. Scores (spec 3.1):
    ``s = (f32(qk) * f32(q_scale * qk_const)) * k_scale`` with ``|qk| <= 127 * 127 * D``, so
    ``|s| <= max(q_scale) * qk_const * 127**2 * D * max(1, max(k_scale))`` bounds every intermediate
    (``qk_const = f32(scale * log2 e)``). The accumulator (3.4): at most ``W * Nk`` times the largest
    |V| (``W`` the largest P weight: 255 for signed255, 127 for fixed127, 1 for float P; |V| at most
    ``127 * max(v_scale)`` for codes), and the output divides it by ``l_eff >= 1``. Everything else is
    bounded by these or lies in [0, 1]; exp2 of an overflowed negative difference is the 0 it should be.
    ``v_max`` is max(v_scale) for INT8 V, max |v| for float V. Bounds are in float64.
    """
    qk_const = float(qk_scale_factor(scale))
    score_bound = q_scale_max * qk_const * _QMAX * _QMAX * head_dim * max(1.0, k_scale_max) * _BOUND_SLACK
    if not score_bound < _FLOAT32_MAX:
        raise FloatingPointError(
            f"the scaled scores could overflow float32: max(q_scale) * max(k_scale) * 127**2 * D * f32(scale * log2 e)"
            f" reaches {score_bound:.3e} >= {_FLOAT32_MAX:.3e} (inputs too large in magnitude; scale them down)"
        )
    v_abs_max = v_max * _QMAX if config.pv_is_int else v_max
    weight_max = config.p_levels  # fixed127: codes <= 127; signed255: code + 128 <= 255; float P: p <= 1
    acc_bound = weight_max * seq_k * v_abs_max * _BOUND_SLACK
    if not acc_bound < _FLOAT32_MAX:
        raise FloatingPointError(
            f"the P @ V accumulator could overflow float32: {weight_max} * Nk * max|V| reaches {acc_bound:.3e} >= "
            f"{_FLOAT32_MAX:.3e} (value too large in magnitude; scale it down)"
        )


# --- public API ---------------------------------------------------------------------------------------


def quantize(x: torch.Tensor, granularity: str = "token", *, block_size: int | None = None):
    """Symmetric INT8 quantization of ``x``: (codes, scales), identical to :func:`sim.quantize`.

    Parameters
    ----------
    x : (B, H, N, D) float16, bfloat16 or float32 tensor (CUDA, or CPU under TRITON_INTERPRET=1),
        finite, any strides.
    granularity : "tensor" | "token" | "channel" | "block" | "block_channel" (sim's vocabulary).
    block_size : tokens per block, for "block" and "block_channel".

    Returns
    -------
    codes : (B, H, N, D) int8 in [-127, 127], contiguous.
    scales : float32, shaped (1,1,1,1), (B,H,N,1), (B,H,1,D), (B,H,ceil(N/bs),1) or (B,H,ceil(N/bs),D).
    """
    _check_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x: expected 4 dimensions (batch, heads, seq, head_dim), got shape {tuple(x.shape)}")
    if x.dtype not in QUANTIZE_DTYPES:
        raise TypeError(f"x: expected dtype float16, bfloat16 or float32, got {x.dtype}")
    if granularity not in QUANT_GRANULARITIES:
        raise ValueError(f"granularity: expected one of {list(QUANT_GRANULARITIES)}, got {granularity!r}")
    check_device({"x": x})
    nonfinite = torch.zeros(1, dtype=torch.int32, device=x.device)
    codes, scales = quantize_int8(x, granularity, block_size=block_size, nonfinite_flag=nonfinite)
    _raise_if_nonfinite([nonfinite.item()], ("x",))  # the one host synchronisation
    return codes, scales


def smooth_keys(key: torch.Tensor) -> torch.Tensor:
    """:func:`sim.smooth_keys` on tensors: K minus its per-(batch, head, channel) mean over the keys.

    key : (B, H, N, D) float tensor. Returns float32, same shape. The mean is a float64 sum, one division
    and one rounding to float32, as sim's: exact in any order for float16 keys up to 8192 tokens, so
    both agree to the bit. Softmax is unchanged (every score of a row moves by the same q . mean).
    """
    return key.float() - (key.sum(dim=2, keepdim=True, dtype=torch.float64) / key.shape[2]).float()


class Operands(NamedTuple):
    """Q, K, V as the attention kernels consume them: the torch twin of :class:`sim.Operands`.

    q_codes : (B, Hq, Nq, D) int8; k_codes : (B, Hkv, Nk, D) int8 (of the smoothed K with ``k_smoothing``).
    v : (B, Hkv, Nk, D): int8 codes stored sequence-contiguous (``v.stride(2) == 1``, the K-major operand of
        Hopper's 8-bit P @ V product) for full INT8; the values rounded to float16/bfloat16 for half-INT8.
    q_scale, k_scale, v_scale : float32 in :func:`sim.quantize`'s shapes for the config's granularities;
        v_scale None for half-INT8.

    ``attention_int8(*ops, config=config)`` runs attention on them (full INT8).
    """

    q_codes: torch.Tensor
    k_codes: torch.Tensor
    v: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor | None


def _validating(validate, tensor: torch.Tensor) -> bool:
    """``validate`` resolved: None means check eagerly where that costs no host synchronisation (CPU)."""
    if validate is None:
        return tensor.device.type == "cpu"
    return _check_bool(validate, "validate")


def _quantize_operands(query, key, value, cfg: QuantConfig, *, validate: bool):
    """(Operands, stats): stats = (max q_scale, max k_scale, max |V| or V scale) read back when validating.

    Validating, finiteness is checked inside the quantize kernels (a flag per tensor) and one host
    synchronisation reads the flags and the scale maxima together, raising ValueError for a non-finite input.
    Not validating, nothing is read back: a non-finite input then gives a non-finite scale, so a non-finite
    output (as torch SDPA gives NaN for NaN input), never finite garbage.
    """
    flags = torch.zeros(3, dtype=torch.int32, device=query.device) if validate else None

    def flag(i):
        return None if flags is None else flags[i:i + 1]

    q_codes, q_scale = quantize_int8(query, cfg.q_granularity, block_size=cfg.block_m, nonfinite_flag=flag(0))
    if cfg.k_smoothing:
        key = smooth_keys(key)
    k_codes, k_scale = quantize_int8(key, cfg.k_granularity, block_size=cfg.block_n, nonfinite_flag=flag(1))
    if cfg.pv_is_int:
        # V codes with the sequence contiguous: the K-major layout of the P8 @ V8 product.
        v_op, v_scale = quantize_int8(value, cfg.v_quant_granularity, block_size=cfg.block_n, seq_contiguous=True,
                                      nonfinite_flag=flag(2))
    else:
        v_op, v_scale = value.to(HALF_PV_DTYPES[cfg.pv_format]), None  # round to nearest even, as sim
    ops = Operands(q_codes, k_codes, v_op, q_scale, k_scale, v_scale)
    if not validate:
        return ops, None
    if cfg.pv_is_int:
        v_max = v_scale.amax()
    else:
        v_min, v_max = torch.aminmax(value)  # one read; NaN propagates into both
        v_max = torch.maximum(v_max.abs(), v_min.abs()).float()  # NaN or inf exactly when value holds one
        flags[2] = (~torch.isfinite(v_max)).to(torch.int32)
    stats = torch.stack([flags[0].double(), flags[1].double(), flags[2].double(),
                         q_scale.amax().double(), k_scale.amax().double(), v_max.double()]).tolist()
    _raise_if_nonfinite(stats[:3], ("query", "key", "value"))
    if not cfg.pv_is_int and stats[5] > torch.finfo(v_op.dtype).max:
        raise FloatingPointError(f"value: |value| up to {stats[5]:.3e} overflows pv_format {cfg.pv_format!r} "
                                 f"(largest finite {torch.finfo(v_op.dtype).max:.3e})")
    return ops, tuple(stats[3:])


def quantize_operands(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, config: QuantConfig | None = None,
                      *, validate: bool | None = None) -> Operands:
    """Quantize Q, K, V as ``config`` says, in the layout the kernels read: the torch twin of sim's.

    One public place for K smoothing, V's granularity, the block sizes of block scales (Q: ``config.block_m``,
    K and V: ``config.block_n``) and V's sequence-contiguous layout. The codes and scales equal
    ``sim.quantize_operands(...)``'s (bit for bit).

    Parameters
    ----------
    query : (B, Hq, Nq, D); key, value : (B, Hkv, Nk, D). float16, bfloat16 or float32, one dtype and device
        (CUDA, or CPU under TRITON_INTERPRET=1), any strides.
    config : :class:`sim.QuantConfig` with qk_format "int8" (default: the paper's).
    validate : raise ValueError for non-finite input. None (default): where that needs no host
        synchronisation (CPU tensors); on CUDA nothing is read back, and a non-finite input gives non-finite
        scales (and so a non-finite attention output).

    Returns :class:`Operands`; for full INT8, ``intfa.attention_int8(*ops, config=config)`` is attention.
    """
    cfg = _check_config(config)
    tensors = {"query": query, "key": key, "value": value}
    for name, x in tensors.items():
        _check_tensor(x, name)
        if x.dim() != 4:
            raise ValueError(f"{name}: expected 4 dimensions (batch, heads, seq, head_dim), got shape {tuple(x.shape)}")
        if x.dtype not in _INPUT_DTYPES:
            raise TypeError(f"{name}: expected dtype float16, bfloat16 or float32, got {x.dtype}")
        if min(x.shape) < 1:
            raise ValueError(f"{name}: expected every dimension >= 1, got shape {tuple(x.shape)}")
    check_device(tensors)
    ops, _ = _quantize_operands(query, key, value, cfg, validate=_validating(validate, query))
    return ops


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, config: QuantConfig | None = None,
                                 validate: bool | None = None) -> torch.Tensor:
    """INT8 FlashAttention with the signature of ``torch.nn.functional.scaled_dot_product_attention``.

    Parameters
    ----------
    query : (B, Hq, Nq, D); key, value : (B, Hkv, Nk, D). One dtype for all three: float16, bfloat16
        or float32; one device (CUDA, or CPU under TRITON_INTERPRET=1); any strides; finite values.
        D in [32, 256]; any Nq, Nk >= 1; Hkv != Hq (dividing it) only with ``enable_gqa``.
    attn_mask, dropout_p : not supported (must be None and 0.0).
    is_causal : top-left causal mask, as torch: query i sees keys 0..i.
    scale : softmax scale, default 1/sqrt(D).
    config : :class:`sim.QuantConfig` (default the paper's: Q, K per token, V per tensor, P = round(127 p)).
        qk_format must be "int8"; pv_format "int8" (full INT8) or "float16"/"bfloat16" (half-INT8).
    validate : check the values (finite inputs; no float32 overflow, a priori from the scales) and raise
        ValueError / FloatingPointError. None (default): where that needs no host synchronisation (CPU
        tensors). On CUDA the call then never waits for the GPU (it can be captured in a CUDA graph), and a
        non-finite input or an overflow gives a non-finite output, as torch SDPA does for NaN input.

    Returns (B, Hq, Nq, D) in query's dtype; equal to ``sim.attention(..., config=config)`` rounded to
    that dtype (to the bit under the interpreter; within the contract's bound compiled).
    """
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_tensor(x, name)
    if attn_mask is not None:
        raise NotImplementedError("attn_mask: the INT8 kernel supports no attention mask (use is_causal)")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p: expected a float, got {type(dropout_p).__name__}")
    if dropout_p != 0.0:
        raise NotImplementedError(f"dropout_p: the INT8 kernel implements no dropout (inference only), got {dropout_p}")
    is_causal = _check_bool(is_causal, "is_causal")
    enable_gqa = _check_bool(enable_gqa, "enable_gqa")
    shape = check_attention_shapes(tuple(query.shape), tuple(key.shape), tuple(value.shape),
                                   enable_gqa=enable_gqa, scale=scale)
    cfg = _check_config(config)
    for name, x in (("query", query), ("key", key), ("value", value)):
        if x.dtype not in _INPUT_DTYPES:
            raise TypeError(f"{name}: expected dtype float16, bfloat16 or float32, got {x.dtype}")
    for name, x in (("key", key), ("value", value)):
        if x.dtype != query.dtype:
            raise TypeError(f"{name}: expected query's dtype {query.dtype}, got {x.dtype}")
    _check_head_dim(shape.head_dim)
    check_device({"query": query, "key": key, "value": value})

    ops, stats = _quantize_operands(query, key, value, cfg, validate=_validating(validate, query))
    if stats is not None:
        _check_no_overflow(*stats, head_dim=shape.head_dim, seq_k=shape.seq_k, scale=shape.scale, config=cfg)
    return attention_forward(*ops, config=cfg, scale=shape.scale, is_causal=is_causal, out_dtype=query.dtype)


def attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, *, is_causal=False, scale=None,
                   enable_gqa=False, config: QuantConfig | None = None, out_dtype=torch.float16,
                   return_lse=False, validate: bool | None = None, kv_splits: int | None = None,
                   seq_lens: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                   causal_alignment: str = "top_left"):
    """Attention over pre-quantized INT8 operands (an INT8 KV cache, contiguous or paged), mirroring
    :func:`sim.attention_int8`.

    Parameters
    ----------
    q_codes : (B, Hq, Nq, D) int8; codes in [-127, 127], any strides.
    k_codes, v_codes : the cache, int8 codes in [-127, 127], any strides. Contiguous: (B, Hkv, Nk, D). Paged (with
        ``block_table``): pages (num_pages, Hkv, page_size, D), page_size a multiple of ``config.block_n``. V with
        the sequence contiguous (e.g. ``codes.transpose(2, 3)`` of a (B or num_pages, Hkv, D, N) buffer) is the fast
        layout on Hopper.
    q_scale, k_scale, v_scale : float32, finite, >= 0, in :func:`sim.quantize`'s shapes for the granularities
        ``config`` names: Q blocks of ``block_m`` rows, K and V blocks of ``block_n`` (V "block" is
        sim.quantize's "block_channel": (B, Hkv, ceil(Nk/block_n), D)). Paged: per-key and per-block scales in
        pages like the codes, V per channel per sequence (:func:`sim.paged_scale_shape`).
    is_causal, scale, enable_gqa : as :func:`scaled_dot_product_attention`.
    config : :class:`sim.QuantConfig` with qk_format and pv_format "int8".
    out_dtype : float16, bfloat16 or float32.
    return_lse : also return the natural log-sum-exp of the scaled scores, (B, Hq, Nq) float32.
    validate : check the values (codes in [-127, 127] and finite non-negative scales where keys are in use, no
        float32 overflow, block table entries and lengths in range) and raise ValueError / FloatingPointError; this
        reads every code in use once and waits for the GPU. None (default): only where that needs no host
        synchronisation (CPU tensors). Unchecked, a code of -128 is still multiplied exactly (|products| stay below
        2**22), a non-finite scale or an overflow gives a non-finite output, and a block-table entry or length out
        of range is never followed: that sequence's output is NaN.
    kv_splits : the decode kernel's key splits (docs/spec.md 3.6), which the numbers depend on. None (default):
        :func:`intfa.kernels.dispatch.decode_splits` chooses from the shape and the GPU (pass the same value to
        :func:`sim.attention_int8` to reproduce the output to the bit); an int >= 1 fixes it. Prefill-sized calls
        (Nq > 64, contiguous, top-left) run unsplit unless kv_splits > 1 is asked for.
    seq_lens : (B,) int32, the keys in use of each sequence (required with ``block_table``; default all Nk): keys at
        or past it are never read.
    block_table : (B, max_pages) int32, row b the pages of sequence b in key order; only the first
        ceil(seq_lens[b] / page_size) entries of a row are read (pad the rest with anything, e.g. -1). Pages may
        be shared between sequences.
    causal_alignment : with ``is_causal``, where query i of sequence b sits among its keys: "top_left" (torch
        SDPA) at position i; "bottom_right" at seq_lens[b] - Nq + i: the queries are the sequence's newest tokens,
        as in decoding and chunked prefill. A query that sees no key gets out 0 and lse -inf.

    Returns (B, Hq, Nq, D) out_dtype (and lse).
    """
    config = check_config(config)
    if config.qk_format != "int8" or config.pv_format != "int8":
        raise ValueError(
            f"config: attention_int8 needs qk_format and pv_format 'int8', got {config.qk_format!r} and "
            f"{config.pv_format!r}"
        )
    codes = {"q_codes": q_codes, "k_codes": k_codes, "v_codes": v_codes}
    scales = {"q_scale": q_scale, "k_scale": k_scale, "v_scale": v_scale}
    for name, x in {**codes, **scales}.items():
        _check_tensor(x, name)
    for name, x in codes.items():
        if x.dtype != torch.int8:
            raise TypeError(f"{name}: expected dtype int8, got {x.dtype}")
    is_causal = _check_bool(is_causal, "is_causal")
    enable_gqa = _check_bool(enable_gqa, "enable_gqa")
    return_lse = _check_bool(return_lse, "return_lse")
    if out_dtype not in OUT_DTYPES:
        raise TypeError(f"out_dtype: expected torch.float16, torch.bfloat16 or torch.float32, got {out_dtype}")
    if kv_splits is not None:
        kv_splits = check_kv_splits(kv_splits)
    causal_alignment = check_causal_alignment(causal_alignment)
    cache = _check_cache_layout(q_codes, k_codes, v_codes, seq_lens, block_table, config)
    shape = check_attention_shapes(tuple(q_codes.shape), cache.kv_shape, cache.kv_shape, enable_gqa=enable_gqa,
                                   scale=scale)
    _check_head_dim(shape.head_dim, "q_codes")
    b, hq, hkv, nq, nk, d = shape[:6]
    if block_table is None:
        def kv_scale_shape(granularity):
            return scale_shape((b, hkv, nk, d), granularity, config.block_n)
    else:
        def kv_scale_shape(granularity):
            return paged_scale_shape(granularity, num_pages=cache.num_pages, heads=hkv, page_size=cache.page_size,
                                     head_dim=d, batch=b, block_n=config.block_n)
    expected = {
        "q_scale": scale_shape((b, hq, nq, d), config.q_granularity, config.block_m),
        "k_scale": kv_scale_shape(config.k_granularity),
        "v_scale": kv_scale_shape(config.v_quant_granularity),
    }
    for name, x in scales.items():
        if x.dtype != torch.float32:
            raise TypeError(f"{name}: expected dtype float32, got {x.dtype}")
        if tuple(x.shape) != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]} for the configured granularity, got "
                             f"{tuple(x.shape)}")
    indices = {name: x for name, x in (("seq_lens", seq_lens), ("block_table", block_table)) if x is not None}
    check_device({**codes, **scales, **indices})
    if _validating(validate, q_codes):
        if seq_lens is not None:
            _check_cache_indices(seq_lens, block_table, cache, batch=b)
            codes, scales = _keys_in_use(codes, scales, seq_lens, block_table, cache, config)
        _check_int8_values(codes, scales, shape, config)
    return attention_forward(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, config=config, scale=shape.scale,
                             is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, kv_splits=kv_splits,
                             seq_lens=seq_lens, block_table=block_table, causal_alignment=causal_alignment)


class _CacheLayout(NamedTuple):
    """The cache as attention_int8 reads it: the (B, Hkv, N, D) shape it stands for, and its pages (if paged)."""

    kv_shape: tuple
    num_pages: int
    page_size: int


def _check_cache_layout(q_codes, k_codes, v_codes, seq_lens, block_table, config: QuantConfig) -> _CacheLayout:
    """Types and shapes of the cache's arguments (no values): contiguous, or pages with a block table."""
    for name, x, ndim in (("seq_lens", seq_lens, 1), ("block_table", block_table, 2)):
        if x is None:
            continue
        _check_tensor(x, name)
        if x.dtype != torch.int32:
            raise TypeError(f"{name}: expected dtype int32, got {x.dtype}")
        if x.dim() != ndim:
            raise ValueError(f"{name}: expected {ndim} dimension{'s' if ndim > 1 else ''}, got shape {tuple(x.shape)}")
    if q_codes.dim() != 4:  # the shape check that follows names q_codes' problem
        return _CacheLayout(tuple(k_codes.shape), 0, 0)
    batch = q_codes.shape[0]
    if seq_lens is not None and tuple(seq_lens.shape) != (batch,):
        raise ValueError(f"seq_lens: expected shape ({batch},) (one length per sequence of q_codes), got "
                         f"{tuple(seq_lens.shape)}")
    if block_table is None:
        return _CacheLayout(tuple(k_codes.shape), 0, 0)
    if seq_lens is None:
        raise ValueError("seq_lens: a paged cache (block_table given) needs each sequence's length, got None")
    if block_table.shape[0] != batch:
        raise ValueError(f"block_table: expected {batch} rows (one per sequence of q_codes), got shape "
                         f"{tuple(block_table.shape)}")
    if k_codes.dim() != 4:
        raise ValueError(f"k_codes: expected pages (num_pages, heads, page_size, head_dim), got shape "
                         f"{tuple(k_codes.shape)}")
    if v_codes.shape != k_codes.shape:
        raise ValueError(f"v_codes: expected the shape of k_codes {tuple(k_codes.shape)}, got {tuple(v_codes.shape)}")
    num_pages, heads, page_size, head_dim = k_codes.shape
    if min(k_codes.shape) < 1 or block_table.shape[1] < 1:
        raise ValueError(f"k_codes: expected at least one page of at least one key, got shape {tuple(k_codes.shape)} "
                         f"and block_table {tuple(block_table.shape)}")
    if page_size % config.block_n:
        raise ValueError(f"k_codes: expected a page size that is a multiple of config.block_n={config.block_n} "
                         f"(a key tile never straddles pages), got {page_size}")
    return _CacheLayout((batch, heads, block_table.shape[1] * page_size, head_dim), num_pages, page_size)


def _check_cache_indices(seq_lens, block_table, cache: _CacheLayout, *, batch: int) -> None:
    """Lengths in range and the block table's entries in use naming real pages (reads both to the host)."""
    lens = seq_lens.cpu().numpy()
    if block_table is None:
        check_seq_lens(lens, batch=batch, capacity=cache.kv_shape[2], capacity_why="k_codes' sequence dimension")
    else:
        check_paged_cache(block_table.cpu().numpy(), lens, batch=batch, num_pages=cache.num_pages,
                          page_size=cache.page_size)


def _keys_in_use(codes: dict, scales: dict, seq_lens, block_table, cache: _CacheLayout, config: QuantConfig):
    """The cache's codes and scales of the keys in use only (what the value checks look at): a flat gather.

    Keys past a sequence's length, and pages no sequence uses, may hold anything (they are never read).
    """
    capacity = cache.kv_shape[2]
    positions = torch.arange(capacity, device=seq_lens.device)
    seq, pos = (positions[None, :] < seq_lens.long()[:, None]).nonzero(as_tuple=True)
    if block_table is None:
        where, slot = seq, pos
    else:
        where, slot = block_table[seq, pos // cache.page_size].long(), pos % cache.page_size
    codes = dict(codes, k_codes=codes["k_codes"][where, :, slot], v_codes=codes["v_codes"][where, :, slot])
    scales = dict(scales)
    for name, granularity in (("k_scale", config.k_granularity), ("v_scale", config.v_quant_granularity)):
        keys_per_row = keys_per_scale_row(granularity, config.block_n)
        if keys_per_row is not None:
            scales[name] = scales[name][where, :, slot // keys_per_row]
    return codes, scales


def _check_int8_values(codes: dict, scales: dict, shape, config: QuantConfig) -> None:
    """attention_int8's value checks, raising ValueError / FloatingPointError (one host synchronisation)."""
    # One host synchronisation for every value check: min of each code tensor (one int8 read each;
    # -128 is the one code the kernel does not accept), min and max of each scale tensor (small). A tensor may be
    # empty when no sequence uses a key of the cache (all lengths 0): nothing to check there.
    zero = torch.zeros((), dtype=torch.float64, device=codes["q_codes"].device)
    extremes = [x.amin().double() if x.numel() else zero for x in codes.values()]
    for x in scales.values():
        low, high = torch.aminmax(x) if x.numel() else (zero, zero)  # NaN propagates into both
        extremes += [low.double(), high.double()]
    extremes = torch.stack(extremes).tolist()
    for name, low in zip(codes, extremes[:3]):
        if low == -128:
            raise ValueError(f"{name}: expected codes in [-{_QMAX}, {_QMAX}], found -128")
    scale_max = {}
    for i, name in enumerate(scales):
        low, high = extremes[3 + 2 * i: 5 + 2 * i]
        if not (low >= 0 and high <= _FLOAT32_MAX):
            raise ValueError(f"{name}: expected finite non-negative scales")
        scale_max[name] = high
    _check_no_overflow(scale_max["q_scale"], scale_max["k_scale"], scale_max["v_scale"], head_dim=shape.head_dim,
                       seq_k=shape.seq_k, scale=shape.scale, config=config)
