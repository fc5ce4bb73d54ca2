"""The drop-in's front end: what torch SDPA accepts, turned into the kernels' (B, H, N, D) problem and back.

:func:`intfa.scaled_dot_product_attention` checks its arguments with :mod:`sim.checks` (the rules sim shares) and
hands the call here. :func:`sdpa_forward` then

1. returns torch SDPA's answer for calls with nothing to compute: an empty output, or zeros when there are no keys;
2. computes float64 inputs in float32 (the kernels' arithmetic) and returns float64;
3. broadcasts the leading dimensions of query, key and value (stride-0 views) and merges them into one batch
   dimension (a copy only where the strides do not merge);
4. pads head dims below the kernel's 32, and a value head dim different from the query's, with zero channels up
   to one common width. Zero channels change nothing: they add 0 to every Q8 K8^T, leave every per-token, per-head,
   per-block and per-tensor max (hence every scale) as it was, give the padded V channels their own scales, and
   are cut from the output; the default softmax scale uses the original head dim;
5. quantizes (:func:`quantize_for_kernels`), validates where asked (one host synchronisation), and runs the kernel
   with the attn_mask as a stride-0 broadcast view (bool, or float32: exact for float16/bfloat16 masks).

Everything here follows sim.attention's front end (sim/attention.py), so that both compute the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from sim.checks import SdpaCall, check_input_values, check_mask_values, check_no_overflow
from sim.config import AMAX_FLOOR, INT_FORMATS, QuantConfig

from .kernels import attention_forward
from .kernels.prefill import HALF_PV_DTYPES, MAX_HEAD_DIM, MIN_HEAD_DIM
from .kernels.quantize import quantize_int8

_QMAX = INT_FORMATS["int8"]


class Operands(NamedTuple):
    """Q, K, V as the attention kernels consume them: the torch twin of :class:`sim.Operands`.

    q_codes : (B, Hq, Nq, D) int8; k_codes : (B, Hkv, Nk, D) int8 (of the smoothed K with ``k_smoothing``).
    v : (B, Hkv, Nk, D): int8 codes stored sequence-contiguous (``v.stride(2) == 1``, the K-major operand of
        Hopper's 8-bit P @ V product) for full INT8; for half-INT8 V divided by a power of two per (batch, head)
        and rounded to float16/bfloat16.
    q_scale, k_scale, v_scale : float32 in :func:`sim.quantize`'s shapes for the config's granularities; for
        half-INT8 v_scale is the (B, Hkv, 1, 1) power of two (:attr:`sim.QuantConfig.v_power_of_two`).

    ``attention_int8(*ops, config=config)`` runs attention on them (full INT8).
    """

    q_codes: torch.Tensor
    k_codes: torch.Tensor
    v: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor | None


def check_dropout(dropout_p) -> None:
    """dropout_p must be 0 (a float or int): TypeError or NotImplementedError naming it. Shared by the API and its
    custom operator (which has no dropout argument), so that both refuse it alike, compiled or not."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p: expected a float, got {type(dropout_p).__name__}")
    if dropout_p != 0.0:
        raise NotImplementedError(f"dropout_p: the INT8 kernel implements no dropout (inference only), got {dropout_p}")


def kernel_head_dim(call: SdpaCall) -> int:
    """The one head dim the kernels run a call at: query's and value's, padded to at least the kernel's minimum."""
    return max(MIN_HEAD_DIM, call.head_dim, call.head_dim_v)


def check_kernel_limits(call: SdpaCall) -> None:
    """NotImplementedError for what torch SDPA computes and the INT8 kernel does not: head dims above 256."""
    if max(call.head_dim, call.head_dim_v) > MAX_HEAD_DIM:
        raise NotImplementedError(
            f"head_dim: the INT8 kernel supports head dims up to {MAX_HEAD_DIM}, got query/key {call.head_dim} and "
            f"value {call.head_dim_v} (torch SDPA computes larger ones)"
        )


