"""The public entry points of the simulator: SDPA-shaped calls, pre-quantized (INT8 cache) calls, traces.

:func:`quantize_operands` prepares Q, K and V as the tile loop consumes them (:class:`sim.loop.Operands`);
:func:`attention`, :func:`attention_trace`, :func:`trace_operands` and :func:`attention_int8` check their
arguments, run the loop of :mod:`sim.loop` once over the keys, or split by :mod:`sim.decode` (``kv_splits``,
per-sequence lengths, bottom-right causal alignment, paged caches), and finish. The algorithm itself is in
:mod:`sim.loop`, in one place.
"""

from __future__ import annotations

import numpy as np

from .checks import (
    SdpaCall,
    check_attention_shapes,
    check_bool,
    check_config,
    check_dtypes,
    check_input_values,
    check_mask_values,
    check_no_overflow,
    check_not_simulated_only,
    check_sdpa_call,
)
from .config import FP8_MAX, INT_FORMATS, QuantConfig, default_scale
from .decode import (check_causal_alignment, check_kv_splits, check_paged_cache, check_seq_lens, gather_pages,
                     keys_per_scale_row, mask_past_lengths, paged_scale_shape, query_offsets, split_loop)
from .loop import Operands, Trace, _finish, _tile_loop
from .quant import power_of_two_scales, quantize, quantize_fp8, round_to_format, scale_shape

_F32 = np.float32


# --- operands --------------------------------------------------------------------------------------


def _input_values(x: np.ndarray, name: str) -> None:
    """The shared value check on one input array (its NaN/inf, and a float64 range beyond float32's)."""
    wide = x if x.dtype == np.float64 else x.astype(_F32)
    check_input_values(name, finite=bool(np.isfinite(wide).all()), abs_max=float(np.abs(wide).max()) if wide.size else 0.0)


def key_means(k) -> np.ndarray:
    """Per-(batch, head, channel) mean of K over its tokens: (B, H, 1, D) float32.

    Summed in float64 and rounded once: for float16 keys and up to 8192 tokens every partial sum is a
    multiple of 2**-24 below 2**53 * 2**-24, so the float64 sum is exact and the same in any order
    (torch and NumPy agree to the bit).
    """
    k64 = np.asarray(k, dtype=np.float64)
    return (k64.sum(axis=2, keepdims=True) / k64.shape[2]).astype(_F32)  # sum, then one IEEE division


def smooth_keys(k) -> np.ndarray:
    """K minus its per-channel mean over tokens, float32 (one subtraction per element).

    Softmax is unchanged: every score of a query row moves by the same q . mean. What changes is the
    quantization: a channel with a large offset shared by all tokens (common in LLM keys) no longer
    dominates each token's scale.
    """
    return np.asarray(k, dtype=_F32) - key_means(k)


def quantize_operands(q, k, v, config: QuantConfig) -> Operands:
    """Quantize (or round) Q, K, V as ``config`` says; the kernels' quantizer produces the same."""
    cfg = config
    if cfg.k_smoothing:
        k = smooth_keys(k)
    v_mean = None
    if cfg.v_smoothing:  # V minus its per-channel mean; the finish adds it back (spec 7.1)
        v_mean = key_means(v)
        v = np.asarray(v, dtype=_F32) - v_mean
    if cfg.qk_is_int:
        bits = 8 if cfg.qk_format == "int8" else 4
        q_codes, q_scale = quantize(q, cfg.q_quant_granularity, block_size=cfg.q_quant_block, bits=bits)
        k_codes, k_scale = quantize(k, cfg.k_quant_granularity, block_size=cfg.block_n, bits=bits)
        q_op, k_op = q_codes.astype(_F32), k_codes.astype(_F32)
    elif cfg.qk_scaled:  # scaled FP8 (the peers' recipes)
        q_op, q_scale = quantize_fp8(q, cfg.q_quant_granularity, block_size=cfg.q_quant_block, fmt=cfg.qk_format)
        k_op, k_scale = quantize_fp8(k, cfg.k_quant_granularity, block_size=cfg.block_n, fmt=cfg.qk_format)
    else:
        q_op, k_op = round_to_format(q, cfg.qk_format), round_to_format(k, cfg.qk_format)
        q_scale = k_scale = None
    if cfg.pv_is_int:
        v_codes, v_scale = quantize(v, cfg.v_quant_granularity, block_size=cfg.block_n)
        v_op = v_codes.astype(_F32)
    elif cfg.pv_scaled:
        v_op, v_scale = quantize_fp8(v, cfg.v_quant_granularity, block_size=cfg.block_n, fmt=cfg.pv_format)
    elif cfg.v_power_of_two:  # half-INT8: V / 2**(e-1) per (batch, head), exact, then rounded to 16 bits
        v_scale, v_inverse = power_of_two_scales(v)
        v_op = round_to_format(np.asarray(v, _F32) * v_inverse, cfg.pv_format)
    else:
        v_op, v_scale = round_to_format(v, cfg.pv_format), None
    return Operands(q_op, k_op, v_op, q_scale, k_scale, v_scale, v_mean)


