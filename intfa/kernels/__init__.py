"""Triton kernels of INT-FlashAttention, one room each.

- :mod:`.common`: what the kernels share: jit numerics (rounding, magic-number conversions) and host-side
  operand preparation.
- :mod:`.quantize`: int8 codes and float32 scales, exactly :func:`sim.quantize`.
- :mod:`.prefill`: the INT8 (and half-INT8) FlashAttention forward in Triton's ``tl``, exactly sim's tile loop.
- :mod:`.decode`: few queries against a long (contiguous or paged) INT8 cache: keys split across programs, GQA
  heads packed in a tile, a combine stage.
- :mod:`.dispatch`: which kernel runs for which call, and its launch parameters.
- :mod:`.baselines`: the project's FP16 and FP8 FlashAttention kernels, the yardsticks.

With ``TRITON_INTERPRET=1`` set before Triton is imported, the kernels run on CPU tensors through
Triton's NumPy interpreter (:data:`INTERPRETED` is then True); otherwise they compile for the GPU.
:mod:`intfa.runtime` decides which, once, before any kernel is defined.
"""

from ..runtime import setup_triton

INTERPRETED = setup_triton()

from .dispatch import Launch, attention_forward  # noqa: E402
from .quantize import quantize_int8, scale_shape  # noqa: E402

__all__ = ["INTERPRETED", "Launch", "attention_forward", "quantize_int8", "scale_shape"]