def smooth_keys(key: torch.Tensor) -> torch.Tensor:
    """:func:`sim.smooth_keys` on tensors: K minus its per-(batch, head, channel) mean over the keys.

    key : (B, H, N, D) float tensor. Returns float32, same shape. The mean is a float64 sum, one division
    and one rounding to float32, as sim's: exact in any order for float16 keys up to 8192 tokens, so
    both agree to the bit. Softmax is unchanged (every score of a row moves by the same q . mean).
    """
    return key.float() - (key.sum(dim=2, keepdim=True, dtype=torch.float64) / key.shape[2]).float()


def _powers_of_two(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent as float32, built from the float64 bit pattern: exact on every device (no pow() involved)."""
    return ((exponent.to(torch.int64) + 1023) << 52).view(torch.float64).float()


def power_of_two_scales(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sim.power_of_two_scales` on tensors: (scale, inverse), (B, H, 1, 1) float32, exact powers of two."""
    amax = value.abs().amax(dim=(2, 3), keepdim=True).float().clamp_min(AMAX_FLOOR)
    _, exponent = torch.frexp(amax)
    return _powers_of_two(exponent - 1), _powers_of_two(1 - exponent)


def quantize_for_kernels(query, key, value, cfg: QuantConfig, *, validate: bool):
    """(Operands, device_stats): Q, K, V quantized as ``cfg`` says; device_stats None unless validating.

    Validating, finiteness is checked inside the quantize kernels (a flag per tensor), and ``device_stats`` holds
    the flags and the maxima the a-priori overflow check needs, as 0-d device tensors for the caller to read back
    in its one host synchronisation: "flags" (3,), "q_max", "k_max", "v_max" (max |V| as the loop multiplies it).
    Not validating, nothing is read back: a non-finite input then gives a non-finite scale, so a non-finite output
    (as torch SDPA gives NaN for NaN input), never finite garbage.
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
    else:  # half-INT8: V / 2**(e-1) per (batch, head) (exact), rounded to nearest even in 16 bits, as sim
        v_scale, v_inverse = power_of_two_scales(value)
        v_op = (value.float() * v_inverse).to(HALF_PV_DTYPES[cfg.pv_format])
    ops = Operands(q_codes, k_codes, v_op, q_scale, k_scale, v_scale)
    if not validate:
        return ops, None
    if cfg.pv_is_int:
        v_max = v_scale.amax().double() * _QMAX
    else:  # NaN or inf in value survive the exact scaling: v_op holds one exactly when value does
        v_abs_max = v_op.abs().amax()
        flags[2] = (~torch.isfinite(v_abs_max)).to(torch.int32)
        v_max = v_abs_max.double() * v_scale.amax().double()
    stats = dict(flags=flags, q_max=q_scale.amax(), k_max=k_scale.amax(), v_max=v_max)
    return ops, stats


def read_back(tensors: dict) -> dict:
    """The values of several device tensors in one host synchronisation: name -> float (or list of floats)."""
    flat, sizes = [], {}
    for name, x in tensors.items():
        x = x.reshape(-1).double()
        flat.append(x)
        sizes[name] = x.numel()
    values = torch.cat(flat).tolist()
    out, i = {}, 0
    for name, n in sizes.items():
        out[name] = values[i] if n == 1 else values[i:i + n]
        i += n
    return out


def _as_4d(call: SdpaCall, x: torch.Tensor, which: str) -> torch.Tensor:
    """``x`` broadcast to the call's shape (stride-0 views), its heads mapped (a key and a value with different head
    counts are each repeated onto heads_kv: a copy) and its leading dimensions merged: (B, H, N, D)."""
    x = x.expand(call.broadcast_shape(which))
    repeats = call.head_repeats(which)
    if repeats > 1:
        x = x.repeat_interleave(repeats, dim=-3)
    return x.reshape(call.shape4(which))


def _padded(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` with zero channels appended up to ``width`` (itself when already that wide)."""
    return x if x.shape[-1] == width else F.pad(x, (0, width - x.shape[-1]))


