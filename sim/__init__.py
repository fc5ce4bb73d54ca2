"""sim: the NumPy simulator and numerical spec of INT8 FlashAttention (NumPy and ml_dtypes only).

Public API (shapes follow torch SDPA: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D); :func:`attention` takes
whatever torch SDPA takes in inference: leading dimensions, empty tensors, attn_mask, a value head dim of its own):

- :class:`QuantConfig`: the project's one configuration vocabulary (defaults: the paper's).
- :func:`quantize`, :func:`dequantize`, :func:`expand_scales`: int8/int4 codes with float32 scales;
  :func:`quantize_fp8`, :func:`truncate_fp22`, :func:`fp22_matmul`: scaled FP8 and the FP8 MMA's accumulator, for
  the peers' recipes (``QuantConfig.sage_attention2()``, ``QuantConfig.fa3_fp8()``; simulated only);
  :func:`power_of_two_scales` (half-INT8's V), :func:`round_output` (the output's saturating rounding).
- :func:`check_sdpa_call` (:class:`SdpaCall`), and the rest of :mod:`sim.checks`: the a-priori checks that sim and
  the torch API share.
- :func:`attention`, :func:`attention_int8`, :func:`attention_trace`, :func:`trace_operands`: the tiled forward
  pass (the last two keep every tile's state).
- :func:`quantize_operands`, :func:`smooth_keys`: Q, K, V as the tile loop consumes them.
- decoding (:mod:`sim.decode`): ``kv_splits`` of the entry points above is defined by :func:`split_tile_ranges`
  and :func:`combine_splits`; paged INT8 caches by :func:`gather_pages`, :func:`paged_scale_shape` and
  :func:`check_paged_cache` (:func:`keys_per_scale_row`: which scales are paged); :data:`CAUSAL_ALIGNMENTS` says where queries sit among the keys.
- :func:`reference_attention`: float64 ground truth; :func:`int8_error_bound`: an a-priori bound on sim's error.
- metrics: :func:`relative_l2`, :func:`max_abs_error`, :func:`cosine_similarity`, :func:`mre_paper`,
  :func:`mre_all`, :func:`all_metrics`.
"""

from .attention import (
    attention,
    attention_int8,
    attention_trace,
    key_means,
    quantize_operands,
    smooth_keys,
    trace_operands,
)
from .bounds import int8_error_bound
from .decode import (
    CAUSAL_ALIGNMENTS,
    SplitPart,
    check_paged_cache,
    combine_splits,
    gather_pages,
    keys_per_scale_row,
    paged_scale_shape,
    split_tile_ranges,
)
from .checks import AttentionShape, SdpaCall, check_attention_shapes, check_not_simulated_only, check_sdpa_call
from .loop import LoopState, Operands, TileStep, Trace
from .config import (
    AMAX_FLOOR,
    BATCH_INVARIANT_GRANULARITIES,
    FLOAT_FORMATS,
    FP8_ACCUMULATIONS,
    FP8_MAX,
    FP22_FRACTION_BITS,
    MMA_K_FP8,
    INT_FORMATS,
    LN2,
    LOG2E,
    NORMALIZERS,
    P_LEVELS,
    P_QUANTS,
    P_FP8_SCALES,
    P_SCALES,
    PEER_K_GRANULARITIES,
    PEER_Q_GRANULARITIES,
    PEER_QUANT_GRANULARITIES,
    PEER_V_GRANULARITIES,
    PV_FORMATS,
    QK_FORMATS,
    QK_GRANULARITIES,
    QUANT_GRANULARITIES,
    V_GRANULARITIES,
    QuantConfig,
    n_blocks,
    qk_scale_factor,
)
from .metrics import all_metrics, cosine_similarity, max_abs_error, mre_all, mre_paper, relative_l2
from .quant import (
    dequantize,
    expand_scales,
    fp22_matmul,
    power_of_two_scales,
    quantize,
    quantize_fp8,
    round_half_even,
    round_output,
    round_to_format,
    scale_shape,
    thread_group_rows,
    truncate_fp22,
)
from .inputs import QKV_FAMILIES, TENSOR_FAMILIES, make_qkv, make_tensor
from .reference import reference_attention

__all__ = [name for name in dir() if not name.startswith("_")]
