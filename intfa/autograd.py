"""The straight-through backward of :func:`intfa.scaled_dot_product_attention`.

The forward pass is the INT8 kernel; the backward pass is the gradient of float attention at the same inputs,
computed by torch SDPA's own backward (``torch.nn.functional.scaled_dot_product_attention`` recomputed in the
inputs' dtype under ``torch.enable_grad``, then ``torch.autograd.grad``). Quantization is treated as the identity
on the way back: the straight-through estimator of quantization-aware training. It is what fine-tuning a model
that will run INT8 attention needs: the loss sees the INT8 output, the parameters move along float attention's
gradient.

What this is not: the exact derivative of the INT8 forward (rounding is piecewise constant: its derivative is zero
almost everywhere), nor a fused backward kernel (SDPA's backward picks its own backend: flash, memory-efficient or
math on CUDA, math or flash on CPU). Gradients reach query, key, value and a floating attn_mask that requires them.

Used by :func:`intfa.scaled_dot_product_attention` whenever autograd records (``torch.is_grad_enabled()``) and an
input requires a gradient, so its output always carries a ``grad_fn`` then: never a silently detached result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


@dataclasses.dataclass(frozen=True)
class SdpaArguments:
    """The non-tensor arguments of one SDPA call, as the user gave them (scale None keeps SDPA's default)."""

    is_causal: bool
    scale: float | None
    enable_gqa: bool


def needs_grad(*tensors) -> bool:
    """True when autograd is recording and one of ``tensors`` (None allowed) requires a gradient."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def float_attention(query, key, value, attn_mask, args: SdpaArguments) -> torch.Tensor:
    """torch SDPA at the same inputs: the function whose gradient the backward pass returns.

    torch documents is_causal together with attn_mask as an error (its math backend raises, its CPU flash backend
    applies both); the drop-in applies both, so here they are combined into one mask first: a top-left causal
    mask, AND-ed with a boolean mask or -inf added to a float one.
    """
    if args.is_causal and attn_mask is not None:
        n_q, n_k = query.shape[-2], key.shape[-2]
        causal = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril()
        if attn_mask.dtype == torch.bool:
            attn_mask = attn_mask & causal
        else:
            attn_mask = attn_mask.masked_fill(~causal, float("-inf"))
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=args.scale,
                                              enable_gqa=args.enable_gqa)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, is_causal=args.is_causal,
                                          scale=args.scale, enable_gqa=args.enable_gqa)


class StraightThroughAttention(torch.autograd.Function):
    """INT8 forward (``forward_fn``), torch SDPA's float gradient backward (module docstring)."""

    @staticmethod
    def forward(ctx, query, key, value, attn_mask, args: SdpaArguments, forward_fn: Callable):
        ctx.save_for_backward(query, key, value, attn_mask)
        ctx.args = args
        with torch.no_grad():
            return forward_fn(query, key, value, attn_mask)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        query, key, value, attn_mask = ctx.saved_tensors
        wants = ctx.needs_input_grad[:4]
        with torch.enable_grad():
            inputs = [None if x is None else x.detach().requires_grad_(want) for x, want in
                      zip((query, key, value, attn_mask), wants)]
            out = float_attention(*inputs, ctx.args)
            targets = [x for x, want in zip(inputs, wants) if want]
            grads = iter(torch.autograd.grad(out, targets, grad_out))
        return tuple(next(grads) if want else None for want in wants) + (None, None)
