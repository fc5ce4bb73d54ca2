"""Everything that touches Triton's internals or asks which device can run: one file to mend on an upgrade.

- :func:`cuda_available`: is there a CUDA GPU torch can use (False without torch). Import-light: this module
  imports neither torch nor Triton at load time, so the NumPy-only parts of the project (``intfa.experiments``)
  may call it.
- :func:`interpreted`: do Triton kernels run in Triton's NumPy interpreter (``TRITON_INTERPRET=1`` was set
  before the kernels were defined)? Decided once, the first time a kernel module asks, and fixed for the
  process: Triton itself reads the switch when a function is decorated, so reading it later could disagree
  with the kernels already defined.
- :func:`setup_triton`: called by ``intfa.kernels`` before it defines any kernel; applies the interpreter
  patches below when interpreting (each is idempotent and says why it exists).
- :func:`check_device`: the one device rule of every public entry: all tensors on one device, CUDA compiled,
  or CPU under the interpreter.

The patches target Triton 3.6's interpreter. Each checks that the private function it wraps exists and does
nothing otherwise, so a Triton without them degrades to its own behaviour, which the interpreter tests then
catch bit for bit.
"""

from __future__ import annotations

import functools
import os

__all__ = ["check_device", "cuda_available", "interpreted", "setup_triton"]

#: Largest finite float8 e4m3fn value: the interpreter's FP8 cast saturates here, as the GPU's cvt.rn.satfinite.
FP8_E4M3_MAX = 448.0


@functools.cache
def cuda_available() -> bool:
    """True when torch is importable and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@functools.cache
def setup_triton() -> bool:
    """Fix the interpreter switch for this process, patch the interpreter if it is on; returns :func:`interpreted`.

    Triton decides at each ``@triton.jit`` whether a function is interpreted (from ``TRITON_INTERPRET``); this
    reads the same knob once, before ``intfa.kernels`` decorates anything, so that every kernel and every
    check in the project agrees with it.
    """
    import triton

    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        on = bool(knobs.runtime.interpret)
    else:  # older Triton: the environment variable itself
        on = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if on:
        _fix_interpreter_loop_bounds()
        _fix_interpreter_fp8_casts()
        _fast_interpreter_nan_max()
    return on


def interpreted() -> bool:
    """True when the project's Triton kernels run in Triton's interpreter (CPU tensors, NumPy)."""
    return setup_triton()


def check_device(tensors: dict) -> "torch.device":  # noqa: F821 - torch is imported lazily
    """The device all of ``tensors`` (name -> tensor) share, if the kernels can run there.

    Raises ValueError naming the first tensor on another device than the first, or on a device that is neither
    CUDA nor CPU; RuntimeError when the device cannot run in this process's mode: CPU tensors without the
    interpreter, or CUDA tensors under it (the interpreter would copy them through the host silently).
    """
    names = list(tensors)
    first = names[0]
    device = tensors[first].device
    for name in names[1:]:
        if tensors[name].device != device:
            raise ValueError(f"{name}: expected device {device} as {first}, got {tensors[name].device}")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{first}: expected a CUDA or CPU tensor, got device {device}")
    if device.type == "cpu" and not interpreted():
        raise RuntimeError(
            f"{first}: CPU tensors run the kernels only under Triton's interpreter; set TRITON_INTERPRET=1 in the "
            "environment before triton (or intfa.kernels) is imported, or pass CUDA tensors"
        )
    if device.type == "cuda" and interpreted():
        raise RuntimeError(
            f"{first}: CUDA tensors given while TRITON_INTERPRET=1 is set; unset it to run compiled, or pass CPU "
            "tensors to the interpreter"
        )
    return device


# --- interpreter patches (Triton 3.6) ------------------------------------------------------------------------


def _fix_interpreter_loop_bounds() -> None:
    """Let the interpreter run loops with runtime bounds under NumPy >= 2.4.

    The interpreter holds every scalar as a 1-element 1-d array and converts a loop bound with ``int(array)``,
    which NumPy 2.4 turns from a deprecation into a TypeError: ``for j in range(lo, hi)`` with ``hi`` computed
    from a kernel argument fails. This re-registers the interpreter's ``__index__`` for tensors (inside the same
    patch scope, so it is undone after each launch) to read the one element explicitly. Compiled kernels are
    not affected.
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


