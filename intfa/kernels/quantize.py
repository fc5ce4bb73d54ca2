"""Symmetric INT8 quantization in Triton: exactly :func:`sim.quantize`, at every 8-bit granularity.

The rule (sim/quant.py, one float32 operation at a time)::

    amax  = max(max |x| over the group, AMAX_FLOOR)
    scale = amax / 127            (IEEE division: tl.div_rn, not the approximate `/`)
    inv   = 127 / amax            (IEEE division)
    y     = x * inv
    code  = clip(round_half_even(y), -127, 127)

Rounding is ``sim.round_half_even``: ``bits(y + 1.5 * 2**23) - bits(1.5 * 2**23)``, one IEEE float32
add (whose round-to-nearest-even *is* the rule, for |y| < 2**22; here |y| <= 127 + an ulp) and an
integer subtract, with no float-to-int conversion instruction. It is the same in NumPy, in Triton's
interpreter and compiled. The kernels launch with ``enable_fp_fusion=False``: a fused multiply-add
would compute ``x * inv + 1.5 * 2**23`` with one rounding instead of sim's two.

Granularities (scale shapes as sim's, x of shape (B, H, N, D)):

=================  =====================  ===========================================================
granularity        scales                 passes over x
=================  =====================  ===========================================================
"token"            (B, H, N, 1)           one: each program owns whole rows
"block"            (B, H, ceil(N/bs), 1)  one: each program owns one block of ``bs`` tokens
"block_channel"    (B, H, ceil(N/bs), D)  one: as "block", a scale per channel of the block
"channel"          (B, H, 1, D)           two: an abs-max kernel first (atomic max per channel)
"head"             (B, H, 1, 1)           two: an abs-max kernel first (atomic max per (batch, head))
"tensor"           (1, 1, 1, 1)           two: an abs-max kernel first (one atomic max)
=================  =====================  ===========================================================

The group of a per-channel, per-head or per-tensor scale spans every token, so its max is known only after a
full read: :func:`_absmax_kernel` reduces a chunk of tiles per program in registers and folds the
result into an int32 buffer of bit patterns with an integer ``tl.atomic_max`` (max is
order-independent, so the result is deterministic), then the quantize kernel reads x a second time, visiting the tiles in reverse order
so that its first reads hit what the abs-max pass left in L2.

Finiteness is checked in the same pass, at no extra memory traffic: max |x| is reduced as an integer
max of the float32 bit patterns with the sign cleared (:func:`_abs_bits`: the same max for every
finite value, and NaN patterns rank above inf's, where a float max would drop a NaN), so a group's
max is finite exactly when the whole group is, and a program whose group max is NaN or inf stores 1
into a one-element int32 flag. The caller reads the flag once, after the launches (see
:func:`intfa.quantize`).

Bandwidth: each program loads a (ROWS, BLOCK_D) tile of about 8K elements (16-byte vector loads when
the head dim is contiguous: the head dim is a compile-time constant, so no mask splits a vector) and
stores the int8 codes with the same tile. The codes can be written with the sequence contiguous
(memory (B, H, D, N), returned as a transposed view with logical shape (B, H, N, D)): that is the
K-major layout Hopper's 8-bit wgmma wants for V in P8 @ V8, as in Triton's FP8 attention tutorial;
the sequence stride is then the constant 1 and Triton's coalescing pass transposes the tile through
shared memory so that each store writes consecutive tokens.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sim.config import AMAX_FLOOR, INT_FORMATS, QUANT_GRANULARITIES
from sim.quant import scale_shape

from .common import round_clip

#: Group kinds, as constexpr integers the kernels branch on.
_ROW, _BLOCK, _BLOCK_CHANNEL, _CHANNEL, _TENSOR, _HEAD = 0, 1, 2, 3, 4, 5
_GROUP_KIND = {"token": _ROW, "block": _BLOCK, "block_channel": _BLOCK_CHANNEL, "channel": _CHANNEL,
               "tensor": _TENSOR, "head": _HEAD}
#: The kinds whose group spans every token of a (batch, head): an abs-max pass first.
_TWO_PASS = (_CHANNEL, _TENSOR, _HEAD)

#: Input dtypes the kernels load (converted to float32 in registers, exactly).
QUANTIZE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QMAX = INT_FORMATS["int8"]
#: Elements per program tile for "token", "channel", "head" and "tensor" (block kinds: one block per tile).
#: 8K elements = 16 KB of fp16 per program: enough bytes in flight per SM to saturate HBM, few
#: enough registers for full occupancy (4K and 16K tiles measured within 1% of it for "token").
_TILE_ELEMENTS = 8192
#: Abs-max pass: at most this many tiles reduced in registers per program before one atomic max.
_MAX_TILES_PER_CHUNK = 8


@triton.jit
def _abs_bits(x):
    """The float32 bit patterns of |x| as int32 (sign bit cleared).

    For non-negative floats the integer order of the bit patterns is the float order, and every NaN
    pattern lies above +inf's (0x7F800000): an integer max of these bits is max |x| exactly, and it
    is >= 0x7F800000 exactly when the group holds a NaN or an inf. (A float max would drop NaN.)
    """
    return x.to(tl.int32, bitcast=True) & 0x7FFFFFFF


@triton.jit
def _flag_nonfinite(group_max_bits, flag_ptr):
    """Store 1 at ``flag_ptr`` if any group max (int32 bits of _abs_bits, a 1-d tensor) is NaN or inf."""
    tl.store(flag_ptr, 1, mask=tl.max(group_max_bits, 0) >= 0x7F800000)


@triton.jit
def _load_tile(x_base, rows, offs_d, row_ok, N, stride_xn, stride_xd, HEAD_DIM: tl.constexpr,
               BLOCK_D: tl.constexpr):
    """(ROWS, BLOCK_D) tile of x as float32, zeros outside the tensor (never read out of bounds)."""
    mask = (row_ok & (rows < N))[:, None]
    if BLOCK_D != HEAD_DIM:
        mask = mask & (offs_d < HEAD_DIM)[None, :]
    x = tl.load(x_base + rows[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask, other=0.0)
    return x.to(tl.float32), mask


@triton.jit
def _absmax_kernel(
    x_ptr, amax_ptr, flag_ptr,
    H, N, n_chunks,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ab, stride_ah, stride_ad,
    HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, TILES_PER_CHUNK: tl.constexpr,
    PER_CHANNEL: tl.constexpr, CHECK_FINITE: tl.constexpr,
):
    """Phase one of "channel"/"head"/"tensor": fold max |x| of this program's rows into ``amax`` (as int32 bits).

    1-D grid of B * H * n_chunks programs; program ``pid`` reads rows
    [c * TILES_PER_CHUNK * ROWS, (c + 1) * TILES_PER_CHUNK * ROWS) of head ``pid // n_chunks``, with
    ``c = pid % n_chunks``, keeping an element-wise running max in registers. ``amax`` (int32, the bit
    patterns of float32 maxima, see :func:`_abs_bits`) holds zeros on entry: (B, H, D) for per-channel,
    (B, H) for per-head (strides given), one element for per-tensor (strides 0). An integer atomic max of these
    bits is the float max, exact and order-free. With CHECK_FINITE a NaN or inf sets ``flag_ptr[0]`` to 1.
    """
    pid = tl.program_id(0)
    off_bh = pid // n_chunks
    chunk = pid % n_chunks
    b = off_bh // H
    h = off_bh % H
    offs_d = tl.arange(0, BLOCK_D)
    x_base = x_ptr + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    running = tl.zeros((ROWS, BLOCK_D), dtype=tl.int32)
    for t in range(TILES_PER_CHUNK):
        rows = (chunk * TILES_PER_CHUNK + t) * ROWS + tl.arange(0, ROWS)
        x, _ = _load_tile(x_base, rows, offs_d, rows >= 0, N, stride_xn, stride_xd, HEAD_DIM, BLOCK_D)
        running = tl.maximum(running, _abs_bits(x))
    col_max = tl.max(running, 0)  # (BLOCK_D,) bits of max |x|
    if PER_CHANNEL:
        if CHECK_FINITE:
            _flag_nonfinite(col_max, flag_ptr)
        tl.atomic_max(amax_ptr + b * stride_ab + h * stride_ah + offs_d * stride_ad, col_max,
                      mask=offs_d < HEAD_DIM)
    else:  # one max per (batch, head); the per-tensor one has strides 0
        tile_max = tl.max(col_max, 0)
        if CHECK_FINITE:
            tl.store(flag_ptr, 1, mask=tile_max >= 0x7F800000)
        tl.atomic_max(amax_ptr + b * stride_ab + h * stride_ah, tile_max)


@triton.jit
def _scale_and_inverse(max_bits, amax_floor, QMAX: tl.constexpr):
    """sim.quantize's scale and its inverse from a group max (int32 bits of |x|, any shape, scalar too):
    amax = max(max, AMAX_FLOOR); scale = amax / QMAX; inv = QMAX / amax, each one IEEE division."""
    amax = tl.maximum(max_bits.to(tl.float32, bitcast=True), amax_floor)
    qmax = tl.full(amax.shape, QMAX, tl.float32)
    return tl.div_rn(amax, qmax), tl.div_rn(qmax, amax)


@triton.jit
def _quantize_kernel(
    x_ptr, codes_ptr, scales_ptr, amax_ptr, flag_ptr,
    H, N, GROUP_ROWS, n_row_tiles, n_tiles,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_cb, stride_ch, stride_cn, stride_cd,
    stride_sb, stride_sh, stride_sn, stride_sd,
    stride_ab, stride_ah, stride_ad,
    amax_floor,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
    QMAX: tl.constexpr, REVERSE: tl.constexpr, CHECK_FINITE: tl.constexpr,
):
    """Quantize rows [r * GROUP_ROWS, r * GROUP_ROWS + GROUP_ROWS) of one (batch, head).

    1-D grid of ``n_tiles = B * H * n_row_tiles`` programs; tile ``pid`` (``n_tiles - 1 - pid`` with
    REVERSE) is row tile ``r = tile % n_row_tiles`` of head ``tile // n_row_tiles``. ROWS is
    GROUP_ROWS rounded up to a power of two (the tile the program loads; the extra rows are masked).
    For "block"/"block_channel" GROUP_ROWS is the block size; otherwise ROWS. Codes int8 at the codes
    strides (any layout); scales float32 at the scales strides, written by the program that owns the
    group. With CHECK_FINITE, a NaN or inf in the group sets ``flag_ptr[0]`` to 1 ("channel", "head" and
    "tensor" leave that to :func:`_absmax_kernel`, which saw every element).
    """
    pid = tl.program_id(0)
    tile = n_tiles - 1 - pid if REVERSE else pid
    off_bh = tile // n_row_tiles
    row_tile = tile % n_row_tiles
    b = off_bh // H
    h = off_bh % H
    local = tl.arange(0, ROWS)
    rows = row_tile * GROUP_ROWS + local
    row_ok = local < GROUP_ROWS
    offs_d = tl.arange(0, BLOCK_D)
    x_base = x_ptr + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x, mask = _load_tile(x_base, rows, offs_d, row_ok, N, stride_xn, stride_xd, HEAD_DIM, BLOCK_D)
    s_base = scales_ptr + b.to(tl.int64) * stride_sb + h.to(tl.int64) * stride_sh

    if GROUP == 0:  # token: one scale per row
        row_max = tl.max(_abs_bits(x), 1)
        if CHECK_FINITE:
            _flag_nonfinite(row_max, flag_ptr)
        scale, inv = _scale_and_inverse(row_max, amax_floor, QMAX)
        y = x * inv[:, None]
        tl.store(s_base + rows * stride_sn, scale, mask=row_ok & (rows < N))
    elif GROUP == 1:  # block: one scale for the whole tile
        block_max = tl.max(tl.max(_abs_bits(x), 1), 0)
        if CHECK_FINITE:
            tl.store(flag_ptr, 1, mask=block_max >= 0x7F800000)
        scale, inv = _scale_and_inverse(block_max, amax_floor, QMAX)
        y = x * inv
        tl.store(s_base + row_tile * stride_sn, scale)
    elif GROUP == 2:  # block_channel: one scale per channel of the tile
        col_max = tl.max(_abs_bits(x), 0)
        if CHECK_FINITE:
            _flag_nonfinite(col_max, flag_ptr)
        scale, inv = _scale_and_inverse(col_max, amax_floor, QMAX)
        y = x * inv[None, :]
        tl.store(s_base + row_tile * stride_sn + offs_d * stride_sd, scale, mask=offs_d < HEAD_DIM)
    elif GROUP == 3:  # channel: the max came from _absmax_kernel
        col_max = tl.load(amax_ptr + b * stride_ab + h * stride_ah + offs_d * stride_ad, mask=offs_d < HEAD_DIM,
                          other=0)
        scale, inv = _scale_and_inverse(col_max, amax_floor, QMAX)
        y = x * inv[None, :]
        tl.store(s_base + offs_d * stride_sd, scale, mask=(offs_d < HEAD_DIM) & (row_tile == 0))
    elif GROUP == 4:  # tensor: the max came from _absmax_kernel
        scale, inv = _scale_and_inverse(tl.load(amax_ptr), amax_floor, QMAX)
        y = x * inv
        if tile == 0:
            tl.store(scales_ptr, scale)
    else:  # head: the max of this (batch, head) came from _absmax_kernel
        scale, inv = _scale_and_inverse(tl.load(amax_ptr + b * stride_ab + h * stride_ah), amax_floor, QMAX)
        y = x * inv
        if row_tile == 0:
            tl.store(s_base, scale)

    codes = round_clip(y, QMAX)
    c_base = codes_ptr + b.to(tl.int64) * stride_cb + h.to(tl.int64) * stride_ch
    tl.store(c_base + rows[:, None] * stride_cn + offs_d[None, :] * stride_cd, codes.to(tl.int8), mask=mask)


def _check_input(x: torch.Tensor, granularity: str, block_size) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected 4 dimensions (batch, heads, seq, head_dim), got shape {tuple(x.shape)}")
    if min(x.shape) < 1:
        raise ValueError(f"x: expected every dimension >= 1, got shape {tuple(x.shape)}")
    if x.dtype not in QUANTIZE_DTYPES:
        raise TypeError(f"x: expected dtype float16, bfloat16 or float32, got {x.dtype}")
    if granularity not in QUANT_GRANULARITIES:
        raise ValueError(f"granularity: expected one of {list(QUANT_GRANULARITIES)}, got {granularity!r}")
    if granularity in ("block", "block_channel"):
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size: expected a positive int for granularity {granularity!r}, got {block_size!r}")


def quantize_int8(x: torch.Tensor, granularity: str = "token", *, block_size: int | None = None,
                  seq_contiguous: bool = False, nonfinite_flag: torch.Tensor | None = None,
                  tile_elements: int | None = None, num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 codes and float32 scales of ``x``, identical to ``sim.quantize(x, granularity, block_size)``.

    Parameters
    ----------
    x : (B, H, N, D) float16, bfloat16 or float32 tensor, any strides.
    granularity : "tensor" | "head" | "token" | "channel" | "block" | "block_channel".
    block_size : tokens per block, for "block" and "block_channel".
    seq_contiguous : write the codes with memory layout (B, H, D, N) (sequence contiguous) and
        return them as the transposed view, logical shape (B, H, N, D): V's K-major layout for
        the INT8 P @ V product on Hopper.
    nonfinite_flag : int32 tensor on x's device whose first element (``data_ptr``) the kernels set
        to 1 if ``x`` holds a NaN or an inf, and leave untouched otherwise; the caller zeroes it
        before and reads it after (one read for several tensors, each with its own element). With
        None nothing is checked: codes and scales of a non-finite ``x`` are then meaningless.
    tile_elements, num_warps : launch parameters for "token", "channel", "head" and "tensor" (rows per program
        = tile_elements / padded head dim); speed only, the result does not depend on them.

    Returns
    -------
    codes : (B, H, N, D) int8, values in [-127, 127]
    scales : float32, shape :func:`scale_shape` (contiguous).
    """
    _check_input(x, granularity, block_size)
    if nonfinite_flag is not None and not (
        isinstance(nonfinite_flag, torch.Tensor) and nonfinite_flag.dtype == torch.int32
        and nonfinite_flag.numel() >= 1 and nonfinite_flag.device == x.device
    ):
        raise ValueError("nonfinite_flag: expected an int32 tensor of at least one element on x's device")
    b, h, n, d = x.shape
    kind = _GROUP_KIND[granularity]
    if seq_contiguous:
        codes = torch.empty((b, h, d, n), dtype=torch.int8, device=x.device).transpose(2, 3)
    else:
        codes = torch.empty((b, h, n, d), dtype=torch.int8, device=x.device)
    scales = torch.empty(scale_shape(x.shape, granularity, block_size), dtype=torch.float32, device=x.device)
    block_d = triton.next_power_of_2(d)

    if kind in (_BLOCK, _BLOCK_CHANNEL):
        group_rows = block_size
        rows = triton.next_power_of_2(group_rows)
    else:
        rows = max(1, min(triton.next_power_of_2(n), (tile_elements or _TILE_ELEMENTS) // block_d))
        if seq_contiguous:  # at least 64 consecutive tokens (64 bytes of codes) per store of a channel
            rows = max(rows, min(64, triton.next_power_of_2(n)))
        group_rows = rows
    n_row_tiles = triton.cdiv(n, group_rows)
    n_tiles = b * h * n_row_tiles
    # 4 warps per 8K-element tile (64 elements a thread): measured on an H100 at (4, 32, 8192, 128) fp16, as fast
    # as 8 warps for one-pass kernels (2935 vs 2932 GB/s) and faster for the abs-max pass (1761 vs 1636 GB/s).
    warps = num_warps or max(1, min(16, rows * block_d // 2048))
    check = nonfinite_flag is not None
    flag = nonfinite_flag if check else scales  # any valid pointer when unchecked

    if kind in _TWO_PASS:
        per_channel = kind == _CHANNEL
        amax = torch.zeros({_CHANNEL: (b, h, d), _HEAD: (b, h, 1), _TENSOR: (1, 1, 1)}[kind], dtype=torch.int32,
                           device=x.device)
        amax_strides = (0, 0, 0) if kind == _TENSOR else amax.stride()
        # A few thousand programs, each reducing up to _MAX_TILES_PER_CHUNK tiles before one atomic.
        tiles_per_chunk = max(1, min(_MAX_TILES_PER_CHUNK, n_tiles // 2048, n_row_tiles))
        n_chunks = triton.cdiv(n_row_tiles, tiles_per_chunk)
        _absmax_kernel[(b * h * n_chunks,)](
            x, amax, flag, h, n, n_chunks, *x.stride(), *amax_strides,
            HEAD_DIM=d, ROWS=rows, BLOCK_D=block_d, TILES_PER_CHUNK=tiles_per_chunk, PER_CHANNEL=per_channel,
            CHECK_FINITE=check, num_warps=warps,
        )
    else:
        amax = scales  # unused by these groups; any valid pointer
        amax_strides = (0, 0, 0)

    scale_strides = (0, 0, 0, 0) if kind == _TENSOR else scales.stride()
    _quantize_kernel[(n_tiles,)](
        x, codes, scales, amax, flag, h, n, group_rows, n_row_tiles, n_tiles,
        *x.stride(), *codes.stride(), *scale_strides, *amax_strides,
        float(AMAX_FLOOR),
        GROUP=kind, HEAD_DIM=d, ROWS=rows, BLOCK_D=block_d, QMAX=_QMAX,
        # Second pass of a two-pass granularity: start where the abs-max pass ended (still in L2).
        REVERSE=kind in _TWO_PASS,
        CHECK_FINITE=check and kind not in _TWO_PASS,
        num_warps=warps, enable_fp_fusion=False,
    )
    return codes, scales
