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
    use_tma: bool = False


def device_arch(device: torch.device) -> str:
    """"sm90" for Hopper, "sm80" for Ampere, ...; "cpu" for the interpreter."""
    if device.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def prefill_launch(arch: str, head_dim: int, is_causal: bool, seq_q: int, config: QuantConfig) -> Launch:
    """Launch parameters of the prefill kernel (speed only; the result does not depend on them).

    Measured on the H100 (docs/performance.md, version 6; results/nvidia-h100-80gb-hbm3/tune/v6-variants.csv):
    64-row tiles with 4 warps (one warpgroup) beat 128 rows with 8 warps at every head dim, by 12% at D=128 and
    19% at D=64 (two programs share an SM and overlap each other's softmax and products); three stages of K/V in
    flight beat two and four; K and V through TMA descriptors gain 2-8% except with V block scales at D >= 128,
    where they lost 8% (more registers spilled). The interpreter takes the same choices, so that it runs both
    load paths. Architectures before Hopper have no TMA.
    """
    del is_causal, seq_q  # one row for both until a sweep says otherwise
    use_tma = arch in ("sm90", "cpu") and not (config.v_granularity == "block" and head_dim >= 128)
    block_m = config.block_m if config.q_granularity == "block" else 64  # block-scaled Q: its groups are the tiles
    num_warps = 8 if block_m >= 128 else 4
    return Launch(block_m=block_m, num_warps=num_warps, num_stages=3, use_tma=use_tma)


def attention_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor | None,
    *, config: QuantConfig, scale: float, is_causal: bool = False, out_dtype: torch.dtype = torch.float16,
    return_lse: bool = False, trace: bool = False, launch: Launch | None = None, fp_fusion: bool | None = None,
):
    """INT8 attention on prepared operands (shapes and values already checked), by the kernel that suits them.

    Parameters are those of :func:`intfa.kernels.prefill.prefill_forward`; ``launch`` overrides the table's
    choice (tuning scripts and tests; ``block_m`` must stay ``config.block_m`` for block-scaled Q).
    Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32; with ``trace`` the
    trace dict last.
    """
    b, hq, nq, d = q_codes.shape
    if launch is None:
        launch = prefill_launch(device_arch(q_codes.device), d, is_causal, nq, config)
    if scale < 0:
        # The kernels take each row's max of qk * k_scale and scale it by q_row, which needs q_row >= 0. A
        # negative softmax scale is the same arithmetic on negated Q codes: ((-qk) * k_scale) * (-q_row) is
        # (qk * k_scale) * q_row exactly (negation is exact; the project's codes lie in [-127, 127]).
        q_codes, scale = torch.neg(q_codes), -scale
    return prefill_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                           is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, trace=trace,
                           block_m=launch.block_m, num_warps=launch.num_warps, num_stages=launch.num_stages,
                           use_tma=launch.use_tma, fp_fusion=fp_fusion)