def _run(ops: Operands, cfg: QuantConfig, *, is_causal: bool, scale: float, trace: bool, kv_splits: int = 1,
         seq_lens=None, causal_alignment: str = "top_left", mask=None):
    """The whole forward pass: (out, lse, steps, parts).

    One pass over all key tiles (``parts`` None), or, with ``kv_splits`` > 1 or per-sequence lengths, the split
    loop of :mod:`sim.decode` (``steps`` empty; the same numbers when kv_splits is 1). ``mask``: an attn_mask as
    :func:`_tile_loop` takes it (one pass only: the split loop, like the decode kernel, takes none).
    """
    if kv_splits == 1 and seq_lens is None and not (is_causal and causal_alignment == "bottom_right"):
        state, steps = _tile_loop(ops, cfg, is_causal=is_causal, scale=scale, trace=trace, mask=mask)
        parts = None
    else:
        if mask is not None:
            raise NotImplementedError("attn_mask: key splits (kv_splits > 1), per-sequence lengths and bottom-right "
                                      "alignment run the split loop of the decode kernel, which takes no attn_mask")
        b, nq = ops.q.shape[0], ops.q.shape[2]
        seq_lens = np.full(b, ops.k.shape[2], np.int64) if seq_lens is None else np.asarray(seq_lens, np.int64)
        state, parts = split_loop(ops, cfg, is_causal=is_causal, scale=scale, trace=trace, kv_splits=kv_splits,
                                  seq_lens=seq_lens, q_start=query_offsets(seq_lens, nq, causal_alignment))
        steps = [] if trace else None
    out, lse = _finish(state, ops, cfg)
    return out, lse, steps, parts


# --- public entry points ----------------------------------------------------------------------------


def _check_call(q, k, v, attn_mask, is_causal, scale, enable_gqa, config) -> tuple[SdpaCall, QuantConfig]:
    """Every a-priori check of an SDPA-style call, in the torch API's order (sim.checks holds the rules)."""
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if attn_mask is not None and not isinstance(attn_mask, np.ndarray):
        raise TypeError(f"attn_mask: expected a numpy array or None, got {type(attn_mask).__name__}")
    check_bool(is_causal, "is_causal")
    enable_gqa = check_bool(enable_gqa, "enable_gqa")
    check_dtypes(q.dtype.name, k.dtype.name, v.dtype.name, None if attn_mask is None else attn_mask.dtype.name)
    call = check_sdpa_call(q.shape, k.shape, v.shape, None if attn_mask is None else attn_mask.shape,
                           enable_gqa=enable_gqa, scale=scale)
    config = check_config(config)
    if config.qk_is_int and call.head_dim > 1024:
        raise ValueError(f"query: integer formats support head_dim <= 1024, got {call.head_dim}")
    for name, x in (("query", q), ("key", k), ("value", v)):
        _input_values(x, name)
    if attn_mask is not None and attn_mask.dtype != np.bool_:
        check_mask_values(nan_or_pos_inf=bool(np.any(np.isnan(attn_mask) | (attn_mask == np.inf))))
    return call, config


