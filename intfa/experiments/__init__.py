"""The experiments behind every accuracy figure: computed here, called by the main job and the notebooks.

``python -m intfa.experiments --size full`` writes every figure into ``results/`` (PNG, the tidy CSV
behind it, and a JSON of provenance); the notebooks call the same functions and save under the same
names. Modules:

- :mod:`.inputs`: the input families (normal, uniform, outliers, real) and :func:`input_cases`.
- :mod:`.capture`: Q, K, V captured from all-MiniLM-L6-v2 on English text (offline).
- :mod:`.studies`: the sweeps (error vs block sizes, scale granularity, formats, the authors' defects,
  real activations), each returning a :class:`Study`.
- :mod:`.stepthrough`: one head, tile by tile (notebook 01).
- :mod:`.speed`: the speed figure from the benchmark's CSVs.
- :mod:`.figures`: :class:`Study` and its provenance.
"""

from .figures import Study, provenance
from .inputs import FAMILIES, SYNTHETIC_FAMILIES, InputCase, input_cases, real_available, synthetic_qkv
from .main import accuracy_studies, default_out_dir, run_all
from .studies import (
    FORMATS,
    METRICS,
    PAPER_ERROR_REDUCTION_VS_FP8,
    SIZES,
    Size,
    block_grid_study,
    recommended_configs,
    recommended_study,
    block_n_study,
    causal_defect_study,
    formats_vs_seq_len_study,
    get_size,
    granularity_configs,
    granularity_studies,
    normalizer_bias_study,
    real_layer_head_study,
    reference,
    sweep,
    tail_defect_study,
)

__all__ = [
    "FAMILIES", "FORMATS", "METRICS", "PAPER_ERROR_REDUCTION_VS_FP8", "SIZES", "SYNTHETIC_FAMILIES", "InputCase",
    "Size", "Study", "accuracy_studies", "block_grid_study", "recommended_configs", "recommended_study", "block_n_study", "causal_defect_study",
    "default_out_dir", "formats_vs_seq_len_study", "get_size", "granularity_configs", "granularity_studies",
    "input_cases", "normalizer_bias_study", "provenance", "real_available", "real_layer_head_study", "reference",
    "run_all", "sweep", "synthetic_qkv", "tail_defect_study",
]
