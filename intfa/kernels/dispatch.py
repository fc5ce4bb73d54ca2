"""Which kernel runs for which call, with which launch parameters: the one place that decides.

:func:`attention_forward` is the entry every caller uses (the torch API, the benchmark, the tests). It picks the
kernel for the shape and device and takes tile rows, warps and pipeline depth from :func:`prefill_launch`, a
table per (architecture, head dim, causal, Nq). Launch parameters change speed, never numbers: everything
that changes a number is a field of :class:`sim.QuantConfig`, and nothing here overrides one (a block-scaled Q
fixes the tile height to ``config.block_m``, because its scale groups are those tiles).

Kernels: :mod:`.prefill` (the ``tl`` kernel the interpreter checks bit for bit).
"""

from __future__ import annotations

import dataclasses

import torch

from sim.config import QuantConfig

from .prefill import prefill_forward


@dataclasses.dataclass(frozen=True)
class Launch:
    """Launch parameters of one kernel call: query rows per program, warps, software-pipeline depth."""

    block_m: int
    num_warps: int
    num_stages: int


def device_arch(device: torch.device) -> str:
    """"sm90" for Hopper, "sm80" for Ampere, ...; "cpu" for the interpreter."""
    if device.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def prefill_launch(arch: str, head_dim: int, is_causal: bool, seq_q: int, config: QuantConfig) -> Launch:
    """Launch parameters of the prefill kernel (speed only; the result does not depend on them).

    Measured on the H100 (docs/performance.md, scripts/tune_int8.py): 64-row tiles at D <= 64 keep the 128-key
    tiles out of register spills, 128 rows and 8 warps above, three stages of K/V in flight. Other
    architectures and the interpreter use the same table until someone measures them.
    """
    del arch, is_causal, seq_q  # one row for every case until the device sweep says otherwise
    block_m = 64 if head_dim <= 64 else 128
    num_warps = 8 if block_m >= 128 and head_dim >= 128 else 4
    if config.q_granularity == "block":  # the scale groups are the tiles
        block_m = config.block_m
        num_warps = 8 if block_m >= 128 and head_dim >= 128 else 4
    return Launch(block_m=block_m, num_warps=num_warps, num_stages=3)


def attention_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor | None,
    *, config: QuantConfig, scale: float, is_causal: bool = False, out_dtype: torch.dtype = torch.float16,
    return_lse: bool = False, trace: bool = False, launch: Launch | None = None, fp_fusion: bool | None = None,
    attn_mask: torch.Tensor | None = None,
):
    """INT8 attention on prepared operands (shapes and values already checked), by the kernel that suits them.

    Parameters are those of :func:`intfa.kernels.prefill.prefill_forward`; ``launch`` overrides the table's
    choice (tuning scripts and tests; ``block_m`` must stay ``config.block_m`` for block-scaled Q). ``attn_mask``:
    (B, Hq, Nq, Nk) bool or float32, broadcast dimensions at stride 0.
    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32; with ``trace`` the
    trace dict last.
    """
    b, hq, nq, d = q_codes.shape
    if launch is None:
        launch = prefill_launch(device_arch(q_codes.device), d, is_causal, nq, config)
    return prefill_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                           is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, trace=trace,
                           block_m=launch.block_m, num_warps=launch.num_warps, num_stages=launch.num_stages,
                           fp_fusion=fp_fusion, attn_mask=attn_mask)
