"""The kernels as ``torch.library`` custom ops: what ``torch.compile`` and CUDA graphs see.

Two operators, each the public function it is named after run as one opaque node of a traced graph:

- ``torch.ops.intfa.scaled_dot_product_attention(query, key, value, attn_mask, is_causal, scale, enable_gqa,
  config, validate) -> Tensor``: :func:`intfa.scaled_dot_product_attention` (dropout_p is always 0);
- ``torch.ops.intfa.attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, is_causal, scale,
  enable_gqa, config, out_dtype, return_lse, validate, kv_splits, seq_lens, block_table, causal_alignment,
  kernel) -> (Tensor, Tensor)``: :func:`intfa.attention_int8`; the second tensor is the lse, or an empty (0,) float32
  tensor without ``return_lse``.

``config`` is a :class:`sim.QuantConfig` written as a string (:func:`config_key`: JSON of its fields; "" is the
default), since an operator's schema holds no Python objects. Make the QuantConfig outside the compiled region (a
module's attribute, a global): its string is computed with ``json`` when it is constructed, which dynamo does not
trace (torch 2.11 refused ``config.replace(...)`` inside a compiled function with fullgraph=True). Each operator has a fake (meta) implementation that
gives the output's shape and dtype without running a kernel, so that a model calling it traces under
``torch.compile(fullgraph=True)``; the SDPA operator's autograd formula is the straight-through backward of
:mod:`intfa.autograd`.

Users need not call the operators: :func:`intfa.scaled_dot_product_attention` and :func:`intfa.attention_int8`
call them themselves while torch.compile traces (``torch.compiler.is_compiling()``), and run eagerly otherwise.
The operators run the public functions, so every check, message and number is theirs (checks run when the graph
runs, not while it is traced). On CUDA with ``validate`` None nothing is read back to the host, so a compiled
graph can be captured in a CUDA graph (``mode="reduce-overhead"``).
"""

from __future__ import annotations

import functools
import json

import torch

from sim.checks import check_config
from sim.config import QuantConfig

from .autograd import SdpaArguments, float_attention_grads
from .frontend import check_dropout

__all__ = ["attention_int8", "config_key", "scaled_dot_product_attention"]


def config_key(config: QuantConfig | None) -> str:
    """``config`` as the operators take it: :attr:`sim.QuantConfig.fields_json` ("" for None, the default).

    TypeError (naming ``config``) for anything but a :class:`sim.QuantConfig` or None. Under torch.compile this is
    an isinstance check and an attribute read, which dynamo folds into a constant of the graph (torch 2.11's
    ``assume_constant_result`` could not take a frozen dataclass argument: its GPU tests failed there).
    """
    if config is None:
        return ""
    return check_config(config).fields_json


@functools.lru_cache(maxsize=64)
def _config(key: str) -> QuantConfig | None:
    """The QuantConfig a :func:`config_key` string names (None for "")."""
    if not key:
        return None
    try:
        return QuantConfig(**json.loads(key))
    except (ValueError, TypeError) as err:
        raise ValueError(f"config: expected the JSON of a QuantConfig's fields (intfa.ops.config_key), got {key!r}") \
            from err


# --- scaled_dot_product_attention ------------------------------------------------------------------------------


@torch.library.custom_op("intfa::scaled_dot_product_attention", mutates_args=())
def _sdpa_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None,
             is_causal: bool, scale: float | None, enable_gqa: bool, config: str,
             validate: bool | None) -> torch.Tensor:
    from .api import scaled_dot_product_attention as sdpa

    with torch.no_grad():  # the operator's autograd formula is registered below
        return sdpa(query, key, value, attn_mask, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                    config=_config(config), validate=validate)


