"""Symmetric INT8 quantization in Triton: exactly :func:`sim.quantize`, at every 8-bit granularity.

The rule (sim/quant.py, one float32 operation at a time)::

    amax  = max(max |x| over the group, AMAX_FLOOR)
    scale = amax / 127            (IEEE division: tl.div_rn, not the approximate `/`)
    inv   = 127 / amax            (IEEE division)
    y     = x * inv
    code  = clip(sign(y) * trunc(|y| + 0.5), -127, 127)

Rounding is built from an add and a float-to-int truncation, which are exact IEEE operations in
NumPy, in Triton's interpreter and on the GPU alike, so the codes and scales are identical to sim's
on every path (libdevice's rint would not run in the interpreter).

Granularities (scale shapes as sim's, x of shape (B, H, N, D)):

=================  =====================  ===========================================================
granularity        scales                 passes over x
=================  =====================  ===========================================================
"token"            (B, H, N, 1)           one: each program owns whole rows
"block"            (B, H, ceil(N/bs), 1)  one: each program owns one block of ``bs`` tokens
"block_channel"    (B, H, ceil(N/bs), D)  one: as "block", a scale per channel of the block
"channel"          (B, H, 1, D)           two: an abs-max kernel first (atomic max per channel)
"tensor"           (1, 1, 1, 1)           two: an abs-max kernel first (one atomic max)
=================  =====================  ===========================================================

The group of a per-channel or per-tensor scale spans every token, so its max is known only after a
full read: :func:`_absmax_kernel` reduces each program's tile and folds it into a float32 buffer with
``tl.atomic_max`` (max is order-independent, so the result is deterministic), then the quantize
kernel reads x a second time. Everything else is a single read of x and a single write of the codes.

The codes can be written with the sequence contiguous (memory (B, H, D, N), returned as a transposed
view with logical shape (B, H, N, D)): that is the K-major layout Hopper's 8-bit wgmma wants for V in
P8 @ V8, as in Triton's FP8 attention tutorial.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sim.config import AMAX_FLOOR, INT_FORMATS, QUANT_GRANULARITIES, n_blocks

#: Group kinds, as constexpr integers the kernels branch on.
_ROW, _BLOCK, _BLOCK_CHANNEL, _CHANNEL, _TENSOR = 0, 1, 2, 3, 4
_GROUP_KIND = {"token": _ROW, "block": _BLOCK, "block_channel": _BLOCK_CHANNEL, "channel": _CHANNEL,
               "tensor": _TENSOR}

#: Input dtypes the kernels load (converted to float32 in registers, exactly).
QUANTIZE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_QMAX = INT_FORMATS["int8"]


@triton.jit
def _load_tile(x_ptr, rows, offs_d, row_ok, N, D, stride_xn, stride_xd):
    """(ROWS, BLOCK_D) tile of x as float32, zeros outside the tensor (never read out of bounds)."""
    mask = (row_ok & (rows < N))[:, None] & (offs_d < D)[None, :]
    x = tl.load(x_ptr + rows[:, None] * stride_xn + offs_d[None, :] * stride_xd, mask=mask, other=0.0)
    return x.to(tl.float32), mask


@triton.jit
def _absmax_kernel(
    x_ptr, amax_ptr,
    H, N, D,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_ab, stride_ah, stride_ad,
    ROWS: tl.constexpr, BLOCK_D: tl.constexpr, PER_CHANNEL: tl.constexpr,
):
    """Phase one of "channel"/"tensor": fold max |x| of this program's rows into ``amax`` (float32).

    Grid (ceil(N / ROWS), B * H). ``amax`` holds zeros on entry: (B, H, D) for per-channel (strides
    given), one element for per-tensor. |x| >= 0, so a float atomic max is exact and order-free.
    """
    pid_n = tl.program_id(0)
    off_bh = tl.program_id(1)
    b = off_bh // H
    h = off_bh % H
    rows = pid_n * ROWS + tl.arange(0, ROWS)
    offs_d = tl.arange(0, BLOCK_D)
    x_base = x_ptr + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x, _ = _load_tile(x_base, rows, offs_d, rows >= 0, N, D, stride_xn, stride_xd)
    col_max = tl.max(tl.abs(x), 0)  # (BLOCK_D,)
    if PER_CHANNEL:
        tl.atomic_max(amax_ptr + b * stride_ab + h * stride_ah + offs_d * stride_ad, col_max, mask=offs_d < D)
    else:
        tl.atomic_max(amax_ptr, tl.max(col_max, 0))


@triton.jit
def _round_clip(y, QMAX: tl.constexpr):
    """clip(sign(y) * trunc(|y| + 0.5), -QMAX, QMAX) as int32: sim.round_half_away, then the clip."""
    magnitude = (tl.abs(y) + 0.5).to(tl.int32)
    codes = tl.where(y < 0, -magnitude, magnitude)
    return tl.minimum(tl.maximum(codes, -QMAX), QMAX)


@triton.jit
def _quantize_kernel(
    x_ptr, codes_ptr, scales_ptr, amax_ptr,
    H, N, D, GROUP_ROWS,
    stride_xb, stride_xh, stride_xn, stride_xd,
    stride_cb, stride_ch, stride_cn, stride_cd,
    stride_sb, stride_sh, stride_sn, stride_sd,
    stride_ab, stride_ah, stride_ad,
    amax_floor,
    GROUP: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr, QMAX: tl.constexpr,
):
    """Quantize rows [pid * GROUP_ROWS, pid * GROUP_ROWS + GROUP_ROWS) of one (batch, head).

    Grid (ceil(N / GROUP_ROWS), B * H). ROWS is GROUP_ROWS rounded up to a power of two (the tile
    the program loads; the extra rows are masked). For "block"/"block_channel" GROUP_ROWS is the
    block size; otherwise any tile height. Codes int8 at the codes strides (any layout); scales
    float32 at the scales strides, written by the program that owns the group.
    """
    pid_n = tl.program_id(0)
    off_bh = tl.program_id(1)
    b = off_bh // H
    h = off_bh % H
    local = tl.arange(0, ROWS)
    rows = pid_n * GROUP_ROWS + local
    offs_d = tl.arange(0, BLOCK_D)
    x_base = x_ptr + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x, mask = _load_tile(x_base, rows, offs_d, local < GROUP_ROWS, N, D, stride_xn, stride_xd)
    ax = tl.abs(x)
    s_base = scales_ptr + b * stride_sb + h * stride_sh

    if GROUP == 0:  # token: one scale per row
        amax = tl.maximum(tl.max(ax, 1), amax_floor)
        scale = tl.div_rn(amax, tl.full(amax.shape, QMAX, tl.float32))
        inv = tl.div_rn(tl.full(amax.shape, QMAX, tl.float32), amax)
        y = x * inv[:, None]
        tl.store(s_base + rows * stride_sn, scale, mask=(local < GROUP_ROWS) & (rows < N))
    elif GROUP == 1:  # block: one scale for the whole tile
        amax = tl.maximum(tl.max(tl.max(ax, 1), 0), amax_floor)
        scale = tl.div_rn(amax, QMAX * 1.0)
        inv = tl.div_rn(QMAX * 1.0, amax)
        y = x * inv
        tl.store(s_base + pid_n * stride_sn, scale)
    elif GROUP == 2:  # block_channel: one scale per channel of the tile
        amax = tl.maximum(tl.max(ax, 0), amax_floor)
        scale = tl.div_rn(amax, tl.full(amax.shape, QMAX, tl.float32))
        inv = tl.div_rn(tl.full(amax.shape, QMAX, tl.float32), amax)
        y = x * inv[None, :]
        tl.store(s_base + pid_n * stride_sn + offs_d * stride_sd, scale, mask=offs_d < D)
    elif GROUP == 3:  # channel: the max came from _absmax_kernel
        col_max = tl.load(amax_ptr + b * stride_ab + h * stride_ah + offs_d * stride_ad, mask=offs_d < D, other=0.0)
        amax = tl.maximum(col_max, amax_floor)
        scale = tl.div_rn(amax, tl.full(amax.shape, QMAX, tl.float32))
        inv = tl.div_rn(tl.full(amax.shape, QMAX, tl.float32), amax)
        y = x * inv[None, :]
        tl.store(s_base + offs_d * stride_sd, scale, mask=(offs_d < D) & (pid_n == 0))
    else:  # tensor: the max came from _absmax_kernel
        amax = tl.maximum(tl.load(amax_ptr), amax_floor)
        scale = tl.div_rn(amax, QMAX * 1.0)
        inv = tl.div_rn(QMAX * 1.0, amax)
        y = x * inv
        if (pid_n == 0) & (off_bh == 0):
            tl.store(scales_ptr, scale)

    codes = _round_clip(y, QMAX)
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


def scale_shape(x_shape, granularity: str, block_size: int | None = None) -> tuple:
    """The scales' shape for ``x_shape`` (B, H, N, D) at ``granularity``, as :func:`sim.quantize`."""
    b, h, n, d = x_shape
    return {
        "tensor": (1, 1, 1, 1),
        "token": (b, h, n, 1),
        "channel": (b, h, 1, d),
        "block": (b, h, n_blocks(n, block_size) if block_size else 0, 1),
        "block_channel": (b, h, n_blocks(n, block_size) if block_size else 0, d),
    }[granularity]


