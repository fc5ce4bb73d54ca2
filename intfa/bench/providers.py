"""The providers: one registry, name -> how to prepare a timed call, what it reads, which suites run it.

A provider's ``prepare(q, k, v, shape)`` receives one set of float16 inputs on the GPU (q (B, Hq, Nq, D), k and
v (B, Hkv, Nk, D)) and does everything that stays out of the timing (casts, quantization of a cache, layout),
then returns the zero-argument callable that is timed. Names are public contract (CSV rows, ``--providers``).

- ``sdpa-flash``, ``sdpa-cudnn``, ``sdpa-efficient``, ``sdpa-math``: torch SDPA restricted to one backend with
  ``torch.nn.attention.sdpa_kernel`` (``enable_gqa`` for grouped-query shapes). ``sdpa-math`` materialises the
  scores and float32 copies of q, k, v (K and V repeated per query head under GQA), so it runs only where that
  scratch stays under :data:`MATH_SCRATCH_BYTES`.
- ``triton-fp16``: :func:`intfa.kernels.baselines.flash_attention_fp16`, the project's own FP16 kernel.
- ``triton-fp8``: :func:`intfa.kernels.baselines.flash_attention_fp8` on operands cast to e4m3 beforehand
  (V sequence-contiguous): attention alone is timed.
- ``int8-half``: :func:`intfa.scaled_dot_product_attention` with ``QuantConfig.half_int8()`` (quantization of
  Q and K included, as a user calls it).
- ``int8-full``: :func:`intfa.attention_int8` on operands quantized beforehand by :func:`intfa.quantize_operands`
  with the paper's configuration: an INT8 KV cache, V codes sequence-contiguous (the layout Hopper's 8-bit
  wgmma wants).
- ``int8-full-e2e``: :func:`intfa.scaled_dot_product_attention` with the paper's configuration: fp16 in,
  quantization plus attention.
- ``int8-rec``, ``int8-rec-e2e``: the same two with ``QuantConfig.recommended()`` (issue #6; quantize_operands
  smooths K before quantizing it, as the API does).
- ``int8-full-tl``, ``int8-rec-tl``: ``int8-full`` and ``int8-rec`` with ``kernel="tl"``: the Triton-language
  kernel, where the API's default runs the Gluon kernel on Hopper (the ``full`` suite times both).

A new provider is one :func:`register` call below; ``suites`` says which suites run it by default, and every
table, CSV and figure picks it up by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from sim import QuantConfig

from .shapes import Shape, float_bytes, int8_bytes

__all__ = ["MATH_SCRATCH_BYTES", "PROVIDERS", "Provider", "default_providers", "get_provider", "register",
           "sdpa_providers"]

#: Scratch above which ``sdpa-math`` is not run (its float32 scores and operand copies).
MATH_SCRATCH_BYTES = 2**30

_PREFILL_SUITES = ("paper", "full")


@dataclasses.dataclass(frozen=True)
class Provider:
    """One way to compute attention, as the benchmark times it.

    prepare : (q, k, v, shape) -> zero-argument callable returning the (B, Hq, Nq, D) output; see the module.
    bytes_moved : shape -> the bytes the provider must read and write at the least (its operands once, the
        output once): the numerator of its GB/s.
    suites : the suites that run it when ``--providers`` is not given.
    sdpa_backend : name of the ``torch.nn.attention.SDPBackend`` it is restricted to (torch SDPA providers).
    gqa : whether it runs grouped-query shapes (kv_heads < heads).
    skip : shape -> a reason not to run it on that shape, or None.
    """

    name: str
    prepare: Callable
    bytes_moved: Callable[[Shape], int]
    suites: tuple[str, ...]
    sdpa_backend: str | None = None
    gqa: bool = True
    skip: Callable[[Shape], str | None] | None = None

    def skip_reason(self, shape: Shape) -> str | None:
        """Why this provider does not run ``shape`` (a row's ``error`` starts "skipped: "), or None."""
        if shape.gqa and not self.gqa:
            return f"{self.name} has no grouped-query attention (kv_heads {shape.kv_heads} < heads {shape.heads})"
        return self.skip(shape) if self.skip is not None else None

    def context(self):
        """The context the provider is prepared and timed in: its SDPA backend, or nothing."""
        if self.sdpa_backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        # getattr, not SDPBackend[...]: the enum is a pybind11 enum in torch 2.11 (not subscriptable), a Python one later
        return sdpa_kernel(getattr(SDPBackend, self.sdpa_backend))


_REGISTRY: dict[str, Provider] = {}


def register(name: str, *, bytes_moved: Callable[[Shape], int], suites: tuple[str, ...],
             sdpa_backend: str | None = None, gqa: bool = True, skip: Callable[[Shape], str | None] | None = None):
    """Decorator: register ``prepare`` as provider ``name`` (see :class:`Provider`). Names are unique."""

    def decorator(prepare):
        if name in _REGISTRY:
            raise ValueError(f"name: provider {name!r} is already registered")
        _REGISTRY[name] = Provider(name, prepare, bytes_moved, tuple(suites), sdpa_backend, gqa, skip)
        return prepare

    return decorator


def get_provider(name: str) -> Provider:
    """The registered provider ``name``; ValueError listing the names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"provider: expected one of {tuple(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def default_providers(suite: str) -> list[str]:
    """The providers a suite runs when none are named, in registry order."""
    return [name for name, provider in _REGISTRY.items() if suite in provider.suites]


def sdpa_providers() -> list[str]:
    """The torch SDPA providers (one backend each): the candidates for each shape's fastest SDPA."""
    return [name for name, provider in _REGISTRY.items() if provider.sdpa_backend is not None]


# --- torch SDPA -----------------------------------------------------------------------------------------------------


def _sdpa(q, k, v, shape: Shape):
    import torch.nn.functional as F

    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal, enable_gqa=shape.gqa)


