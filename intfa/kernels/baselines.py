"""The project's own FP16/BF16 and FP8 FlashAttention forward kernels: the baselines INT8 is measured against.

One Triton kernel serves both precisions. It is FlashAttention-2's forward pass (one program per BLOCK_M query
rows of one (batch, head), online softmax in the exp2 domain over BLOCK_N-key tiles) and computes, up to the
order of float32 operations inside ``tl.dot`` and ``exp2``, what ``sim.attention`` computes under
``sim.QuantConfig.fp16()`` / ``QuantConfig.fp8()``:

    S   = (Q @ K_j^T) * f32(scale * log2 e)           float32 accumulation of 16- or 8-bit products
    m'  = max(m, rowmax(S));  P = exp2(S - m')
    l   = exp2(m - m') * l + rowsum(P)                 the float P (sim's normalizer "float")
    acc = exp2(m - m') * acc + P.to(V's format) @ V_j
    O   = acc / l

FP8 is e4m3 without scales, as in Triton's tutorial and the paper's FP8 baseline: inputs beyond +-448 saturate
(as ``sim.round_to_format`` does). On Hopper, 8-bit ``wgmma`` reads both operands K-major (contiguous along the
reduction). For S = Q K^T the reduction runs over head_dim, which K's usual (seq, head_dim) layout already has
contiguous; for P V it runs over the keys, so FP8 V must be stored sequence-contiguous ("V transposed").
:func:`fp8_operands` builds that layout; the kernel itself is stride-generic and simply reads V through its
strides, so the same code handles both layouts.

Tail handling: queries and keys may have any length >= 1. The key loop is split in two, as the tutorial splits
causal attention by stage: tiles that need no mask at all (every key exists and, when causal, lies at or before
every query of the tile) run without mask arithmetic; the remaining tiles (the diagonal band and the last
partial tile) apply ``key < seq_k`` and, when causal, ``key <= query`` (top-left alignment, as torch SDPA).
Every query row sees key 0 in its first tile, so no row is ever all masked and no NaN can arise.

CUDA tensors run compiled and autotuned over the H100-oriented tile list below; CPU tensors run under Triton's
interpreter, which must be switched on (``TRITON_INTERPRET=1``) before this module is imported (the interpreter's
FP8 casts are mended in :mod:`intfa.runtime`).
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from sim import check_attention_shapes, qk_scale_factor

from ..runtime import FP8_E4M3_MAX, check_device, interpreted

__all__ = ["SUPPORTED_HEAD_DIMS", "TileConfig", "flash_attention_fp8", "flash_attention_fp16", "fp8_operands"]

SUPPORTED_HEAD_DIMS = (32, 64, 128)
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = FP8_E4M3_MAX  # largest finite e4m3fn value
# FP8 V rows (one per head_dim channel, holding the keys) start on 16-byte boundaries, so that the kernel's
# 8-bit loads of V tiles can be 16 bytes wide whatever seq_k is.
_FP8_V_ROW_ALIGN = 16


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """One launch configuration: query rows and keys per tile, warps per program, software-pipeline depth."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
                raise ValueError(f"TileConfig.{name}: expected a power of two >= 16, got {value!r}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"TileConfig.num_warps: expected 1, 2, 4, 8 or 16, got {self.num_warps!r}")
        if isinstance(self.num_stages, bool) or not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"TileConfig.num_stages: expected a positive int, got {self.num_stages!r}")


# The interpreter's default: small tiles, so that small test shapes still cross several tiles and tails.
INTERPRETER_TILE = TileConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)


# --- the kernel ---------------------------------------------------------------------------------------------------