@_sdpa_op.register_fake
def _sdpa_fake(query, key, value, attn_mask, is_causal, scale, enable_gqa, config, validate):
    """torch SDPA's output shape (sim.checks.SdpaCall.out_shape), in symbolic sizes: (..., Hq, Nq, Ev)."""
    seq_q, head_dim_v = query.shape[-2], value.shape[-1]
    if max(query.dim(), key.dim(), value.dim()) < 3:
        return query.new_empty((seq_q, head_dim_v))
    lead = torch.broadcast_shapes(*(x.shape[:-3] for x in (query, key, value)))
    heads = [x.shape[-3] if x.dim() >= 3 else 1 for x in (query, key, value)]
    heads_q = heads[0] if heads[0] != 1 else max(heads[1:])  # one query head broadcasts over the key heads
    return query.new_empty((*lead, heads_q, seq_q, head_dim_v))


def _sdpa_setup(ctx, inputs, output):
    query, key, value, attn_mask, is_causal, scale, enable_gqa, _config_key, _validate = inputs
    ctx.save_for_backward(query, key, value, attn_mask)
    ctx.args = SdpaArguments(is_causal, scale, enable_gqa)


def _sdpa_backward(ctx, grad_out):
    query, key, value, attn_mask = ctx.saved_tensors
    grads = float_attention_grads(grad_out, (query, key, value, attn_mask), ctx.needs_input_grad[:4], ctx.args)
    return (*grads, None, None, None, None, None)


_sdpa_op.register_autograd(_sdpa_backward, setup_context=_sdpa_setup)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False, *, config: QuantConfig | None = None,
                                 validate: bool | None = None) -> torch.Tensor:
    """:func:`intfa.scaled_dot_product_attention` through the custom operator (same arguments and result)."""
    check_dropout(dropout_p)  # the operator has no dropout argument: refused here, in the public function's words
    return _sdpa_op(query, key, value, attn_mask, is_causal, scale, enable_gqa, config_key(config), validate)


# --- attention_int8 --------------------------------------------------------------------------------------------


@torch.library.custom_op("intfa::attention_int8", mutates_args=())
def _attention_int8_op(q_codes: torch.Tensor, k_codes: torch.Tensor, v_codes: torch.Tensor, q_scale: torch.Tensor,
                       k_scale: torch.Tensor, v_scale: torch.Tensor, is_causal: bool, scale: float | None,
                       enable_gqa: bool, config: str, out_dtype: torch.dtype, return_lse: bool,
                       validate: bool | None, kv_splits: int | None, seq_lens: torch.Tensor | None,
                       block_table: torch.Tensor | None, causal_alignment: str,
                       kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    from .api import attention_int8 as attend

    result = attend(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, is_causal=is_causal, scale=scale,
                    enable_gqa=enable_gqa, config=_config(config), out_dtype=out_dtype, return_lse=return_lse,
                    validate=validate, kv_splits=kv_splits, seq_lens=seq_lens, block_table=block_table,
                    causal_alignment=causal_alignment, kernel=kernel)
    if return_lse:
        return result
    return result, torch.empty(0, dtype=torch.float32, device=q_codes.device)


@_attention_int8_op.register_fake
def _attention_int8_fake(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, is_causal, scale, enable_gqa, config,
                         out_dtype, return_lse, validate, kv_splits, seq_lens, block_table, causal_alignment,
                         kernel):
    """out (B, Hq, Nq, D) in out_dtype; lse (B, Hq, Nq) float32, or (0,) without return_lse."""
    out = q_codes.new_empty(q_codes.shape, dtype=out_dtype)
    lse_shape = q_codes.shape[:-1] if return_lse else (0,)
    return out, q_codes.new_empty(lse_shape, dtype=torch.float32)


def attention_int8(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, *, is_causal=False, scale=None,
                   enable_gqa=False, config: QuantConfig | None = None, out_dtype=torch.float16, return_lse=False,
                   validate: bool | None = None, kv_splits: int | None = None, seq_lens: torch.Tensor | None = None,
                   block_table: torch.Tensor | None = None, causal_alignment: str = "top_left", kernel: str = "auto"):
    """:func:`intfa.attention_int8` through the custom operator (same arguments and result)."""
    out, lse = _attention_int8_op(q_codes, k_codes, v_codes, q_scale, k_scale, v_scale, is_causal, scale, enable_gqa,
                                  config_key(config), out_dtype, return_lse, validate, kv_splits, seq_lens,
                                  block_table, causal_alignment, kernel)
    return (out, lse) if return_lse else out