def _math_scratch(shape: Shape) -> str | None:
    """Skip the math backend where its scratch is large: float32 scores and probabilities, float32 copies of q, k
    and v with K and V repeated to every query head."""
    scores = 2 * 4 * shape.batch * shape.heads * shape.seq_q * shape.seq_k
    operands = 4 * shape.batch * shape.heads * (shape.seq_q + 2 * shape.seq_k) * shape.head_dim
    if scores + operands > MATH_SCRATCH_BYTES:
        return (f"sdpa-math's float32 scratch would take {(scores + operands) / 1e9:.1f} GB "
                f"(run only under {MATH_SCRATCH_BYTES / 1e9:.1f} GB)")
    return None


_fp16 = float_bytes
register("sdpa-flash", bytes_moved=_fp16, suites=(*_PREFILL_SUITES, "decode"), sdpa_backend="FLASH_ATTENTION")(_sdpa)
register("sdpa-cudnn", bytes_moved=_fp16, suites=(*_PREFILL_SUITES, "decode"), sdpa_backend="CUDNN_ATTENTION")(_sdpa)


# --- the project's FP16 and FP8 kernels -----------------------------------------------------------------------------


@register("triton-fp16", bytes_moved=_fp16, suites=_PREFILL_SUITES, gqa=False)
def _triton_fp16(q, k, v, shape: Shape):
    from intfa.kernels.baselines import flash_attention_fp16

    return lambda: flash_attention_fp16(q, k, v, is_causal=shape.causal)


@register("triton-fp8", bytes_moved=lambda shape: float_bytes(shape, element_bytes=1), suites=_PREFILL_SUITES,
          gqa=False)
def _triton_fp8(q, k, v, shape: Shape):
    from intfa.kernels.baselines import flash_attention_fp8, fp8_operands

    q8, k8, v8 = fp8_operands(q, k, v)
    return lambda: flash_attention_fp8(q8, k8, v8, is_causal=shape.causal)


# --- INT8: the torch API (quantization included) and a pre-quantized cache ------------------------------------------