@triton.jit
def _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, key_lo, key_hi, offs_m, offs_n, seq_k,
               qk_scale, IS_CAUSAL: tl.constexpr, MASKED: tl.constexpr, BLOCK_N: tl.constexpr):
    """Online softmax over the key tiles [key_lo, key_hi); MASKED tiles check key bounds (and causality)."""
    k_ptrs += key_lo * stride_kn
    v_ptrs += key_lo * stride_vn
    for start_n in range(key_lo, key_hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        keys = start_n + offs_n
        if MASKED:
            key_exists = keys < seq_k
            k = tl.load(k_ptrs, mask=key_exists[None, :], other=0.0)
        else:
            k = tl.load(k_ptrs)
        qk = tl.dot(q, k)  # (BLOCK_M, BLOCK_N) float32
        if MASKED:
            keep = key_exists[None, :]
            if IS_CAUSAL:
                keep = keep & (keys[None, :] <= offs_m[:, None])
            s = tl.where(keep, qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            s = s - m_new[:, None]
        else:
            # qk_scale > 0, so max(qk) * qk_scale is exactly max(qk * qk_scale); scaling inside the subtraction
            # leaves one fused multiply-add per score.
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            s = qk * qk_scale - m_new[:, None]
        p = tl.math.exp2(s)
        alpha = tl.math.exp2(m_i - m_new)  # 0 on a row's first tile (m_i = -inf)
        l_i = l_i * alpha + tl.sum(p, 1)
        if MASKED:
            v = tl.load(v_ptrs, mask=key_exists[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype, fp_downcast_rounding="rtne"), v, acc)  # Triton's default, as sim rounds
        m_i = m_new
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["seq_q", "seq_k"])
def _attn_fwd_kernel(Q, K, V, Out,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd,
                     stride_ob, stride_oh, stride_om, stride_od,
                     heads, seq_q, seq_k, qk_scale,
                     HEAD_DIM: tl.constexpr, IS_CAUSAL: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Grid (cdiv(seq_q, BLOCK_M), batch * heads). Q, K, V, Out are (B, H, N, D) through their strides."""
    if IS_CAUSAL:
        # The last query tiles have the most keys: launch them first so that the short ones fill the tail.
        start_m = tl.num_programs(0) - 1 - tl.program_id(0)
    else:
        start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // heads).to(tl.int64)
    h = (bh % heads).to(tl.int64)

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_exists = offs_m < seq_q

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=row_exists[:, None], other=0.0)
    # K is read as K^T tiles (HEAD_DIM, BLOCK_N) and V as (BLOCK_N, HEAD_DIM) tiles.
    k_ptrs = K + b * stride_kb + h * stride_kh + offs_d[:, None] * stride_kd + offs_n[None, :] * stride_kn
    v_ptrs = V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)

    # Keys [0, unmasked_end) need no mask: they exist and (causal) precede every query row of this tile.
    if IS_CAUSAL:
        key_end = tl.minimum(seq_k, (start_m + 1) * BLOCK_M)
        unmasked_end = tl.minimum(seq_k, start_m * BLOCK_M)
    else:
        key_end = seq_k
        unmasked_end = seq_k
    unmasked_end = (unmasked_end // BLOCK_N) * BLOCK_N

    acc, l_i, m_i = _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, 0, unmasked_end,
                               offs_m, offs_n, seq_k, qk_scale, IS_CAUSAL, False, BLOCK_N)
    acc, l_i, m_i = _tile_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn, unmasked_end, key_end,
                               offs_m, offs_n, seq_k, qk_scale, IS_CAUSAL, True, BLOCK_N)

    out = acc / l_i[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_exists[:, None])


# --- tile choice for the H100 -------------------------------------------------------------------------------------

# Candidates for Hopper (H100: 132 SMs, 227 KB shared memory per block, wgmma over 64-row warpgroups).
# Prefill tiles take 128 query rows (two warpgroups with 8 warps); decode-shaped calls (few query rows) take 64,
# the smallest wgmma M, since a larger tile would only multiply padding rows. Kept short on purpose: every
# candidate is compiled per (dtype, head_dim, causal), and the benchmark must finish in minutes.
_CANDIDATE_TILES = [
    TileConfig(128, 64, num_warps=4, num_stages=3),
    TileConfig(128, 64, num_warps=8, num_stages=3),
    TileConfig(128, 128, num_warps=8, num_stages=3),
    TileConfig(128, 128, num_warps=8, num_stages=2),
    TileConfig(64, 64, num_warps=4, num_stages=3),
    TileConfig(64, 128, num_warps=4, num_stages=3),
]
_DECODE_MAX_ROWS = 64  # seq_q at or below this is decode-shaped
_SHARED_MEMORY_BUDGET = 200 * 1024  # below the 227 KB limit: leave room for layout conversions


def _shared_memory_estimate(tile: TileConfig, head_dim: int, elem_bytes: int) -> int:
    """Bytes of shared memory: the Q tile plus num_stages buffered (K, V) tile pairs."""
    return (tile.block_m * head_dim + tile.num_stages * 2 * tile.block_n * head_dim) * elem_bytes


def _tile_fits(tile: TileConfig, seq_q: int, head_dim: int, elem_bytes: int) -> bool:
    decode = seq_q <= _DECODE_MAX_ROWS
    if (tile.block_m == 64) != decode:
        return False
    return _shared_memory_estimate(tile, head_dim, elem_bytes) <= _SHARED_MEMORY_BUDGET


def _prune_tiles(configs, named_args, **kwargs):
    """Autotuner hook: keep the candidates that suit this call's shape and fit in shared memory."""
    args = {**named_args, **kwargs}
    seq_q, head_dim, elem_bytes = args["seq_q"], args["HEAD_DIM"], args["Q"].element_size()
    kept = [c for c in configs if _tile_fits(_as_tile(c), seq_q, head_dim, elem_bytes)]
    return kept or configs[:1]


def _as_tile(config: triton.Config) -> TileConfig:
    return TileConfig(config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages)


def _autotune_bench(kernel_call, quantiles):
    # Shorter than do_bench's 25/100 ms defaults: tuning a handful of candidates per shape must stay cheap.
    return triton.testing.do_bench(kernel_call, warmup=10, rep=40, quantiles=quantiles)


_attn_fwd_tuned = triton.autotune(
    configs=[
        triton.Config({"BLOCK_M": t.block_m, "BLOCK_N": t.block_n}, num_warps=t.num_warps, num_stages=t.num_stages)
        for t in _CANDIDATE_TILES
    ],
    key=["seq_q", "seq_k", "HEAD_DIM", "IS_CAUSAL"],  # the tuner adds the tensors' dtypes to the key itself
    prune_configs_by={"early_config_prune": _prune_tiles},
    do_bench=_autotune_bench,
)(_attn_fwd_kernel)


# --- wrappers -----------------------------------------------------------------------------------------------------


def _check_tensors(q, k, v, *, dtypes, is_causal, scale):
    for name, x in (("query", q), ("key", k), ("value", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in dtypes:
            raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"key, value: expected the dtype of query ({q.dtype}), got {k.dtype} and {v.dtype}")
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal: expected a bool, got {type(is_causal).__name__}")
    shape = check_attention_shapes(tuple(q.shape), tuple(k.shape), tuple(v.shape), enable_gqa=False, scale=scale)
    if shape.head_dim not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"query: expected head_dim in {SUPPORTED_HEAD_DIMS}, got {shape.head_dim}")
    if check_device({"query": q, "key": k, "value": v}).type == "cpu" and q.dtype == torch.bfloat16:
        raise TypeError(_NO_BF16_ON_CPU.format(name="query"))
    return shape


# Triton 3.6's interpreter keeps bfloat16 as raw uint16 bits: tl.dot multiplies the bit patterns as integers and
# float32 -> bfloat16 casts drop rounding carries, so the results would be wrong, not merely inexact.
_NO_BF16_ON_CPU = "{name}: bfloat16 runs on CUDA only (Triton's interpreter computes bfloat16 wrongly); use float16"


def _launch(q, k, v, out, shape, is_causal: bool, tile: TileConfig | None):
    """Run the kernel on (B, H, N, D)-strided q, k, v into out; tile None means autotuned (or the interpreter's)."""
    args = (
        q, k, v, out,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        shape.heads_q, shape.seq_q, shape.seq_k, float(qk_scale_factor(shape.scale)),
    )
    constexprs = {"HEAD_DIM": shape.head_dim, "IS_CAUSAL": is_causal}
    if tile is None and not interpreted():

        def grid(meta):
            return triton.cdiv(shape.seq_q, meta["BLOCK_M"]), shape.batch * shape.heads_q

        _attn_fwd_tuned[grid](*args, **constexprs)
        return out
    tile = INTERPRETER_TILE if tile is None else tile
    if not isinstance(tile, TileConfig):
        raise TypeError(f"tile: expected an intfa.kernels.baselines.TileConfig or None, got {type(tile).__name__}")
    if q.dtype == FP8_DTYPE and tile.block_n < 32 and not interpreted():
        raise ValueError(f"tile: 8-bit tensor-core products need block_n >= 32 (their K step), got {tile.block_n}")
    grid = (triton.cdiv(shape.seq_q, tile.block_m), shape.batch * shape.heads_q)
    _attn_fwd_kernel[grid](*args, **constexprs, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
                           num_warps=tile.num_warps, num_stages=tile.num_stages)
    return out


def flash_attention_fp16(q, k, v, *, is_causal=False, scale=None, tile=None):
    """FlashAttention forward in FP16 or BF16: softmax(scale * Q K^T) V with float32 accumulation.

    Parameters
    ----------
    q : (B, H, Nq, D) float16 or bfloat16; k, v : (B, H, Nk, D), same dtype and device. Any strides.
        D in (32, 64, 128); Nq, Nk >= 1. No GQA (H must match).
    is_causal : top-left causal mask as torch SDPA (query i sees keys 0..i).
    scale : softmax scale, default 1/sqrt(D); must be positive.
    tile : a :class:`TileConfig` to launch with, or None: autotuned on CUDA, :data:`INTERPRETER_TILE` on CPU.

    Returns (B, H, Nq, D) contiguous, the dtype of q. P is rounded to q's dtype before P @ V.
    CPU tensors (Triton's interpreter) must be float16: the interpreter mishandles bfloat16.
    """
    shape = _check_tensors(q, k, v, dtypes=(torch.float16, torch.bfloat16), is_causal=is_causal, scale=scale)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    return _launch(q, k, v, out, shape, is_causal, tile)


def fp8_operands(q, k, v):
    """Cast fp16/bf16/fp32 (B, H, N, D) q, k, v to unscaled e4m3 FP8 in the layout the FP8 kernel wants.

    Values beyond +-448 saturate to +-448, explicitly, as ``sim.round_to_format`` does. Returns ``(q8, k8, v8)``, all
    ``torch.float8_e4m3fn`` with the shapes of the inputs; q8 and k8 contiguous, v8 a (B, H, Nk, D) view of
    sequence-contiguous storage (B, H, D, Nk_padded): ``v8.stride(-2) == 1``, each channel's row of keys
    starting on a 16-byte boundary. Do this once, outside any timed region.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point() or x.dtype == FP8_DTYPE:
            raise TypeError(f"{name}: expected a float16/bfloat16/float32 tensor, got {x.dtype}")
        if x.dim() != 4:
            raise ValueError(f"{name}: expected 4 dimensions (batch, heads, seq, head_dim), got {tuple(x.shape)}")

    q8, k8 = (_saturate_to_fp8(x).contiguous() for x in (q, k))
    return q8, k8, _sequence_contiguous(_saturate_to_fp8(v))


def _saturate_to_fp8(x):
    return x if x.dtype == FP8_DTYPE else x.clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def _sequence_contiguous(v):
    """(B, H, Nk, D) -> the same values as a view of (B, H, D, Nk_padded) storage, rows 16-byte aligned."""
    b, h, nk, d = v.shape
    nk_padded = triton.cdiv(nk, _FP8_V_ROW_ALIGN) * _FP8_V_ROW_ALIGN
    storage = torch.zeros((b, h, d, nk_padded), dtype=v.dtype, device=v.device)
    storage[..., :nk] = v.transpose(-1, -2)
    return storage[..., :nk].transpose(-1, -2)


def flash_attention_fp8(q, k, v, *, is_causal=False, scale=None, out_dtype=torch.float16, tile=None):
    """FlashAttention forward with unscaled FP8 e4m3 Q, K, V and P, float32 accumulation.

    Accepts either
    - float16/bfloat16 q, k, v (B, H, N, D): cast here by :func:`fp8_operands` (saturating, V transposed). The
      cast is part of the call; to time attention alone, cast once beforehand; or
    - ``torch.float8_e4m3fn`` q, k, v, e.g. from :func:`fp8_operands`: used as they are, except that a V which is
      not sequence-contiguous (``v.stride(-2) != 1``) is copied into that layout first (slow; do it beforehand).

    D in (32, 64, 128); Nq, Nk >= 1; no GQA. ``is_causal`` and ``scale`` as :func:`flash_attention_fp16`.
    Returns (B, H, Nq, D) contiguous in ``out_dtype`` (float16 or bfloat16; float16 only on CPU).
    """
    if out_dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(f"out_dtype: expected torch.float16 or torch.bfloat16, got {out_dtype}")
    if out_dtype == torch.bfloat16 and interpreted():
        raise TypeError(_NO_BF16_ON_CPU.format(name="out_dtype"))
    if all(isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16) for x in (q, k, v)):
        _check_tensors(q, k, v, dtypes=(torch.float16, torch.bfloat16), is_causal=is_causal, scale=scale)
        q, k, v = fp8_operands(q, k, v)
    shape = _check_tensors(q, k, v, dtypes=(FP8_DTYPE,), is_causal=is_causal, scale=scale)
    if v.stride(-2) != 1:
        v = _sequence_contiguous(v)
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    return _launch(q, k, v, out, shape, is_causal, tile)