def kernel_mask(call: SdpaCall, attn_mask: torch.Tensor | None) -> torch.Tensor | None:
    """attn_mask as the kernel reads it: (B, Hq, Nq, Nk) bool or float32, 0 strides along broadcast dimensions."""
    if attn_mask is None:
        return None
    if attn_mask.dtype != torch.bool:
        if attn_mask.dtype == torch.float64:  # as sim: finite values below float32's range become its lowest
            lowest = torch.finfo(torch.float32).min
            attn_mask = torch.where(torch.isfinite(attn_mask), attn_mask.clamp(min=lowest), attn_mask)
        attn_mask = attn_mask.to(torch.float32)  # exact from float16/bfloat16; float64 rounds once, as sim
    return _as_4d(call, attn_mask, "attn_mask")


def _check_values(values: dict, call: SdpaCall, cfg: QuantConfig, names_float64: bool) -> None:
    """Raise for what the read-back values show, in sim's order: inputs, mask, overflow (sim.checks' messages)."""
    for i, name in enumerate(("query", "key", "value")):
        if names_float64:  # the float64 maxima decide: a finite 1e300 is out of float32's range, not NaN
            abs_max = values[f"{name}_abs_max"]
            check_input_values(name, finite=abs_max < float("inf"), abs_max=abs_max)
        else:
            check_input_values(name, finite=not values["flags"][i], abs_max=0.0)
    mask_max = values.get("mask_max", float("-inf"))
    if "mask_max" in values:
        check_mask_values(nan_or_pos_inf=not mask_max < float("inf"))
    check_no_overflow(q_max=values["q_max"], k_max=values["k_max"], v_max=values["v_max"],
                      head_dim=max(call.head_dim, 1), seq_k=call.seq_k, scale=call.scale, config=cfg,
                      mask_max=mask_max)


def sdpa_forward(call: SdpaCall, query, key, value, attn_mask, *, is_causal: bool, config: QuantConfig,
                 validate: bool) -> torch.Tensor:
    """The INT8 forward of a checked SDPA call (module docstring). Returns call.out_shape in query's dtype."""
    out_dtype = query.dtype
    if call.empty or call.seq_k == 0:  # torch SDPA: nothing to compute, or zeros without keys
        return torch.zeros(call.out_shape, dtype=out_dtype, device=query.device)
    pending = {}
    is_float64 = out_dtype == torch.float64
    if validate and is_float64:
        for name, x in (("query", query), ("key", key), ("value", value)):
            pending[f"{name}_abs_max"] = x.abs().amax()
    if is_float64:  # computed in float32, as sim: values beyond its range become inf (refused when validating)
        query, key, value = (x.float() for x in (query, key, value))
    width = kernel_head_dim(call)
    q4, k4 = (_padded(_as_4d(call, x, name), width) for x, name in ((query, "query"), (key, "key")))
    v4 = _padded(_as_4d(call, value, "value"), width)
    mask4 = kernel_mask(call, attn_mask)
    ops, stats = quantize_for_kernels(q4, k4, v4, config, validate=validate)
    if validate:
        pending.update(stats)
        if mask4 is not None and mask4.dtype == torch.float32:
            pending["mask_max"] = attn_mask.to(torch.float32).amax()  # NaN propagates; the unbroadcast mask
        _check_values(read_back(pending), call, config, is_float64)
    kernel_dtype = torch.float32 if is_float64 else out_dtype
    out = attention_forward(*ops, config=config, scale=call.scale, is_causal=is_causal, out_dtype=kernel_dtype,
                            attn_mask=mask4)
    if width != call.head_dim_v:
        out = out[..., : call.head_dim_v].contiguous()  # contiguous, as the custom operator's fake output says
    return out.reshape(call.out_shape).to(out_dtype)
