"""intfa: INT8 FlashAttention in Triton, with a torch API that follows :mod:`sim` to the bit.

Public API (SDPA layout: query (B, Hq, Nq, D), key and value (B, Hkv, Nk, D)):

- :func:`scaled_dot_product_attention`: drop-in for torch's, quantizing as a :class:`QuantConfig` says.
- :func:`attention_int8`: attention over pre-quantized INT8 operands (an INT8 KV cache).
- :func:`quantize`: int8 codes with float32 scales, identical to :func:`sim.quantize`.
- :func:`smooth_keys`: K minus its per-channel mean, as :func:`sim.smooth_keys` (QuantConfig.k_smoothing).
- :class:`QuantConfig`: the project's configuration vocabulary (re-exported from :mod:`sim`).

CUDA tensors run compiled kernels; CPU tensors run under Triton's interpreter (set
``TRITON_INTERPRET=1`` before importing), which reproduces :mod:`sim` bit for bit.
"""

from sim.config import QuantConfig

from .api import attention_int8, quantize, scaled_dot_product_attention, smooth_keys

__all__ = ["QuantConfig", "attention_int8", "quantize", "scaled_dot_product_attention", "smooth_keys"]
