# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · The paper's figures, reproduced
#
# INT-FlashAttention (arXiv 2409.16997) claims two things: full-INT8 attention runs **72% faster than FP16
# FlashAttention** (Triton, Ampere), and its error is **82% smaller than FP8's**. This notebook puts our
# measurements beside both, and says where they agree.

# %% tags=["parameters"]
import os

SIZE = os.environ.get("INTFA_NOTEBOOK_SIZE", "small")  # "small" (quick, CI) or "full" (the committed figures' sizes)
# A full-size run saves its figures under results/scratch/; True (or INTFA_UPDATE_RESULTS=1) writes results/.
UPDATE_RESULTS = os.environ.get("INTFA_UPDATE_RESULTS") == "1"

# %%
from intfa import experiments as ex
from intfa.experiments import speed
from intfa.runtime import cuda_available

OUT = ex.notebook_out_dir(SIZE, update_results=UPDATE_RESULTS)
size = ex.get_size(SIZE)

# %% [markdown]
# ## Speed against sequence length
# From the benchmark's committed CSVs (`results/<gpu>/bench-*.csv`, written by `python -m intfa.bench`);
# where a GPU is visible, a full-size run with UPDATE_RESULTS runs the paper suite live first.

# %%
if cuda_available() and SIZE == "full" and UPDATE_RESULTS:  # the benchmark writes results/<gpu>/ itself
    speed.run_bench("paper")
bench = speed.load_bench_csvs()
speed_figure = speed.speed_study(bench)
if speed_figure is None:
    print("No benchmark measurement is committed yet (no results/<gpu>/bench-*.csv), and no GPU is visible here: "
          "this notebook makes no speed claim.")
else:
    speed_figure.save(OUT)
    print(speed_figure.report())

# %% [markdown]
# The paper's +72% is against *their own* FP16 Triton kernel on an A100; the ratio printed above is ours,
# `int8-full` against `triton-fp16` measured in the same run on the GPU named in each line. One public
# reproduction on an RTX 4090 found 0–10%.

# %% [markdown]
# ## Error against sequence length, normal and uniform inputs
# FP16, FP8 e4m3 and e5m2 (unscaled, as the paper), half-INT8 (INT8 Q, K; FP16 P, V) and full INT8, all
# through the same tile loop in `sim`. Three metrics: relative L2 over every element (what we judge by), the
# paper's MRE (read off the last 4 output elements, as the authors' script does) and the same MRE over every
# element.

# %%
formats = ex.formats_vs_seq_len_study(size)
formats.save(OUT)
print(formats.report())

# %% [markdown]
# ## Where we agree with the paper, and where not
# The lines above give, at the longest N, the error reduction of full INT8 against each FP8 format under each
# metric. The table below puts them side by side with the paper's 82%.

# %%
wide = formats.frame.pivot_table(index=["family", "seq_len", "format"], columns="metric", values="value")
n_max = max(size.seq_lens)
rows = []
for fam in ("normal", "uniform"):
    at = wide.loc[(fam, n_max)]
    for fp8 in ("FP8 e4m3", "FP8 e5m2"):
        cut = 1 - at.loc["full-INT8 (paper)"] / at.loc[fp8]
        rows.append({"family": fam, "vs": fp8, **{f"{m} reduction %": round(100 * cut[m], 1) for m in cut.index}})
import pandas as pd

claims = pd.DataFrame(rows).assign(**{"paper claim %": 100 * ex.PAPER_ERROR_REDUCTION_VS_FP8})
claims  # noqa: B018 (the notebook shows it)

# %%
agree = claims[(claims["rel_l2 reduction %"] - claims["paper claim %"]).abs() <= 10]
print(f"{len(agree)} of {len(claims)} (family, FP8 format) pairs are within 10 points of the paper's 82% by "
      f"relative L2: {', '.join(agree['family'] + ' vs ' + agree['vs']) or 'none'}")
print("The paper's 4-element MRE moves from seed to seed (see its band in the figure): a single 4-number sample "
      "can neither confirm nor refute a percentage; relative L2 over every element is the number to compare.")
