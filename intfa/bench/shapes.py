"""The benchmark's shapes and suites, and what one call costs: its FLOPs and the bytes its operands occupy.

Pure Python (and :func:`sim.scale_shape`): no torch, no GPU, so that the suites and the byte counts are
tested on any machine.
"""

from __future__ import annotations

import dataclasses
import math

from sim import QuantConfig, scale_shape

__all__ = [
    "DECODE_BATCHES", "DECODE_CACHE_LENS", "DECODE_HEADS", "DECODE_HEAD_DIMS", "DECODE_KV_HEADS", "DECODE_SEQ_K",
    "DECODE_SEQ_Q", "FULL_SEQS", "OUT_BYTES", "PAPER_SEQS", "SUITES", "Shape", "attention_flops", "float_bytes",
    "int8_bytes", "suite_shapes",
]

#: Bytes of one output element: every provider writes float16.
OUT_BYTES = 2


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Shape:
    """One attention call: q (batch, heads, seq_q, head_dim), k and v (batch, kv_heads, seq_k, head_dim).

    heads : query heads (Hq). kv_heads : key/value heads (Hkv; default ``heads``), a divisor of ``heads``:
    Hq / Hkv query heads share each K/V head (grouped-query attention, ``enable_gqa``).
    """

    batch: int
    heads: int
    seq_q: int
    seq_k: int
    head_dim: int
    causal: bool
    kv_heads: int | None = None

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        for name in ("batch", "heads", "seq_q", "seq_k", "head_dim", "kv_heads"):
            _check_positive_int(name, getattr(self, name))
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads: expected a divisor of heads={self.heads}, got {self.kv_heads}")

    @property
    def flops(self) -> float:
        return attention_flops(self.batch, self.heads, self.seq_q, self.seq_k, self.head_dim, self.causal)

    @property
    def decode(self) -> bool:
        """Fewer queries than keys: a decoding step (or a chunk of prefill) against a cache."""
        return self.seq_q < self.seq_k

    @property
    def gqa(self) -> bool:
        """Grouped-query attention: fewer K/V heads than query heads."""
        return self.kv_heads != self.heads

    def label(self) -> str:
        mask = "causal" if self.causal else "full"
        heads = f"H{self.heads} Hkv{self.kv_heads}" if self.gqa else f"H{self.heads}"
        return f"B{self.batch} {heads} Nq{self.seq_q} Nk{self.seq_k} D{self.head_dim} {mask}"


def attention_flops(batch: int, heads: int, seq_q: int, seq_k: int, head_dim: int, causal: bool) -> float:
    """Operations of the attention forward: S = Q K^T and O = P V, 2 * Nq * Nk * D each per (batch, head).

    Causal attention counts half (the convention of FlashAttention's and Triton's benchmarks), whatever the
    exact fraction of the mask (slightly over half when Nq == Nk). ``heads`` are query heads: grouped-query
    attention does the same arithmetic on fewer K/V heads.
    """
    for name, value in (("batch", batch), ("heads", heads), ("seq_q", seq_q), ("seq_k", seq_k),
                        ("head_dim", head_dim)):
        _check_positive_int(name, value)
    flops = 4.0 * batch * heads * seq_q * seq_k * head_dim
    return flops / 2 if causal else flops


def _elements(shape: Shape) -> tuple[int, int]:
    """(elements of q and of the output, elements of k and of v)."""
    return (shape.batch * shape.heads * shape.seq_q * shape.head_dim,
            shape.batch * shape.kv_heads * shape.seq_k * shape.head_dim)


def float_bytes(shape: Shape, element_bytes: int = 2) -> int:
    """Bytes a provider on floating-point operands must move: q, k, v read once, the float16 output written once.

    element_bytes : of q, k and v (2 for float16, 1 for FP8).
    """
    q, kv = _elements(shape)
    return (q + 2 * kv) * element_bytes + q * OUT_BYTES


def int8_bytes(shape: Shape, config: QuantConfig) -> int:
    """Bytes attention over a pre-quantized INT8 cache must move: the int8 codes of q, k, v and their float32
    scales (shaped by ``config``'s granularities, :func:`sim.scale_shape`) read once, the float16 output written.
    """
    q, kv = _elements(shape)
    q_shape = (shape.batch, shape.heads, shape.seq_q, shape.head_dim)
    kv_shape = (shape.batch, shape.kv_heads, shape.seq_k, shape.head_dim)
    scales = (math.prod(scale_shape(q_shape, config.q_granularity, config.block_m))
              + math.prod(scale_shape(kv_shape, config.k_granularity, config.block_n))
              + math.prod(scale_shape(kv_shape, config.v_quant_granularity, config.block_n)))
    return q + 2 * kv + 4 * scales + q * OUT_BYTES


# --- suites -------------------------------------------------------------------------------------------------------

PAPER_SEQS = (1024, 2048, 4096, 8192, 16384)
FULL_SEQS = (1024, 2048, 4096, 8192, 16384, 32768)
#: The full suite's decode-shaped calls (B=4, H=32): Nq against Nk.
DECODE_SEQ_Q = (1, 4, 16)
DECODE_SEQ_K = (8192, 32768)
#: The decode suite (issue 10): batch, query heads, K/V heads, cache lengths, head dims; Nq as DECODE_SEQ_Q.
DECODE_BATCHES = (1, 8, 32)
DECODE_HEADS = 32
DECODE_KV_HEADS = (32, 8)
DECODE_CACHE_LENS = (4096, 16384, 32768, 65536, 131072)
DECODE_HEAD_DIMS = (64, 128)

SUITES = ("paper", "full", "decode")


def suite_shapes(suite: str) -> list[Shape]:
    """The shapes of a suite, in the order they are measured.

    paper:  B=4, H=32, D=64, N = 1k..16k, non-causal (the paper's figure).
    full:   B=4, H=32, D in (64, 128), causal and not, N = 1k..32k; then decode-shaped calls, Nq in (1, 4, 16)
            against Nk in (8k, 32k), non-causal only: torch's causal mask is top-left aligned, so with Nq < Nk
            it would let query 0 see key 0 alone, which is no decoding step.
    decode: a decoding step against a long cache (issue 10): B in (1, 8, 32), Hq=32 with Hkv in (32, 8),
            Nk = 4k..128k, D in (64, 128), Nq in (1, 4, 16), non-causal (as above). Shapes whose cache does not
            fit the GPU are skipped when measured, as in every suite.
    """
    if suite == "paper":
        return [Shape(4, 32, n, n, 64, False) for n in PAPER_SEQS]
    if suite == "full":
        prefill = [Shape(4, 32, n, n, d, c) for d in (64, 128) for c in (False, True) for n in FULL_SEQS]
        decode = [Shape(4, 32, nq, nk, d, False) for d in (64, 128) for nk in DECODE_SEQ_K for nq in DECODE_SEQ_Q]
        return prefill + decode
    if suite == "decode":
        return [Shape(b, DECODE_HEADS, nq, nk, d, False, kv_heads=hkv)
                for d in DECODE_HEAD_DIMS for b in DECODE_BATCHES for hkv in DECODE_KV_HEADS
                for nk in DECODE_CACHE_LENS for nq in DECODE_SEQ_Q]
    raise ValueError(f"suite: expected one of {SUITES}, got {suite!r}")