def _as_4d(call: SdpaCall, x: np.ndarray, which: str) -> np.ndarray:
    """``x`` broadcast to the call's shape, its heads mapped and its leading dimensions merged: the (B, H, N, D) layout."""
    x = np.broadcast_to(x, call.broadcast_shape(which))
    repeats = call.head_repeats(which)
    if repeats > 1:  # key and value with different head counts: each mapped onto heads_kv (head h -> h // repeats)
        x = np.repeat(x, repeats, axis=-3)
    return x.reshape(call.shape4(which))


def _mask_4d(call: SdpaCall, attn_mask) -> np.ndarray | None:
    """attn_mask as the tile loop takes it: bool, or float32 (rounded once from float64), 4-D broadcastable."""
    if attn_mask is None:
        return None
    if attn_mask.dtype != np.bool_:
        if attn_mask.dtype == np.float64:
            # A finite float64 below float32's range (a float64 model's finfo.min mask) becomes float32's lowest, not
            # -inf: torch averages a row of equal finite values uniformly, where -inf would mask the row. Values
            # above float32's range were refused by the checks; -inf and NaN pass unchanged.
            finite = np.isfinite(attn_mask)
            attn_mask = np.where(finite, np.maximum(attn_mask, -float(np.finfo(_F32).max)), attn_mask)
        attn_mask = attn_mask.astype(_F32)
    full = call.broadcast_shape("attn_mask")
    if len(full) == 4:
        return np.broadcast_to(attn_mask, full)  # no copy: the loop broadcasts
    return np.broadcast_to(attn_mask, full).reshape(call.shape4("attn_mask"))


def _check_operands_overflow(ops: Operands, cfg: QuantConfig, call: SdpaCall, mask) -> None:
    """sim.checks.check_no_overflow on the quantized operands: the maxima the torch API reads back."""
    if cfg.qk_scaled:
        q_max, k_max = float(ops.q_scale.max()), float(ops.k_scale.max())
    else:
        q_max, k_max = float(np.abs(ops.q).max()), float(np.abs(ops.k).max())
    if cfg.pv_scaled:
        v_max = float(ops.v_scale.max()) * (INT_FORMATS["int8"] if cfg.pv_is_int else FP8_MAX[cfg.pv_format])
    elif cfg.v_power_of_two:
        v_max = float(np.abs(ops.v).max()) * float(ops.v_scale.max())
    else:
        v_max = float(np.abs(ops.v).max())
    mask_max = float(mask.max()) if mask is not None and mask.dtype != np.bool_ and mask.size else float("-inf")
    check_no_overflow(q_max=q_max, k_max=k_max, v_max=v_max, head_dim=max(call.head_dim, 1), seq_k=call.seq_k,
                      scale=call.scale, config=cfg, mask_max=mask_max)


def _forward(call: SdpaCall, q, k, v, attn_mask, config: QuantConfig, *, is_causal: bool, trace: bool,
             kv_splits: int):
    """Quantize and run the tile loop on a checked, non-empty call: (ops, out, lse, steps, parts), 4-D layout."""
    q4, k4, v4 = (_as_4d(call, x, name) for x, name in ((q, "query"), (k, "key"), (v, "value")))
    if call.head_dim == 0:  # no channel: every score is 0; one zero channel computes exactly that
        q4, k4 = (np.zeros(x.shape[:3] + (1,), x.dtype) for x in (q4, k4))
    mask = _mask_4d(call, attn_mask)
    ops = quantize_operands(q4, k4, v4, config)
    _check_operands_overflow(ops, config, call, mask)
    out, lse, steps, parts = _run(ops, config, is_causal=is_causal, scale=call.scale, trace=trace,
                                  kv_splits=kv_splits, mask=mask)
    return ops, out, lse, steps, parts


