"""The one configuration vocabulary of the project.

Everything that decides what a number in INT-FlashAttention is (scale granularities, tile sizes,
operand formats, how P is quantized, which normalizer divides the output) is a field of
:class:`QuantConfig`. The simulator reads it; the Triton kernels in ``intfa`` import it from here and
follow it. ``docs/spec.md`` gives the floating-point operations each choice implies.
"""

from __future__ import annotations

import dataclasses
import json
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
#: Granularities of the peers' recipes, simulated only (docs/spec.md 7; the Triton kernels do not run them).
#: Q "warp": one scale per (batch, head) and ``warp_rows`` consecutive queries, the rows one warp of the query tile
#: multiplies (SageAttention2's per-warp quantization). Q "thread": within those rows, the rows one thread holds in
#: an m16n8 MMA accumulator, rows r, r + 8, r + 16, ... (SageAttention2's per-thread quantization): 8 scales a warp.
PEER_Q_GRANULARITIES = ("warp", "thread")
#: K "thread": within each key tile of ``block_n`` keys, the keys one thread holds as MMA columns, those with equal
#: (key % 8) // 2 (SageAttention2's per-thread quantization of K): 4 scales a key tile.
PEER_K_GRANULARITIES = ("thread",)
#: V "tile": one scale per (batch, head) and key tile of ``block_n`` keys, all channels (FlashAttention-3's block
#: quantization of V).
PEER_V_GRANULARITIES = ("tile",)
#: What :func:`sim.quantize` and the torch API's quantizer accept: the above, with V's "block" spelled out as
#: "block_channel".
QUANT_GRANULARITIES = ("tensor", "head", "token", "channel", "block", "block_channel")
#: What :func:`sim.quantize` accepts besides: the interleaved groups of the per-thread granularities, "thread_q"
#: (rows r, r + 8, ... of each ``block_size`` rows) and "thread_k" (keys with equal (key % 8) // 2 of each
#: ``block_size`` keys); docs/spec.md 2.
PEER_QUANT_GRANULARITIES = ("thread_q", "thread_k")
#: Scale groups per ``block_size`` rows of the per-thread granularities.
THREAD_GROUPS = {"thread_q": 8, "thread_k": 4}
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

