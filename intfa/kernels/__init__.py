"""Triton kernels of INT-FlashAttention.

- :mod:`intfa.kernels.quantize`: int8 codes and float32 scales, exactly :func:`sim.quantize`.
- :mod:`intfa.kernels.attention`: the INT8 (and half-INT8) FlashAttention forward, exactly sim's tile loop.

With ``TRITON_INTERPRET=1`` set before Triton is imported, the kernels run on CPU tensors through
Triton's NumPy interpreter (:data:`INTERPRETED` is then True); otherwise they compile for the GPU.
"""

import os


def _fix_interpreter_loop_bounds() -> None:
    """Let Triton 3.6's interpreter run loops with runtime bounds under NumPy >= 2.4.

    The interpreter holds every scalar as a 1-element 1-d array and converts a loop bound with
    ``int(array)``, which NumPy 2.4 turns from a deprecation into a TypeError: ``for j in range(lo, hi)``
    with ``hi`` computed from a kernel argument fails. This re-registers the interpreter's ``__index__``
    for tensors (inside the same patch scope, so it is undone after each launch) to read the one
    element explicitly. Compiled kernels are not affected.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_intfa_index_fix", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor._intfa_index_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor


if os.environ.get("TRITON_INTERPRET", "0") == "1":
    _fix_interpreter_loop_bounds()

from .attention import INTERPRETED, attention_forward  # noqa: E402
from .quantize import quantize_int8, scale_shape  # noqa: E402

__all__ = ["INTERPRETED", "attention_forward", "quantize_int8", "scale_shape"]