def quantize_int8(x: torch.Tensor, granularity: str = "token", *, block_size: int | None = None,
                  seq_contiguous: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """INT8 codes and float32 scales of ``x``, identical to ``sim.quantize(x, granularity, block_size)``.

    Parameters
    ----------
    x : (B, H, N, D) float16, bfloat16 or float32 tensor, any strides. Must be finite (not checked
        here: the public :func:`intfa.quantize` checks it).
    granularity : "tensor" | "token" | "channel" | "block" | "block_channel".
    block_size : tokens per block, for "block" and "block_channel".
    seq_contiguous : write the codes with memory layout (B, H, D, N) (sequence contiguous) and
        return them as the transposed view, logical shape (B, H, N, D): V's K-major layout for
        the INT8 P @ V product on Hopper.

    Returns
    -------
    codes : (B, H, N, D) int8, values in [-127, 127]
    scales : float32, shape :func:`scale_shape` (contiguous).
    """
    _check_input(x, granularity, block_size)
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
    else:
        # Tiles of about 4K elements: a whole row at least, a power of two rows.
        group_rows = max(1, min(triton.next_power_of_2(n), 4096 // block_d))
    rows = triton.next_power_of_2(group_rows)
    grid = (triton.cdiv(n, group_rows), b * h)

    if kind in (_CHANNEL, _TENSOR):
        per_channel = kind == _CHANNEL
        amax = torch.zeros((b, h, d) if per_channel else (1, 1, 1), dtype=torch.float32, device=x.device)
        _absmax_kernel[grid](
            x, amax, h, n, d, *x.stride(), *(amax.stride() if per_channel else (0, 0, 0)),
            ROWS=rows, BLOCK_D=block_d, PER_CHANNEL=per_channel,
        )
        amax_strides = amax.stride() if per_channel else (0, 0, 0)
    else:
        amax = scales  # unused by these groups; any valid pointer
        amax_strides = (0, 0, 0)

    scale_strides = (0, 0, 0, 0) if kind == _TENSOR else scales.stride()
    _quantize_kernel[grid](
        x, codes, scales, amax, h, n, d, group_rows,
        *x.stride(), *codes.stride(), *scale_strides, *amax_strides,
        float(AMAX_FLOOR),
        GROUP=kind, ROWS=rows, BLOCK_D=block_d, QMAX=_QMAX,
    )
    return codes, scales