def _fix_interpreter_fp8_casts() -> None:
    """Make the interpreter convert between float and FP8 e4m3 correctly (the FP8 baseline's casts).

    Its bit-level converter drops the carry when rounding overflows the mantissa: float32 0.0303 became 0.0156
    and 0.121 became 0.0625 (29 of 1024 values in [0, 1] wrong). Conversions between float16/float32 and e4m3
    go through ml_dtypes instead, rounding to nearest even and saturating at +-448 as the GPU's
    ``cvt.rn.satfinite`` does; every other conversion is left to the interpreter.
    """
    import ml_dtypes
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    convert_float = getattr(interpreter, "_convert_float", None)
    if convert_float is None or getattr(convert_float, "_fp8_via_ml_dtypes", False):
        return
    e4m3, e4m3_np = tl.float8e4nv, np.dtype(ml_dtypes.float8_e4m3fn)
    wide = {tl.float32: np.dtype(np.float32), tl.float16: np.dtype(np.float16)}
    nearest_even = (None, interpreter._ir.ROUNDING_MODE.RTNE)  # None: a plain .to(), RTNE on the GPU

    def convert_float_fp8_via_ml_dtypes(input, input_dtype, output_dtype, rounding_mode):
        if input_dtype in wide and output_dtype == e4m3 and rounding_mode in nearest_even:
            x = input.view(wide[input_dtype]).astype(np.float32)
            return np.clip(x, -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(e4m3_np).view(np.uint8)
        if input_dtype == e4m3 and output_dtype in wide:
            return input.view(e4m3_np).astype(wide[output_dtype]).view(f"uint{output_dtype.primitive_bitwidth}")
        return convert_float(input, input_dtype, output_dtype, rounding_mode)

    convert_float_fp8_via_ml_dtypes._fp8_via_ml_dtypes = True
    interpreter._convert_float = convert_float_fp8_via_ml_dtypes


#: The combine functions the interpreter reduces with NumPy (module, name) -> NumPy reduction: each equals the
#: interpreter's element-by-element fold, value for value.
_NUMPY_REDUCTIONS = {("intfa.kernels.tile", "_max_propagating_nan"): "max"}


def _fast_interpreter_nan_max() -> None:
    """Reduce with the tile's NaN-propagating max in one NumPy call instead of one Python call per element.

    The interpreter runs ``tl.reduce`` with a user combine function by calling it on every element in turn (its
    ``generic_reduce``): the row max of each score tile (``intfa.kernels.tile._max_propagating_nan``) took about
    60% of an interpreted attention call. ``np.max`` is the same fold: ``tl.maximum(..., propagate_nan=ALL)`` is
    ``np.maximum`` in the interpreter, and a max is exact in any order (NaN wins either way); only the sign of a
    zero maximum of +0 and -0 may differ, which no later operation of the tile loop can see (it is subtracted from
    scores and added to the log-sum-exp). Other combine functions take the interpreter's own path.
    """
    import numpy as np
    from triton.runtime import interpreter

    reduce_ops = getattr(interpreter, "ReduceOps", None)
    original = getattr(reduce_ops, "apply_impl", None)
    if original is None or getattr(original, "_intfa_numpy_max", False) or not hasattr(reduce_ops, "min_max"):
        return

    def apply_impl(self, input):
        fn = getattr(self.combine_fn, "fn", None)
        key = (getattr(fn, "__module__", None), getattr(fn, "__name__", None))
        if _NUMPY_REDUCTIONS.get(key) == "max":
            return self.min_max(input, val_reduce_op=np.max)
        return original(self, input)

    apply_impl._intfa_numpy_max = True
    reduce_ops.apply_impl = apply_impl
