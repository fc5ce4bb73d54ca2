"""Hugging Face transformers: ``attn_implementation="intfa"`` runs a model's attention on the INT8 kernel.

>>> import intfa
>>> intfa.register_transformers()                                   # the paper's configuration, as "intfa"
>>> intfa.register_transformers("intfa-rec", intfa.QuantConfig.recommended())
>>> model = AutoModel.from_pretrained(path, attn_implementation="intfa")   # or model.set_attn_implementation(...)

:func:`register_transformers` registers two things under the name (transformers >= 4.56, whose
``AttentionInterface`` and ``AttentionMaskInterface`` these are):

- the attention function, :func:`attention_forward` bound to a config: what transformers' own
  ``sdpa_attention_forward`` does around torch SDPA (the causal flag only without a mask and with more than one
  query; keys cropped to the queries for a causal prefill into a longer static cache; T5-style ``position_bias``
  folded into the mask), with :func:`intfa.scaled_dot_product_attention` in torch SDPA's place. That function
  takes the mask (bool or float, broadcast over heads) and grouped-query attention (``enable_gqa``) itself, so no
  key/value head is repeated here; what it does not compute (dropout while training, a head dim above 256) it
  refuses with an exception naming the argument;
- torch SDPA's mask builder (``masking_utils.sdpa_mask``): the model then builds the (B, 1, Nq, Nk) boolean mask
  (padding, causal, sliding window) it builds for "sdpa", or none where ``is_causal`` says it all. Without this
  registration transformers builds no mask at all for an unknown implementation, and padding would be attended.

Under ``torch.compile`` the attention is one custom operator (:mod:`intfa.ops`), so a model compiles with
``fullgraph=True``. transformers is imported only inside :func:`register_transformers`.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["attention_forward", "register_transformers"]


def attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, position_bias: torch.Tensor | None = None, *, config=None,
                      **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function contract, on :func:`intfa.scaled_dot_product_attention`.

    query (B, Hq, Nq, D), key and value (B, Hkv, Nk, D), attention_mask None or broadcasting to (B, Hq, Nq, Nk)
    (bool: True attends; float: added to the scores). Returns (attn_output (B, Nq, Hq, D), None): no attention
    weights exist to return.
    """
    from .api import scaled_dot_product_attention

    if kwargs.get("softcap") is not None:
        raise NotImplementedError("softcap: the INT8 kernel applies no logit soft-capping; use 'eager' for this model")
    if kwargs.get("output_attentions", False):
        warnings.warn("output_attentions: the INT8 kernel returns no attention weights (None)", stacklevel=2)
    q_length = query.shape[2]
    enable_gqa = getattr(module, "num_key_value_groups", 1) > 1
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    # As transformers' sdpa: the flag only where no mask says it (shape test first: compile needs a Python bool).
    is_causal = q_length > 1 and attention_mask is None and is_causal
    if is_causal and key.shape[2] > q_length:  # causal prefill into a longer (static) cache: later keys unseen
        key, value = key[:, :, :q_length], value[:, :, :q_length]
        if position_bias is not None:
            position_bias = position_bias[..., :q_length]
    if position_bias is not None:  # T5-style relative bias: one float mask with the padding / causal mask
        from transformers.integrations.sdpa_attention import create_position_bias_mask

        attention_mask = create_position_bias_mask(position_bias, attention_mask, is_causal, query, key)
        is_causal = False
    out = scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                       is_causal=is_causal, scale=scaling, enable_gqa=enable_gqa, config=config)
    return out.transpose(1, 2).contiguous(), None


def register_transformers(name: str = "intfa", config=None) -> str:
    """Register the INT8 attention with transformers under ``name``; returns ``name``.

    config : :class:`sim.QuantConfig` the kernel runs with (default: the paper's); checked here as
        :func:`intfa.scaled_dot_product_attention` checks it. Register several names for several configs.
    Afterwards ``from_pretrained(..., attn_implementation=name)`` or ``model.set_attn_implementation(name)``
    selects it. Registering a name again replaces its config. ImportError when transformers is missing or older
    than 4.56 (no attention-mask interface).
    """
    from .api import _check_config

    if not isinstance(name, str) or not name or "/" in name or name in ("eager", "sdpa", "flex_attention") \
            or name.startswith(("flash_attention", "paged")):
        raise ValueError(f"name: expected a new attention implementation name (no '/', not a transformers one), "
                         f"got {name!r}")
    config = _check_config(config)
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as err:
        raise ImportError(f"register_transformers needs transformers >= 4.56 (pip install "
                          f"'int-flashattention[hf]'): {err}") from err

    def intfa_attention(module, query, key, value, attention_mask, **kwargs):
        return attention_forward(module, query, key, value, attention_mask, config=config, **kwargs)

    intfa_attention.__name__ = intfa_attention.__qualname__ = f"intfa_attention_{name.replace('-', '_')}"
    AttentionInterface.register(name, intfa_attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
