"""sim: the NumPy simulator and numerical spec of INT8 FlashAttention (NumPy and ml_dtypes only).

Public API (shapes follow torch SDPA: q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D); :func:`attention` takes
whatever torch SDPA takes in inference: leading dimensions, empty tensors, attn_mask, a value head dim of its own):

- :class:`QuantConfig`: the project's one configuration vocabulary (defaults: the paper's).
- :func:`quantize`, :func:`dequantize`, :func:`expand_scales`: int8/int4 codes with float32 scales;
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
    LoopState,
    Operands,
    TileStep,
    Trace,
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
from .checks import AttentionShape, SdpaCall, check_attention_shapes, check_sdpa_call
from .config import (
    AMAX_FLOOR,
    BATCH_INVARIANT_GRANULARITIES,
    FLOAT_FORMATS,
    INT_FORMATS,
    LN2,
    LOG2E,
    NORMALIZERS,
    P_LEVELS,
    P_QUANTS,
    P_SCALES,
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
    power_of_two_scales,
    quantize,
    round_half_even,
    round_output,
    round_to_format,
    scale_shape,
)
from .inputs import QKV_FAMILIES, TENSOR_FAMILIES, make_qkv, make_tensor
from .reference import reference_attention

__all__ = [name for name in dir() if not name.startswith("_")]