def _int8_api(config: QuantConfig):
    """intfa.scaled_dot_product_attention with ``config``: float16 in, quantization and attention timed."""

    def prepare(q, k, v, shape: Shape):
        import intfa

        return lambda: intfa.scaled_dot_product_attention(q, k, v, is_causal=shape.causal, enable_gqa=shape.gqa,
                                                          config=config)

    return prepare


def _int8_cache(config: QuantConfig, kernel: str = "auto"):
    """intfa.attention_int8 on operands quantized beforehand by intfa.quantize_operands: attention alone timed;
    ``kernel`` as intfa.attention_int8's ("tl": the Triton-language kernel where the default runs the Gluon one)."""

    def prepare(q, k, v, shape: Shape):
        import intfa

        operands = intfa.quantize_operands(q, k, v, config)
        return lambda: intfa.attention_int8(*operands, is_causal=shape.causal, enable_gqa=shape.gqa, config=config,
                                            kernel=kernel)

    return prepare


def _int8_cache_bytes(config: QuantConfig):
    return lambda shape: int8_bytes(shape, config)


_PAPER, _RECOMMENDED = QuantConfig.paper(), QuantConfig.recommended()
register("int8-half", bytes_moved=_fp16, suites=_PREFILL_SUITES)(_int8_api(QuantConfig.half_int8()))
register("int8-full", bytes_moved=_int8_cache_bytes(_PAPER), suites=(*_PREFILL_SUITES, "decode"))(_int8_cache(_PAPER))
register("int8-full-e2e", bytes_moved=_fp16, suites=_PREFILL_SUITES)(_int8_api(_PAPER))
register("int8-rec", bytes_moved=_int8_cache_bytes(_RECOMMENDED), suites=_PREFILL_SUITES)(_int8_cache(_RECOMMENDED))
register("int8-rec-e2e", bytes_moved=_fp16, suites=_PREFILL_SUITES)(_int8_api(_RECOMMENDED))

# The two SDPA backends the decode suite adds come after the nine names above: PROVIDERS' order is public.
register("sdpa-efficient", bytes_moved=_fp16, suites=("decode",), sdpa_backend="EFFICIENT_ATTENTION")(_sdpa)
register("sdpa-math", bytes_moved=_fp16, suites=("decode",), sdpa_backend="MATH", skip=_math_scratch)(_sdpa)



def _int8_paged(config: QuantConfig, page_size: int = 256):
    """intfa.attention_int8 on the same cache in shuffled pages of ``page_size`` keys (intfa.page_operands)."""

    def prepare(q, k, v, shape: Shape):
        import intfa

        paged = intfa.page_operands(intfa.quantize_operands(q, k, v, config), config, page_size)
        return lambda: intfa.attention_int8(*paged.args, is_causal=shape.causal, enable_gqa=shape.gqa, config=config,
                                            block_table=paged.block_table, seq_lens=paged.seq_lens)

    return prepare


def _int8_paged_bytes(config: QuantConfig, page_size: int = 256):
    """The contiguous cache's bytes plus the block table (int32 per page of each sequence)."""
    return lambda shape: int8_bytes(shape, config) + 4 * shape.batch * -(-shape.seq_k // page_size)


register("int8-paged", bytes_moved=_int8_paged_bytes(_PAPER), suites=("decode",))(_int8_paged(_PAPER))


# The tl kernel beside the API's default (the Gluon kernel on Hopper where faster), so that one run compares the two.
register("int8-full-tl", bytes_moved=_int8_cache_bytes(_PAPER), suites=("full",))(_int8_cache(_PAPER, "tl"))
register("int8-rec-tl", bytes_moved=_int8_cache_bytes(_RECOMMENDED), suites=("full",))(_int8_cache(_RECOMMENDED, "tl"))

#: Every provider's name, in registration order (public contract: CSV rows, ``--providers``).
PROVIDERS = tuple(_REGISTRY)
