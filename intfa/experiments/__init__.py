"""The experiments behind every accuracy figure: computed here, called by the main job and the notebooks.

``python -m intfa.experiments --size full`` writes every figure into ``results/`` (PNG, the tidy CSV
behind it, and a JSON of provenance); the notebooks call the same functions and save under the same
names. NumPy, pandas and seaborn suffice (no torch, no Triton): only the real-activation study needs torch
and transformers, and is skipped without them. Modules:

- :mod:`.inputs`: the input families (normal, uniform, outliers, real) and :func:`input_cases`.
- :mod:`.capture`: Q, K, V captured from all-MiniLM-L6-v2 on English text (offline; torch, transformers).
- :mod:`.harness`: the sweep harness: :class:`Size` and :data:`SIZES`, the float64 :func:`reference`,
  :func:`sweep` (configurations x input cases -> tidy frame), shared plot helpers.
- the studies, one theme a module, each study a function returning a :class:`Study`:
  :mod:`.blocks` (error vs BLOCK_N, BLOCK_M x BLOCK_N), :mod:`.granularity` (Q x K, V, P),
  :mod:`.formats` (the paper's error figure: FP16, FP8, half- and full INT8), :mod:`.defects` (the authors'
  defects), :mod:`.real` (MiniLM per layer and head), :mod:`.recommended` (issue #6's configuration),
  :mod:`.peers` (ours against SageAttention2 and FlashAttention-3 FP8, simulated).
- :mod:`.paper`: the paper's numbers, each with where it stands, and the claim-by-claim table against ours.
- :mod:`.embeddings`: all-MiniLM-L6-v2 end to end on the INT8 kernel (transformers' attention interface): sentence
  embeddings and nearest-neighbour retrieval against the float32 model (torch, transformers, the kernels).
- :mod:`.stepthrough`: one head, tile by tile (notebook 01).
- :mod:`.speed`: the speed figure from the benchmark's CSVs.
- :mod:`.figures`: :class:`Study` (saved with :func:`intfa.provenance.provenance`'s record).
- :mod:`.main`: the main job, :func:`run_all`.
"""

from ..provenance import provenance
from .blocks import block_grid_study, block_n_study
from .defects import causal_defect_study, normalizer_bias_study, tail_defect_study
from .embeddings import embedding_configs, minilm_embedding_study
from .figures import Study
from .formats import FORMATS, formats_vs_seq_len_study, paper_ratio_table
from .granularity import granularity_configs, granularity_studies
from .harness import (METRICS, SIZES, Size, config_fields, get_size, measured_rows, reference, rows_independent,
                      subsample_queries, sweep)
from .inputs import FAMILIES, SYNTHETIC_FAMILIES, InputCase, input_cases, real_available, synthetic_qkv
from .main import accuracy_studies, default_out_dir, notebook_out_dir, run_all
from .paper import (PAPER_ERROR_RATIO_VS_FP8, PAPER_SPEEDUP, PAPER_SPEEDUP_BY_N, PaperNumber, claims_study,
                    claims_table)
from .peers import peer_configs, peers_study
from .real import real_layer_head_study
from .recommended import recommended_configs, recommended_study

__all__ = [
    "FAMILIES", "FORMATS", "METRICS", "PAPER_ERROR_RATIO_VS_FP8", "PAPER_SPEEDUP", "PAPER_SPEEDUP_BY_N", "SIZES",
    "SYNTHETIC_FAMILIES", "InputCase", "PaperNumber", "Size", "Study", "accuracy_studies", "block_grid_study",
    "block_n_study", "causal_defect_study", "claims_study", "claims_table", "config_fields", "default_out_dir",
    "embedding_configs", "formats_vs_seq_len_study", "get_size", "granularity_configs", "granularity_studies",
    "input_cases", "measured_rows", "minilm_embedding_study", "normalizer_bias_study", "notebook_out_dir",
    "paper_ratio_table", "peer_configs", "peers_study", "provenance", "real_available", "real_layer_head_study",
    "recommended_configs", "recommended_study", "reference", "rows_independent", "run_all", "subsample_queries",
    "sweep", "synthetic_qkv", "tail_defect_study",
]
