"""intfa: INT8 FlashAttention in Triton, with a torch API that follows :mod:`sim` to the bit.

Public API (SDPA layout: query (B, Hq, Nq, D), key and value (B, Hkv, Nk, D)):

- :func:`scaled_dot_product_attention`: drop-in for torch's (what it accepts in inference: docs/conformance.md),
  quantizing as a :class:`QuantConfig` says, with a straight-through backward (:mod:`intfa.autograd`).
- :func:`attention_int8`: attention over pre-quantized INT8 operands (an INT8 KV cache).
- :func:`quantize_operands`: Q, K, V quantized as a config says, in the kernels' layout (:class:`Operands`).
- :func:`quantize`: int8 codes with float32 scales, identical to :func:`sim.quantize`.
- :func:`smooth_keys`: K minus its per-channel mean, as :func:`sim.smooth_keys` (QuantConfig.k_smoothing).
- :func:`page_operands`: a quantized cache laid out in fixed-size pages with a block table (:class:`PagedOperands`).
- :class:`QuantConfig`: the project's configuration vocabulary (re-exported from :mod:`sim`).

CUDA tensors run compiled kernels; CPU tensors run under Triton's interpreter (set
``TRITON_INTERPRET=1`` before importing), which reproduces :mod:`sim` bit for bit.

The package face is lazy: ``import intfa`` imports neither torch nor Triton until one of the names above is
used, so that :mod:`intfa.experiments` (NumPy only) runs on a machine without them.
"""

from __future__ import annotations

import importlib

from sim.config import QuantConfig

#: Public name -> the module that defines it (imported on first use).
_LAZY = {name: ".api" for name in ("Operands", "attention_int8", "quantize", "quantize_operands",
                                    "scaled_dot_product_attention", "smooth_keys")}
_LAZY.update({name: ".paging" for name in ("PagedOperands", "page_operands")})

__all__ = ["QuantConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
