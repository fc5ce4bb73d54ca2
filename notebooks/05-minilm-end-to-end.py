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
# # 05 · all-MiniLM-L6-v2 end to end on the INT8 kernel
#
# Notebook 04 studied MiniLM's attention layer by layer on captured Q, K, V. Here the whole model runs with its
# attention on the INT8 kernel, through Hugging Face transformers' attention interface
# (`intfa.register_transformers`, then `attn_implementation=...`), on a batch of padded sentences: the padding mask
# goes through the kernel's `attn_mask`. What a user of sentence embeddings sees is compared with the float32
# model: the cosine similarity of each sentence's embedding, and whether its nearest neighbour among the other
# sentences stays the same. The float16 model is the yardstick.
#
# On a GPU the kernels run compiled; without one they run under Triton's interpreter (CPU, slow: the small size
# takes a few minutes).

# %% tags=["parameters"]
import os

SIZE = os.environ.get("INTFA_NOTEBOOK_SIZE", "small")  # "small" (quick, CI) or "full" (the committed figures' sizes)
# A full-size run saves its figures under results/scratch/; True (or INTFA_UPDATE_RESULTS=1) writes results/.
UPDATE_RESULTS = os.environ.get("INTFA_UPDATE_RESULTS") == "1"

# %%
from intfa.runtime import cuda_available

if not cuda_available():  # the kernels run under Triton's interpreter; set before Triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"

from intfa import experiments as ex

OUT = ex.notebook_out_dir(SIZE, update_results=UPDATE_RESULTS)
ok, reason = ex.real_available()
print(reason)
if ok:
    print("configurations:", ", ".join(ex.embedding_configs(SIZE)))

# %% [markdown]
# ## Embeddings and retrieval, per configuration

# %%
if ok:
    study = ex.minilm_embedding_study(SIZE)
    study.save(OUT)
    print(study.report())
    summary = study.frame.groupby("run", sort=False).agg(
        mean_cosine=("cosine_vs_float32", "mean"), min_cosine=("cosine_vs_float32", "min"),
        nearest_neighbour_agreement=("same_nearest", "mean"))
    display(summary)  # noqa: F821 (IPython)

# %% [markdown]
# What to see: how far each configuration moves the embeddings compared with running the whole model in float16,
# and whether that distance is large enough to change which sentence is nearest. The small size has two
# sentences on each of two topics and runs the paper's configuration alone, so retrieval there is easy; the full
# size has four on each of four topics and adds the recommended configuration and half-INT8 (the committed
# figure, `results/accuracy/minilm_embeddings.png`, is a full-size run).

# %%
if not ok:
    print("MiniLM is unavailable here, so this notebook measured nothing:", reason)
