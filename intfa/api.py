"""The torch API: a drop-in for ``torch.nn.functional.scaled_dot_product_attention`` and its parts.

- :func:`scaled_dot_product_attention`: quantize Q, K, V as a :class:`sim.QuantConfig` says and run
  the INT8 FlashAttention kernel. Same arguments as torch's, and what torch accepts in inference (attn_mask,
  leading dimensions, empty tensors, a value head dim of its own, float64...; docs/conformance.md) or a
  NotImplementedError naming the feature; a straight-through backward (:mod:`intfa.autograd`). Its front end
  is :mod:`intfa.frontend`; the checks are :mod:`sim.checks`, shared with the simulator.
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

from sim.checks import (
    check_attention_shapes,
    check_bool,
    check_config,
    check_dtypes,
    check_no_overflow,
    check_not_simulated_only,
    check_sdpa_call,
)
from sim.config import INT_FORMATS, PEER_QUANT_GRANULARITIES, QUANT_GRANULARITIES, QuantConfig
from sim.decode import (check_causal_alignment, check_kv_splits, check_paged_cache, check_seq_lens,
                        keys_per_scale_row, paged_scale_shape)

from . import ops as _ops
from .autograd import SdpaArguments, StraightThroughAttention, needs_grad
from .frontend import (
    Operands,
    check_dropout,
    check_kernel_limits,
    quantize_for_kernels,
    read_back,
    sdpa_forward,
    smooth_keys,
)
from .kernels import attention_forward
from .kernels.prefill import HALF_PV_DTYPES, MAX_HEAD_DIM, MIN_HEAD_DIM, OUT_DTYPES
from .kernels.quantize import QUANTIZE_DTYPES, quantize_int8, scale_shape
from .runtime import check_device

__all__ = ["Operands", "attention_int8", "quantize", "quantize_operands", "scaled_dot_product_attention",
           "smooth_keys"]

_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QMAX = INT_FORMATS["int8"]
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


# --- checks -------------------------------------------------------------------------------------------


def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")


def _dtype_name(x: torch.Tensor) -> str:
    """torch.float16 -> "float16": the names sim.checks compares (NumPy's spelling)."""
    return str(x.dtype).removeprefix("torch.")


def _raise_if_nonfinite(flags: list, names: tuple) -> None:
    """Raise for the first tensor whose non-finite flag (read back from the kernels) is set."""
    for flag, name in zip(flags, names):
        if flag:
            raise ValueError(f"{name}: expected finite values, found NaN or inf")


def _refuse_grad(tensors: dict, what: str) -> None:
    """RuntimeError where autograd records and an input requires a gradient that ``what`` cannot carry."""
    for name, x in tensors.items():
        if needs_grad(x):
            raise RuntimeError(
                f"{name}: requires grad, but {what} carry no gradient; detach it (or run under torch.no_grad()), or use "
                "intfa.scaled_dot_product_attention, whose backward is the float attention's (straight-through)"
            )


def _check_head_dim(head_dim: int, name: str = "query") -> None:
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(
            f"{name}: the INT8 kernel supports head_dim in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}], got {head_dim}"
        )


def _check_config(config) -> QuantConfig:
    """The config of the quantizing entry points: formats the kernel runs, and scales within one (batch, head)."""
    config = check_config(config)
    check_not_simulated_only(config, "the Triton kernel")
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
    if not config.batch_invariant:
        fields = [f for f in ("q_granularity", "k_granularity", "v_granularity") if getattr(config, f) == "tensor"]
        raise ValueError(
            f"config: {' and '.join(fields)} 'tensor' shares one scale across every sequence and head of the batch, so "
            "a sequence's output would depend on the rest of its batch; the torch API refuses it (use 'head': one "
            "scale per (batch, head); sim.attention keeps 'tensor' for studies)"
        )
    return config


def _check_bool(value, name: str) -> bool:
    return check_bool(value, name)


def _check_no_overflow(q_scale_max: float, k_scale_max: float, v_max: float, *, head_dim: int, seq_k: int,
                       scale: float, config: QuantConfig) -> None:
    """sim.checks.check_no_overflow for INT8 operands: v_max is max(v_scale) (for INT8 V, else max |v|)."""
    check_no_overflow(q_max=q_scale_max, k_max=k_scale_max, v_max=v_max * _QMAX if config.pv_is_int else v_max,
                      head_dim=head_dim, seq_k=seq_k, scale=scale, config=config)


def _validating(validate, tensor: torch.Tensor) -> bool:
    """``validate`` resolved: None means check eagerly where that costs no host synchronisation (CPU)."""
    if validate is None:
        return tensor.device.type == "cpu"
    return check_bool(validate, "validate")


# --- public API ---------------------------------------------------------------------------------------


def quantize(x: torch.Tensor, granularity: str = "token", *, block_size: int | None = None):
    """Symmetric INT8 quantization of ``x``: (codes, scales), identical to :func:`sim.quantize`.

    Parameters
    ----------
    x : (B, H, N, D) float16, bfloat16 or float32 tensor (CUDA, or CPU under TRITON_INTERPRET=1),
        finite, any strides. Int8 codes carry no gradient: an ``x`` that requires one is refused while autograd
        records (RuntimeError).
    granularity : "tensor" | "head" | "token" | "channel" | "block" | "block_channel" (sim's vocabulary).
    block_size : tokens per block, for "block" and "block_channel".

    Returns
    -------
    codes : (B, H, N, D) int8 in [-127, 127], contiguous.
    scales : float32, shaped (1,1,1,1), (B,H,1,1), (B,H,N,1), (B,H,1,D), (B,H,ceil(N/bs),1) or
        (B,H,ceil(N/bs),D).
    """
    _check_tensor(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x: expected 4 dimensions (batch, heads, seq, head_dim), got shape {tuple(x.shape)}")
    if x.dtype not in QUANTIZE_DTYPES:
        raise TypeError(f"x: expected dtype float16, bfloat16 or float32, got {x.dtype}")
    if granularity in PEER_QUANT_GRANULARITIES:
        raise ValueError(f"granularity: {granularity!r} (the peers' per-thread groups, docs/spec.md 7) is simulated "
                         "only; use sim.quantize")
    if granularity not in QUANT_GRANULARITIES:
        raise ValueError(f"granularity: expected one of {list(QUANT_GRANULARITIES)}, got {granularity!r}")
    _refuse_grad({"x": x}, "int8 codes")
    check_device({"x": x})
    nonfinite = torch.zeros(1, dtype=torch.int32, device=x.device)
    codes, scales = quantize_int8(x, granularity, block_size=block_size, nonfinite_flag=nonfinite)
    _raise_if_nonfinite([nonfinite.item()], ("x",))  # the one host synchronisation
    return codes, scales


def quantize_operands(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, config: QuantConfig | None = None,
                      *, validate: bool | None = None) -> Operands:
    """Quantize Q, K, V as ``config`` says, in the layout the kernels read: the torch twin of sim's.

    One public place for K smoothing, V's granularity, the block sizes of block scales (Q: ``config.block_m``,
    K and V: ``config.block_n``), V's sequence-contiguous layout and half-INT8's power-of-two V. The codes and
    scales equal ``sim.quantize_operands(...)``'s (bit for bit).

    Parameters
    ----------
    query : (B, Hq, Nq, D); key, value : (B, Hkv, Nk, D). float16, bfloat16 or float32, one dtype and device
        (CUDA, or CPU under TRITON_INTERPRET=1), any strides. Codes carry no gradient: inputs that require one
        are refused while autograd records (RuntimeError).
    config : :class:`sim.QuantConfig` with qk_format "int8" and no "tensor" granularity (default: the paper's).
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
    _refuse_grad(tensors, "int8 codes")
    check_device(tensors)
    ops, stats = quantize_for_kernels(query, key, value, cfg, validate=_validating(validate, query))
    if stats is not None:
        _raise_if_nonfinite(read_back({"flags": stats["flags"]})["flags"], tuple(tensors))
    return ops


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, config: QuantConfig | None = None,
                                 validate: bool | None = None) -> torch.Tensor:
    """INT8 FlashAttention with the signature and the inference semantics of torch's
    ``torch.nn.functional.scaled_dot_product_attention`` (what it accepts: docs/conformance.md).

    Parameters
    ----------
    query : (..., Hq, Nq, E); key : (..., Hk, Nk, E); value : (..., Hk, Nk, Ev). One dtype: float16, bfloat16,
        float32 or float64 (computed in float32, returned in float64); one device (CUDA, or CPU under
        TRITON_INTERPRET=1); any strides. Leading dimensions broadcast as torch's (a size-1 dimension is shared);
        any size may be 0 (an empty output; no keys: zeros). E and Ev up to 256, padded with zero channels to the
        kernel's width (which changes no number). Hk != Hq when Hk is 1, or with ``enable_gqa`` when Hk divides Hq.
    attn_mask : None, or a tensor broadcasting to (..., Hq, Nq, Nk): bool (True: the key takes part) or float
        (float32 or query's dtype) added to the scaled scores (-inf drops a key; finite values below
        -FLT_MAX / log2(e) act as -FLT_MAX, as torch's finfo.min masks do). A row without a visible key returns 0,
        as torch SDPA.
    dropout_p : must be 0.0 (inference; NotImplementedError otherwise).
    is_causal : top-left causal mask, as torch: query i sees keys 0..i. With attn_mask: both apply.
    scale : softmax scale, default 1/sqrt(E); any finite float (0 and negative too).
    config : :class:`sim.QuantConfig` (default the paper's: Q, K per token, V per (batch, head), P = round(127 p)).
        qk_format must be "int8"; pv_format "int8" (full INT8) or "float16"/"bfloat16" (half-INT8); no "tensor"
        granularity (a sequence's result would depend on the rest of its batch).
    validate : check the values (finite inputs and mask, float64 within float32's range, no float32 overflow, a
        priori from the scales) and raise ValueError / FloatingPointError with sim's messages. None (default): where
        that needs no host synchronisation (CPU tensors). On CUDA the call then never waits for the GPU (it can be
        captured in a CUDA graph), and a non-finite input or an overflow gives a non-finite output, as torch SDPA
        does for NaN input.

    Returns torch SDPA's output shape (..., Hq, Nq, Ev) in query's dtype: ``sim.attention(..., config=config)``
    rounded to that dtype, saturating at its largest finite value (to the bit under the interpreter; within the
    contract's bound compiled). Where autograd records and an input requires a gradient, the output carries the
    straight-through backward of :mod:`intfa.autograd` (float SDPA's gradient at the same inputs).

    Under ``torch.compile`` the call is one custom operator (:mod:`intfa.ops`): traced by its output's shape, run
    (and checked) when the graph runs.
    """
    if torch.compiler.is_compiling():
        return _ops.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                                                 config=config, validate=validate)
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_tensor(x, name)
    if attn_mask is not None and not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor or None, got {type(attn_mask).__name__}")
    check_dropout(dropout_p)
    is_causal = check_bool(is_causal, "is_causal")
    enable_gqa = check_bool(enable_gqa, "enable_gqa")
    check_dtypes(_dtype_name(query), _dtype_name(key), _dtype_name(value),
                 None if attn_mask is None else _dtype_name(attn_mask))
    call = check_sdpa_call(tuple(query.shape), tuple(key.shape), tuple(value.shape),
                           None if attn_mask is None else tuple(attn_mask.shape), enable_gqa=enable_gqa, scale=scale)
    cfg = _check_config(config)
    check_kernel_limits(call)
    tensors = {"query": query, "key": key, "value": value}
    if attn_mask is not None:
        tensors["attn_mask"] = attn_mask
    check_device(tensors)
    checking = _validating(validate, query)

    def int8_forward(q, k, v, mask):
        return sdpa_forward(call, q, k, v, mask, is_causal=is_causal, config=cfg, validate=checking)

    if needs_grad(query, key, value, attn_mask):
        return StraightThroughAttention.apply(query, key, value, attn_mask, SdpaArguments(is_causal, scale, enable_gqa),
                                              int8_forward)
    return int8_forward(query, key, value, attn_mask)


def attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, *, is_causal=False, scale=None,
                   enable_gqa=False, config: QuantConfig | None = None, out_dtype=torch.float16,
                   return_lse=False, validate: bool | None = None, kv_splits: int | None = None,
                   seq_lens: torch.Tensor | None = None, block_table: torch.Tensor | None = None,
                   causal_alignment: str = "top_left", kernel: str = "auto"):
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
    kernel : "auto" (default): the dispatcher's choice of the fastest kernel that runs the call: on Hopper the
        Gluon prefill kernel (:mod:`intfa.kernels.hopper`: TMA, a producer warp, wgmma) wherever it takes the
        operands (full INT8, head dim 64 or 128, Q, K contiguous, V sequence-contiguous with Nk a multiple of 16,
        no block-scaled Q) where it was measured faster (from 4k keys at D=128 non-causal, 16k at D=128 causal and
        D=64 non-causal, 8k at D=64 causal; with V block scales from 4k, 16k at D=128 causal:
        :func:`intfa.kernels.dispatch.default_prefill_launch`), elsewhere the Triton-language
        kernels (prefill, or decode for small Nq and paged caches). Both compute the same bytes on the GPU; the tl
        kernels are the ones the interpreter checks bit for bit against sim. "tl": the Triton-language kernels
        only. "gluon": the Gluon prefill kernel, or a ValueError saying why it cannot run (not a Hopper GPU, paged
        cache, split keys, head dims other than 64 and 128, half-INT8, layouts).

    Returns (B, Hq, Nq, D) out_dtype (and lse). Under ``torch.compile`` the call is one custom operator
    (:mod:`intfa.ops`), checked when the graph runs.
    """
    if torch.compiler.is_compiling():
        return _ops.attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, is_causal=is_causal,
                                   scale=scale, enable_gqa=enable_gqa, config=config, out_dtype=out_dtype,
                                   return_lse=return_lse, validate=validate, kv_splits=kv_splits, seq_lens=seq_lens,
                                   block_table=block_table, causal_alignment=causal_alignment, kernel=kernel)
    config = check_config(config)
    if config.qk_format != "int8" or config.pv_format != "int8":
        raise ValueError(
            f"config: attention_int8 needs qk_format and pv_format 'int8', got {config.qk_format!r} and "
            f"{config.pv_format!r}"
        )
    check_not_simulated_only(config, "attention_int8")
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
    if kernel not in ("auto", "tl", "gluon"):
        raise ValueError(f"kernel: expected 'auto', 'tl' or 'gluon', got {kernel!r}")
    cache = _check_cache_layout(q_codes, k_codes, v_codes, seq_lens, block_table, config)
    # Paged, _check_cache_layout compared the pages of V with K's; contiguous, V's own shape must be K's (the kernels
    # read V at K's sizes: anything smaller would be read out of bounds).
    v_shape = cache.kv_shape if block_table is not None else tuple(v_codes.shape)
    shape = check_attention_shapes(tuple(q_codes.shape), cache.kv_shape, v_shape, enable_gqa=enable_gqa,
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
                             seq_lens=seq_lens, block_table=block_table, causal_alignment=causal_alignment,
                             kernel=kernel)


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
    if config.k_granularity == "head":
        raise NotImplementedError("config: k_granularity 'head' with a paged cache: the decode kernel reads K's scales "
                                  "by page (per key, per block) or per tensor, not per (sequence, head)")
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