def attention(q, k, v, *, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, config=None,
              return_lse=False, kv_splits=1):
    """INT8 FlashAttention forward (or any configured format), as the kernels compute it, on what torch SDPA takes.

    Parameters
    ----------
    q : (..., Hq, Nq, E), k : (..., Hk, Nk, E), v : (..., Hk, Nk, Ev): float16, bfloat16, float32 or float64 arrays
        of one dtype (float64 is computed in float32), at least 2 dimensions each. Leading dimensions broadcast as
        torch's; any size may be 0 (an empty output; no keys: zeros). Hk may differ from Hq only when it is 1, or
        with ``enable_gqa`` when it divides Hq.
    attn_mask : None, or an array broadcasting to (..., Hq, Nq, Nk): bool (True: the key takes part) or float
        (float32 or q's dtype; added to the scaled scores, -inf masks). A row without any visible key returns 0.
    is_causal : top-left aligned causal mask, as torch SDPA: query i sees keys 0..i (with attn_mask: both).
    scale : softmax scale, default 1/sqrt(E); any finite float.
    config : :class:`sim.QuantConfig`, default the paper's configuration.
    kv_splits : split each sequence's key tiles into this many contiguous splits, each its own online softmax,
        then combine (docs/spec.md 3.6: the numbers of the decode kernel run with that many splits). 1: one pass.

    Returns torch SDPA's output shape (..., Hq, Nq, Ev) float32; with ``return_lse`` also the natural
    log-sum-exp of the scaled (masked) scores, (..., Hq, Nq) float32 (-inf for a row without a visible key).
    Raises what the torch API raises for the same input (sim.checks).
    """
    kv_splits = check_kv_splits(kv_splits)
    call, config = _check_call(q, k, v, attn_mask, is_causal, scale, enable_gqa, config)
    if call.empty or call.seq_k == 0:
        out, lse = np.zeros(call.out_shape, _F32), np.full(call.out_shape[:-1], -np.inf, _F32)
    else:
        _, out, lse, _, _ = _forward(call, q, k, v, attn_mask, config, is_causal=bool(is_causal), trace=False,
                                     kv_splits=kv_splits)
        out, lse = out.reshape(call.out_shape), lse.reshape(call.out_shape[:-1])
    return (out, lse) if return_lse else out


def attention_trace(q, k, v, *, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, config=None,
                    kv_splits=1) -> Trace:
    """:func:`attention` that also keeps every tile's intermediates (small sizes: it stores them all).

    Takes what :func:`attention` takes, with at least one key and a non-empty output; the trace is in the kernels'
    (B, H, N, D) layout (leading dimensions merged).
    """
    kv_splits = check_kv_splits(kv_splits)
    call, config = _check_call(q, k, v, attn_mask, is_causal, scale, enable_gqa, config)
    if call.empty or call.seq_k == 0:
        raise ValueError(f"query: attention_trace needs at least one key and a non-empty output, got {call.out_shape}"
                         f" with {call.seq_k} keys")
    ops, out, lse, steps, parts = _forward(call, q, k, v, attn_mask, config, is_causal=bool(is_causal), trace=True,
                                           kv_splits=kv_splits)
    return Trace(config, call.scale, ops, steps, out, lse, parts)


def trace_operands(ops: Operands, *, config=None, is_causal=False, scale=None, kv_splits=1, seq_lens=None,
                   causal_alignment="top_left", attn_mask=None) -> Trace:
    """The tile loop on operands already prepared (:func:`quantize_operands`, or an INT8 cache), traced.

    ``ops`` as :class:`Operands` (codes held in float32 arrays; a paged cache gathered with
    :func:`sim.gather_pages`); ``scale`` defaults to 1/sqrt(D); ``kv_splits``, ``seq_lens`` and
    ``causal_alignment`` as :func:`attention_int8`; ``attn_mask`` (B or 1, Hq or 1, Nq, Nk), bool or float32, as
    :func:`attention` takes it after broadcasting (one pass only). What :func:`attention_trace` returns, without
    quantizing: the kernels' own traces compare against this.
    """
    config = check_config(config)
    if not isinstance(ops, Operands):
        raise TypeError(f"ops: expected a sim.Operands, got {type(ops).__name__}")
    if not isinstance(is_causal, (bool, np.bool_)):
        raise TypeError(f"is_causal: expected a bool, got {type(is_causal).__name__}")
    kv_splits = check_kv_splits(kv_splits)
    causal_alignment = check_causal_alignment(causal_alignment)
    if seq_lens is not None:
        seq_lens = check_seq_lens(seq_lens, batch=ops.q.shape[0], capacity=ops.k.shape[2],
                                  capacity_why="the keys' sequence dimension")
    scale = default_scale(ops.q.shape[-1]) if scale is None else scale
    out, lse, steps, parts = _run(ops, config, is_causal=bool(is_causal), scale=scale, trace=True,
                                  kv_splits=kv_splits, seq_lens=seq_lens, causal_alignment=causal_alignment,
                                  mask=attn_mask)
    return Trace(config, scale, ops, steps, out, lse, parts)


def attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, *, is_causal=False, scale=None,
                   enable_gqa=False, config=None, return_lse=False, kv_splits=1, seq_lens=None, block_table=None,
                   causal_alignment="top_left"):
    """Attention over pre-quantized INT8 operands (an INT8 KV cache), mirroring ``intfa.attention_int8``.

    Codes are int8 arrays; scales are float32 in :func:`sim.quantize`'s shapes for the granularities ``config``
    names (Q blocks of ``block_m`` rows, K and V blocks of ``block_n``). ``config.qk_format`` and
    ``config.pv_format`` must be "int8".

    Contiguous cache: k_codes and v_codes (B, Hkv, Nk, D), SDPA layout.
    Paged cache (``block_table`` given, docs/spec.md 3.8): k_codes and v_codes (num_pages, Hkv, page_size, D) with
    page_size a multiple of ``config.block_n``; block_table (B, max_pages) integers, row b the pages of sequence b
    in key order; ``seq_lens`` required. Per-key and per-tile scales are paged like the codes, per-sequence ones
    indexed by sequence (:func:`sim.paged_scale_shape`). Only the pages and keys below each length are read.

    kv_splits : each sequence's key tiles in this many splits, combined (spec 3.6). 1 (default): one pass.
    seq_lens : (B,) integers, the keys of each sequence (default: all Nk); keys at or past it are masked.
    causal_alignment : with ``is_causal``, where query i of sequence b sits among the keys: "top_left" (torch SDPA)
        at position i, "bottom_right" (decoding, chunked prefill) at seq_lens[b] - Nq + i. A row that sees no key
        gets out 0 and lse -inf.
    """
    config = check_config(config)
    if config.qk_format != "int8" or config.pv_format != "int8":
        raise ValueError(f"config: attention_int8 needs qk_format and pv_format 'int8', got {config}")
    check_not_simulated_only(config, "attention_int8")
    check_bool(is_causal, "is_causal")
    enable_gqa = check_bool(enable_gqa, "enable_gqa")
    codes = {"q_codes": q_codes, "k_codes": k_codes, "v_codes": v_codes}
    for name, x in codes.items():
        if not isinstance(x, np.ndarray) or x.dtype != np.int8:
            raise TypeError(f"{name}: expected an int8 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
    kv_splits = check_kv_splits(kv_splits)
    causal_alignment = check_causal_alignment(causal_alignment)
    scales = {"q_scale": q_scale, "k_scale": k_scale, "v_scale": v_scale}
    for name, x in scales.items():
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise TypeError(f"{name}: expected a float32 numpy array, got {getattr(x, 'dtype', type(x).__name__)}")
    # Which scales are groups of keys (paged like the codes, masked past each length), and their keys per row.
    keys_per_row = {"k_scale": keys_per_scale_row(config.k_granularity, config.block_n),
                    "v_scale": keys_per_scale_row(config.v_quant_granularity, config.block_n)}

    if block_table is not None:
        if seq_lens is None:
            raise ValueError("seq_lens: a paged cache (block_table given) needs each sequence's length, got None")
        if k_codes.ndim != 4 or k_codes.shape != v_codes.shape:
            raise ValueError(f"v_codes: expected pages of k_codes' shape {k_codes.shape} "
                             f"(num_pages, heads, page_size, head_dim), got {v_codes.shape}")
        num_pages, hkv, page_size, d = k_codes.shape
        if page_size % config.block_n:
            raise ValueError(f"k_codes: expected a page size that is a multiple of config.block_n={config.block_n}, "
                             f"got {page_size}")
        if not isinstance(block_table, np.ndarray) or block_table.ndim != 2:
            raise TypeError(f"block_table: expected a 2-d integer numpy array, got {type(block_table).__name__}")
        capacity = block_table.shape[1] * page_size
        shape = check_attention_shapes(q_codes.shape, (q_codes.shape[0], hkv, capacity, d),
                                       (q_codes.shape[0], hkv, capacity, d), enable_gqa=enable_gqa, scale=scale)
        table, seq_lens = check_paged_cache(block_table, seq_lens, batch=shape.batch, num_pages=num_pages,
                                            page_size=page_size)
        expected = {"k_scale": paged_scale_shape(config.k_granularity, num_pages=num_pages, heads=hkv,
                                                 page_size=page_size, head_dim=d, batch=shape.batch,
                                                 block_n=config.block_n),
                    "v_scale": paged_scale_shape(config.v_quant_granularity, num_pages=num_pages, heads=hkv,
                                                 page_size=page_size, head_dim=d, batch=shape.batch,
                                                 block_n=config.block_n)}
    else:
        shape = check_attention_shapes(q_codes.shape, k_codes.shape, v_codes.shape, enable_gqa=enable_gqa, scale=scale)
        if seq_lens is not None:
            seq_lens = check_seq_lens(seq_lens, batch=shape.batch, capacity=shape.seq_k,
                                      capacity_why="the keys' sequence dimension")
        expected = {"k_scale": scale_shape(k_codes.shape, config.k_granularity, config.block_n),
                    "v_scale": scale_shape(v_codes.shape, config.v_quant_granularity, config.block_n)}
    b, hq, hkv, nq, nk, d = shape[:6]
    if d > 1024:
        raise ValueError(f"q_codes: integer formats support head_dim <= 1024, got {d}")
    expected["q_scale"] = scale_shape((b, hq, nq, d), config.q_granularity, config.block_m)
    for name, x in scales.items():
        if x.shape != expected[name]:
            raise ValueError(f"{name}: expected shape {expected[name]} for the configured granularity, got {x.shape}")

    # The keys the loop reads: pages gathered, and (per-sequence lengths) what lies past each end set to what the
    # kernel's masked loads read there (codes 0, scales 1), so that only keys in use are checked below.
    if block_table is not None:
        codes["k_codes"], codes["v_codes"] = (gather_pages(codes[n], table, seq_lens) for n in ("k_codes", "v_codes"))
        for name, rows in keys_per_row.items():
            if rows is not None:
                scales[name] = gather_pages(scales[name], table, seq_lens, keys_per_row=rows, fill=_F32(1.0))
    elif seq_lens is not None:
        codes["k_codes"], codes["v_codes"] = (mask_past_lengths(codes[n], seq_lens) for n in ("k_codes", "v_codes"))
        for name, rows in keys_per_row.items():
            if rows is not None:
                scales[name] = mask_past_lengths(scales[name], seq_lens, keys_per_row=rows, fill=_F32(1.0))
    qmax = INT_FORMATS["int8"]
    for name, x in codes.items():
        if x.size and int(np.abs(x.astype(np.int16)).max()) > qmax:
            raise ValueError(f"{name}: expected codes in [-{qmax}, {qmax}], found -128")
    for name, x in scales.items():
        if not (np.isfinite(x).all() and (x >= 0).all()):
            raise ValueError(f"{name}: expected finite non-negative scales")
    ops = Operands(*(x.astype(_F32) for x in codes.values()), *scales.values())
    check_no_overflow(q_max=float(ops.q_scale.max(initial=0.0)), k_max=float(ops.k_scale.max(initial=0.0)),
                      v_max=float(ops.v_scale.max(initial=0.0)) * qmax, head_dim=d, seq_k=nk, scale=shape.scale,
                      config=config)
    out, lse, _, _ = _run(ops, config, is_causal=bool(is_causal), scale=shape.scale, trace=False, kv_splits=kv_splits,
                          seq_lens=seq_lens, causal_alignment=causal_alignment)
    return (out, lse) if return_lse else out
