"""The one configuration vocabulary of the project.

Everything that decides what a number in INT-FlashAttention is (scale granularities, tile sizes,
operand formats, how P is quantized, which normalizer divides the output) is a field of
:class:`QuantConfig`. The simulator reads it; the Triton kernels in ``intfa`` import it from here and
follow it. ``docs/spec.md`` gives the floating-point operations each choice implies.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# --- granularities ----------------------------------------------------------------------------------
#: Granularities for the Q and K scales. "token": one scale per (batch, head, token) row, the paper's.
#: "block": one scale per (batch, head) and block of ``block_m`` queries / ``block_n`` keys.
#: "head": one scale per (batch, head) matrix.
#: "tensor": one scale for the whole tensor, shared by every sequence and head of the batch: a sequence's
#: result then depends on its neighbours, so the torch API refuses it (kept here for studies).
QK_GRANULARITIES = ("tensor", "head", "block", "token")
#: Granularities for the V scale. "head": one scale per (batch, head) matrix, the paper's (the authors'
#: Triton code keeps a v_scale of shape (B, H)). "channel": one scale per (batch, head, channel).
#: "block": one scale per (batch, head), block of ``block_n`` keys and channel (the authors' CUDA code).
#: "tensor": one scale for the whole tensor (batch-dependent, as above).
V_GRANULARITIES = ("tensor", "head", "channel", "block")
#: What :func:`sim.quantize` accepts: the above, with V's "block" spelled out as "block_channel".
QUANT_GRANULARITIES = ("tensor", "head", "token", "channel", "block", "block_channel")
#: Granularities whose scale groups lie within one (batch, head): with them (and only them) a sequence's
#: output does not depend on the other sequences and heads of its batch.
BATCH_INVARIANT_GRANULARITIES = tuple(g for g in QUANT_GRANULARITIES if g != "tensor")

# --- operand formats ------------------------------------------------------------------------------------
#: Integer formats: symmetric codes in [-qmax, qmax] with float32 scales.
INT_FORMATS = {"int8": 127, "int4": 7}
#: Float formats: values rounded to the format (round to nearest even, saturating for fp8), no scale.
FLOAT_FORMATS = ("float32", "float16", "bfloat16", "fp8_e4m3", "fp8_e5m2")
QK_FORMATS = tuple(INT_FORMATS) + FLOAT_FORMATS
PV_FORMATS = ("int8",) + FLOAT_FORMATS

#: How P = exp(S - m) in [0, 1] becomes 8-bit codes when ``pv_format == "int8"``.
#: "fixed127": code = round(127 P) in [0, 127], the paper's fixed scale.
#: "signed255": code = round(255 P) - 128 in [-128, 127]; P8 @ V8 adds back 128 * colsum(V8).
P_QUANTS = ("fixed127", "signed255")
#: Levels of P per scheme: the accumulator counts P in these units.
P_LEVELS = {"fixed127": 127, "signed255": 255}
#: The scale P's codes are taken against. "fixed": P itself (P <= 1, so 1/levels is a fixed step: the
#: paper's). "tile_max": each row's largest P within the key tile, so that a tile whose scores sit far
#: below the row's running max still gets every level. The tile max is exp2(tile_max_s - m) with
#: tile_max_s already computed for the running max: one exp2 per row per tile, folded into the
#: rescaling that already happens (docs/spec.md 3.3).
P_SCALES = ("fixed", "tile_max")

#: "float": l sums the float P (the authors' code; biased low when P is quantized).
#: "quantized": l sums exactly what multiplied V (the dequantized P codes): no bias.
NORMALIZERS = ("float", "quantized")

#: Smallest |max| a quantization group is scaled from: with it the scale amax/qmax stays a normal
#: float32 (127 * 2**-126 < 2**-119) and qmax/amax stays finite, so all-zero rows give codes 0,
#: never NaN. Groups whose amax is below it are quantized as if their amax were this.
AMAX_FLOOR = 2.0**-119

LOG2E = 1.4426950408889634  # 1 / ln 2: kernels work in the exp2 domain
LN2 = 0.6931471805599453


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"QuantConfig.{name}: expected one of {list(choices)}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How INT-FlashAttention quantizes and tiles. The default instance is the paper's configuration.

    Fields
    ------
    q_granularity, k_granularity : "tensor" | "head" | "block" | "token"
        Granularity of the Q and K scales (used when ``qk_format`` is an integer format).
    v_granularity : "tensor" | "head" | "channel" | "block"
        Granularity of the V scale (used when ``pv_format == "int8"``). Half-INT8 (integer Q and K, 16-bit
        float P and V) scales V by a power of two per (batch, head) instead: :attr:`v_power_of_two`.
    block_m, block_n : int
        Query rows and keys per tile; powers of two, at least 16. ``block_n`` changes the result
        (the online softmax rescales once per key tile); ``block_m`` only through block-granular Q.
    qk_format : "int8" | "int4" | float format
        Format of Q and K in the first product. "int4" exists in the simulator only.
    pv_format : "int8" | float format
        Format of P and V in the second product.
    p_quant : "fixed127" | "signed255"
        How P becomes codes when ``pv_format == "int8"``: levels and sign.
    p_scale : "fixed" | "tile_max"
        What P is scaled by before rounding: nothing (P <= 1), or each row's max P within the tile.
    normalizer : "float" | "quantized"
        What the row sum l adds up: the float P, or what actually multiplied V.
    k_smoothing : bool
        Subtract each (batch, head, channel)'s mean over the keys before quantizing K (softmax is
        unchanged; the quantization of K no longer spends its range on a shared offset).
    """

    q_granularity: str = "token"
    k_granularity: str = "token"
    v_granularity: str = "head"
    block_m: int = 128
    block_n: int = 128
    qk_format: str = "int8"
    pv_format: str = "int8"
    p_quant: str = "fixed127"
    p_scale: str = "fixed"
    normalizer: str = "float"
    k_smoothing: bool = False

    def __post_init__(self):
        _check_choice("q_granularity", self.q_granularity, QK_GRANULARITIES)
        _check_choice("k_granularity", self.k_granularity, QK_GRANULARITIES)
        _check_choice("v_granularity", self.v_granularity, V_GRANULARITIES)
        _check_choice("qk_format", self.qk_format, QK_FORMATS)
        _check_choice("pv_format", self.pv_format, PV_FORMATS)
        _check_choice("p_quant", self.p_quant, P_QUANTS)
        _check_choice("p_scale", self.p_scale, P_SCALES)
        _check_choice("normalizer", self.normalizer, NORMALIZERS)
        if not isinstance(self.k_smoothing, (bool, np.bool_)):
            raise TypeError(f"QuantConfig.k_smoothing: expected a bool, got {type(self.k_smoothing).__name__}")
        if self.p_scale != "fixed" and self.pv_format != "int8":
            raise ValueError(f"QuantConfig.p_scale: {self.p_scale!r} needs pv_format 'int8', got {self.pv_format!r}")
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"QuantConfig.{name}: expected an int, got {type(value).__name__}")
            if value < 16 or value & (value - 1):
                raise ValueError(f"QuantConfig.{name}: expected a power of two >= 16, got {value}")
        # P8 @ V8 sums block_n products of at most levels * 127: it must stay below 2**24 to be exact
        # in float32 (sim's BLAS) as in int32 converted once (the kernel).
        if self.pv_format == "int8" and self.block_n * 127 * P_LEVELS[self.p_quant] >= 2**24:
            raise ValueError(
                f"QuantConfig.block_n: expected block_n * 127 * {P_LEVELS[self.p_quant]} < 2**24 "
                f"(P8 @ V8 must be exact), got {self.block_n}"
            )

    # --- derived facts -------------------------------------------------------------------------------
    @property
    def qk_is_int(self) -> bool:
        return self.qk_format in INT_FORMATS

    @property
    def pv_is_int(self) -> bool:
        return self.pv_format == "int8"

    @property
    def qk_qmax(self) -> int:
        """Largest code of Q and K (127 for int8, 7 for int4)."""
        return INT_FORMATS[self.qk_format]

    @property
    def p_levels(self) -> int:
        """Units the accumulator counts P in: 127 or 255 for int8 P, 1 for float P."""
        return P_LEVELS[self.p_quant] if self.pv_is_int else 1

    @property
    def v_power_of_two(self) -> bool:
        """Half-INT8 (integer Q and K, float16/bfloat16 P and V): V is divided by a power of two per (batch, head)
        before it is rounded to the 16-bit format, and the output multiplied back (docs/spec.md, section 2).

        The power of two brings each (batch, head)'s max |V| into [1, 2): nothing underflows to float16's
        subnormals or zero (bf16 or float32 V of tiny magnitude), nothing overflows it (|V| > 65504), and where V
        sits in float16's normal range the result is the same bits as without it (scaling by a power of two
        commutes with rounding there). The float-format emulations (``fp16()``, ``fp8()``, ``none()``) keep their
        unscaled arithmetic: they model kernels that have none.
        """
        return self.qk_is_int and self.pv_format in ("float16", "bfloat16")

    @property
    def batch_invariant(self) -> bool:
        """True when no scale group spans several (batch, head) matrices: a sequence's output then does not
        depend on the rest of its batch (the torch API accepts only these)."""
        used = []
        if self.qk_is_int:
            used += [self.q_granularity, self.k_granularity]
        if self.pv_is_int:
            used.append(self.v_granularity)
        return "tensor" not in used

    @property
    def v_quant_granularity(self) -> str:
        """V's granularity in :func:`sim.quantize`'s vocabulary."""
        return "block_channel" if self.v_granularity == "block" else self.v_granularity

    def replace(self, **changes) -> "QuantConfig":
        """A copy with some fields changed (validated like a new instance)."""
        return dataclasses.replace(self, **changes)

    # --- named configurations ------------------------------------------------------------------------
    @classmethod
    def paper(cls) -> "QuantConfig":
        """The paper's configuration: INT8 Q, K per token, V per (batch, head), P = round(127 P), float l.

        V's scale is one number per (batch, head) matrix, as the authors' Triton code keeps it (its ``v_scale``
        has shape (B, H)); the paper's text says "per tensor", which would make a sequence's result depend on
        the rest of its batch.
        """
        return cls()

    @classmethod
    def none(cls, block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """No quantization at all: the same tile loop in float32, the oracle for the tiling itself."""
        return cls(block_m=block_m, block_n=block_n, qk_format="float32", pv_format="float32")

    @classmethod
    def fp16(cls, block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """FP16 FlashAttention: Q, K, V and P rounded to float16, products accumulated in float32."""
        return cls(block_m=block_m, block_n=block_n, qk_format="float16", pv_format="float16")

    @classmethod
    def fp8(cls, fmt: str = "e4m3", block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """FP8 FlashAttention without scales (as Triton's tutorial and the paper): ``fmt`` e4m3|e5m2."""
        if fmt not in ("e4m3", "e5m2"):
            raise ValueError(f"fmt: expected 'e4m3' or 'e5m2', got {fmt!r}")
        return cls(block_m=block_m, block_n=block_n, qk_format=f"fp8_{fmt}", pv_format=f"fp8_{fmt}")

    @classmethod
    def recommended(cls, block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """The project's recommended full-INT8 configuration (issue #6; docs/recommended.md).

        Q and K per token as the paper, K smoothed (its per-channel mean removed); V per block of
        ``block_n`` keys and channel; P codes taken against each row's max within the key tile with 255
        signed levels; the normalizer sums what multiplied V. Measured error and speed:
        docs/recommended.md.
        """
        return cls(block_m=block_m, block_n=block_n, v_granularity="block", p_quant="signed255",
                   p_scale="tile_max", normalizer="quantized", k_smoothing=True)

    @classmethod
    def half_int8(cls, block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """The paper's half-INT8: INT8 Q and K per token, P and V in float16."""
        return cls(block_m=block_m, block_n=block_n, pv_format="float16")


def n_blocks(n: int, block: int) -> int:
    """Number of tiles of ``block`` covering ``n`` items."""
    return -(-n // block)


def qk_scale_factor(scale: float) -> np.float32:
    """The float32 constant that turns dequantized scores into the exp2 domain: f32(scale * log2 e).

    The product is taken in float64 and rounded once, as a Python float passed to a Triton kernel is.
    """
    return np.float32(float(scale) * LOG2E)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