#: How an FP8 tensor-core product accumulates (FP8 operands only; docs/spec.md 3.4). "float32": as float32 BLAS, the
#: spec's arithmetic for every other format. "fp22": in the MMA's accumulator, which on Ada and Hopper keeps 13
#: fraction bits (SageAttention2 measures 22 effective bits: 1 sign, 8 exponent, 13 mantissa), every chunk of
#: :data:`MMA_K_FP8` products added into it and the sum truncated; P @ V accumulates into the running output itself
#: (FlashAttention-3). "fp22+float32": P @ V of each key tile accumulates in that register from zero and is then
#: added into a float32 accumulator (SageAttention2's two-level accumulation).
FP8_ACCUMULATIONS = ("float32", "fp22", "fp22+float32")
#: Fraction bits the FP8 MMA accumulator keeps ("FP22": e8m13).
FP22_FRACTION_BITS = 13
#: Products one FP8 MMA instruction reduces (mma.m16n8k32, wgmma with k = 32): the chunk that enters the accumulator.
MMA_K_FP8 = 32
#: Largest finite value of each FP8 format: what a scaled FP8 operand's group maximum maps to.
FP8_MAX = {"fp8_e4m3": 448.0, "fp8_e5m2": 57344.0}
#: How P in [0, 1] enters an FP8 P @ V product. "one": rounded to the format as it is (FlashAttention-3; e4m3 keeps
#: 4 significant bits, values below 2**-10 round to 0). "fp8_max": multiplied by the format's largest finite value
#: first, a static scale (SageAttention2's 448 for e4m3), and divided out at the end like P's integer levels.
P_FP8_SCALES = ("one", "fp8_max")

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

    The peers' recipes (docs/spec.md 7; sim only, the torch API refuses them: :attr:`simulated_only`) add Q
    granularities "warp" and "thread", K "thread", V "tile" (module constants ``PEER_*``) and:

    warp_rows : int
        Query rows per warp for Q "warp" and "thread" (a power of two >= 16 dividing ``block_m``).
    fp8_scaled : bool
        FP8 operands get float32 scales at the configured granularities, ``amax / FP8_MAX``, before they are
        rounded to the format (False: unscaled, the paper's FP8 baseline).
    p_fp8_scale : "one" | "fp8_max"
        How P enters an FP8 P @ V: as it is, or times the format's largest value (a static scale).
    fp8_accumulation : "float32" | "fp22" | "fp22+float32"
        How FP8 products accumulate (:data:`FP8_ACCUMULATIONS`): as float32, or in the FP8 MMA's 13-fraction-bit
        accumulator, P @ V straight into the running output ("fp22") or per key tile then into float32.
    v_smoothing : bool
        Subtract each (batch, head, channel)'s mean over the keys from V before quantizing it and add it back to
        the output (exact where l sums what multiplied V: the weights then sum to one).
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
    warp_rows: int = 32
    fp8_scaled: bool = False
    p_fp8_scale: str = "one"
    fp8_accumulation: str = "float32"
    v_smoothing: bool = False

    def __post_init__(self):
        _check_choice("q_granularity", self.q_granularity, QK_GRANULARITIES + PEER_Q_GRANULARITIES)
        _check_choice("k_granularity", self.k_granularity, QK_GRANULARITIES + PEER_K_GRANULARITIES)
        _check_choice("v_granularity", self.v_granularity, V_GRANULARITIES + PEER_V_GRANULARITIES)
        _check_choice("qk_format", self.qk_format, QK_FORMATS)
        _check_choice("pv_format", self.pv_format, PV_FORMATS)
        _check_choice("p_quant", self.p_quant, P_QUANTS)
        _check_choice("p_scale", self.p_scale, P_SCALES)
        _check_choice("normalizer", self.normalizer, NORMALIZERS)
        _check_choice("p_fp8_scale", self.p_fp8_scale, P_FP8_SCALES)
        _check_choice("fp8_accumulation", self.fp8_accumulation, FP8_ACCUMULATIONS)
        for name in ("k_smoothing", "fp8_scaled", "v_smoothing"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"QuantConfig.{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        fp8_used = [f for f in (self.qk_format, self.pv_format) if f in FP8_MAX]
        for name, value, default in (("fp8_scaled", self.fp8_scaled, False),
                                     ("fp8_accumulation", self.fp8_accumulation, "float32")):
            if value != default and not fp8_used:
                raise ValueError(f"QuantConfig.{name}: {value!r} needs an FP8 qk_format or pv_format, got "
                                 f"{self.qk_format!r} and {self.pv_format!r}")
        if self.p_fp8_scale != "one" and self.pv_format not in FP8_MAX:
            raise ValueError(f"QuantConfig.p_fp8_scale: {self.p_fp8_scale!r} needs an FP8 pv_format, got "
                             f"{self.pv_format!r}")
        if self.p_scale != "fixed" and self.pv_format != "int8":
            raise ValueError(f"QuantConfig.p_scale: {self.p_scale!r} needs pv_format 'int8', got {self.pv_format!r}")
        for name in ("block_m", "block_n", "warp_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"QuantConfig.{name}: expected an int, got {type(value).__name__}")
            if value < 16 or value & (value - 1):
                raise ValueError(f"QuantConfig.{name}: expected a power of two >= 16, got {value}")
        if self.q_granularity in PEER_Q_GRANULARITIES and self.warp_rows > self.block_m:
            raise ValueError(f"QuantConfig.warp_rows: Q {self.q_granularity!r} needs warp_rows <= block_m "
                             f"({self.block_m}), got {self.warp_rows}")
        # P8 @ V8 sums block_n products of at most levels * 127: it must stay below 2**24 to be exact
        # in float32 (sim's BLAS) as in int32 converted once (the kernel).
        if self.pv_format == "int8" and self.block_n * 127 * P_LEVELS[self.p_quant] >= 2**24:
            raise ValueError(
                f"QuantConfig.block_n: expected block_n * 127 * {P_LEVELS[self.p_quant]} < 2**24 "
                f"(P8 @ V8 must be exact), got {self.block_n}"
            )
        # The canonical string form (fields_json), made once: attribute reads are all torch.compile's tracer needs.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields = {name: value.item() if isinstance(value, np.generic) else value for name, value in fields.items()}
        object.__setattr__(self, "_fields_json", json.dumps(fields, sort_keys=True))

    @property
    def fields_json(self) -> str:
        """The fields as JSON (sorted keys, NumPy scalars as Python's): one string that names the configuration.

        ``QuantConfig(**json.loads(c.fields_json)) == c``. intfa's custom operators take the configuration in this
        form (an operator's schema holds no Python objects); it is computed when the instance is made, so that
        reading it under ``torch.compile`` is an attribute read, which every torch version traces.
        """
        return self._fields_json

    # --- derived facts -------------------------------------------------------------------------------
    @property
    def qk_is_int(self) -> bool:
        return self.qk_format in INT_FORMATS

    @property
    def pv_is_int(self) -> bool:
        return self.pv_format == "int8"

    @property
    def qk_scaled(self) -> bool:
        """Q and K carry float32 scales: integer codes, or scaled FP8 (:attr:`fp8_scaled`)."""
        return self.qk_is_int or (self.fp8_scaled and self.qk_format in FP8_MAX)

    @property
    def pv_scaled(self) -> bool:
        """V carries float32 scales at :attr:`v_granularity`: INT8 V, or scaled FP8 V."""
        return self.pv_is_int or (self.fp8_scaled and self.pv_format in FP8_MAX)

    @property
    def qk_qmax(self) -> float:
        """Largest code of Q and K (127 for int8, 7 for int4; the format's largest value for scaled FP8)."""
        return INT_FORMATS[self.qk_format] if self.qk_is_int else FP8_MAX[self.qk_format]

    @property
    def p_levels(self) -> float:
        """Units the accumulator counts P in: 127 or 255 for int8 P, the FP8 maximum for a static-scaled FP8 P
        (``p_fp8_scale="fp8_max"``), 1 for other float P."""
        if self.pv_is_int:
            return P_LEVELS[self.p_quant]
        return FP8_MAX[self.pv_format] if self.p_fp8_scale == "fp8_max" else 1

    @property
    def simulated_only(self) -> list[str]:
        """The settings of this configuration that only sim runs (the peers' recipes, docs/spec.md 7): empty for
        what the Triton kernels implement. The torch API refuses a configuration with any of these."""
        found = [f"q_granularity {self.q_granularity!r}"] if self.q_granularity in PEER_Q_GRANULARITIES else []
        if self.k_granularity in PEER_K_GRANULARITIES:
            found.append(f"k_granularity {self.k_granularity!r}")
        if self.v_granularity in PEER_V_GRANULARITIES:
            found.append(f"v_granularity {self.v_granularity!r}")
        for name, default in (("fp8_scaled", False), ("p_fp8_scale", "one"), ("fp8_accumulation", "float32"),
                              ("v_smoothing", False)):
            if getattr(self, name) != default:
                found.append(f"{name} {getattr(self, name)!r}")
        return found

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
        if self.qk_scaled:
            used += [self.q_granularity, self.k_granularity]
        if self.pv_scaled:
            used.append(self.v_granularity)
        return "tensor" not in used

    @property
    def q_quant_granularity(self) -> str:
        """Q's granularity in :func:`sim.quantize`'s vocabulary (with :attr:`q_quant_block` as its block size)."""
        return {"warp": "block", "thread": "thread_q"}.get(self.q_granularity, self.q_granularity)

    @property
    def q_quant_block(self) -> int:
        """The block size of Q's scale groups: ``warp_rows`` for "warp" and "thread", else ``block_m``."""
        return self.warp_rows if self.q_granularity in PEER_Q_GRANULARITIES else self.block_m

    @property
    def k_quant_granularity(self) -> str:
        """K's granularity in :func:`sim.quantize`'s vocabulary (block size ``block_n``)."""
        return "thread_k" if self.k_granularity == "thread" else self.k_granularity

    @property
    def v_quant_granularity(self) -> str:
        """V's granularity in :func:`sim.quantize`'s vocabulary (block size ``block_n``)."""
        return {"block": "block_channel", "tile": "block"}.get(self.v_granularity, self.v_granularity)

    @property
    def v_tile_scaled(self) -> bool:
        """V's scales change from key tile to key tile: the loop applies them to each tile's P @ V."""
        return self.pv_scaled and self.v_quant_granularity in ("block", "block_channel")

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

    # --- the peers' recipes (simulated only; docs/spec.md 7) ----------------------------------------------
    @classmethod
    def sage_attention2(cls, qk: str = "warp", *, block_m: int = 128, block_n: int = 64, warp_rows: int = 32,
                        v_smoothing: bool = False) -> "QuantConfig":
        """SageAttention2's recipe (arXiv 2411.10958), as sim emulates it.

        K smoothed (its per-(batch, head) channel mean removed); Q and K INT8, ``qk="warp"``: Q per warp of
        ``warp_rows`` queries and K per key tile, or ``qk="thread"``: Q and K per MMA thread; V in FP8 e4m3 with
        one scale per channel; P times 448 (a static scale) rounded to e4m3; P @ V accumulated in the FP8 MMA's
        FP22 register per key tile and then added into float32 (two-level accumulation); l sums the float P.
        Tiles as their Ada/Hopper CUDA kernels (128 queries, 64 keys, 4 warps). ``v_smoothing``: their optional V
        smoothing.
        """
        if qk not in ("warp", "thread"):
            raise ValueError(f"qk: expected 'warp' or 'thread', got {qk!r}")
        return cls(q_granularity=qk, k_granularity="block" if qk == "warp" else "thread", v_granularity="channel",
                   block_m=block_m, block_n=block_n, warp_rows=warp_rows, qk_format="int8", pv_format="fp8_e4m3",
                   fp8_scaled=True, p_fp8_scale="fp8_max", fp8_accumulation="fp22+float32", k_smoothing=True,
                   v_smoothing=v_smoothing)

    @classmethod
    def fa3_fp8(cls, block_m: int = 128, block_n: int = 128) -> "QuantConfig":
        """FlashAttention-3's FP8 recipe (arXiv 2407.08608), as sim emulates it, without incoherent processing.

        Q, K and V in FP8 e4m3, each with one float32 scale per tile (Q: ``block_m`` queries, K and V: ``block_n``
        keys; the paper's block quantization); P rounded to e4m3 as it is; both products in the FP8 MMA's FP22
        accumulator, P @ V straight into the running output; l sums the float P.
        """
        return cls(q_granularity="block", k_granularity="block", v_granularity="tile", block_m=block_m,
                   block_n=block_n, qk_format="fp8_e4m3", pv_format="fp8_e4m3", fp8_scaled=True,
                   fp8_accumulation="fp22")


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
