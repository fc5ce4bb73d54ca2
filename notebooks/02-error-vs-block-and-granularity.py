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
# # 02 · Error against block size and scale granularity
#
# Relative L2 error against float64 attention, over every output element, for four input families: normal,
# uniform, outlier-heavy (a few channels 20–100x, 2% of tokens 50x) and real (Q, K, V of all-MiniLM-L6-v2 on
# English text, one layer per sample; notebook 04). Bands are over seeds (layers for real). Each figure's
# title and findings are computed from the numbers it shows.

# %% tags=["parameters"]
import os

SIZE = os.environ.get("INTFA_NOTEBOOK_SIZE", "small")  # "small" (quick, CI) or "full" (the committed figures' sizes)
# A full-size run saves its figures under results/scratch/; True (or INTFA_UPDATE_RESULTS=1) writes results/.
UPDATE_RESULTS = os.environ.get("INTFA_UPDATE_RESULTS") == "1"

# %%
from intfa import experiments as ex

OUT = ex.notebook_out_dir(SIZE, update_results=UPDATE_RESULTS)
size = ex.get_size(SIZE)
ok, reason = ex.real_available()
print(size)
print("real activations:", reason)


def show(study):
    """Save the study's figure, CSV and provenance under OUT and print its findings (the figure shows inline)."""
    study.save(OUT)
    print(study.report())


# %% [markdown]
# ## BLOCK_N, the key tile
# The online softmax quantizes P against the running max of the tiles seen so far; the tile size decides how
# often that max moves. What to see: each line is a sample's error divided by its own error at the smallest
# BLOCK_N, so a flat line at 1 means the key tile does not matter.

# %%
block_n = ex.block_n_study(size)
show(block_n)

# %%
means = block_n.frame.groupby(["family", "block_n"])["rel_l2"].mean().unstack()
spread = (means.max(axis=1) / means.min(axis=1))
print("largest/smallest error over BLOCK_N, per family:", spread.round(3).to_dict())

# %% [markdown]
# Conclusion: the printed spread is how much BLOCK_N moves the paper configuration's error on each family.
# Compare it with the factors the granularity and P settings below move the error by: where the spread is the
# smaller, BLOCK_N is a second-order knob and can be chosen for speed.

# %% [markdown]
# ## BLOCK_M × BLOCK_N, with per-block Q and K scales
# With the paper's per-token scales BLOCK_M is not part of the arithmetic (first finding: the outputs are
# identical). With one scale per block of rows it is. What to see: how far the cells of one heatmap differ,
# that is, how much the tile sizes matter once they also set the scale's reach.

# %%
show(ex.block_grid_study(size))

# %% [markdown]
# Conclusion: per-block scales put the tile sizes into the error; the spread across the grid is printed per
# family. Compare the best cell with the per-token error in the next figure before preferring blocks.

# %%
qk_study, v_study, p_study = ex.granularity_studies(size)

# %% [markdown]
# ## Q × K scale granularity
# One scale per tensor, per block of rows or per token, for Q (rows) and K (columns); the paper's setting is
# per token for both. What to see: how much darker than the paper's cell the coarser cells are, per family.

# %%
show(qk_study)

# %% [markdown]
# Conclusion: per-token Q and K (the paper's) against coarser scales; outlier-heavy inputs are where the
# granularity matters most, and their error stays large at every Q/K granularity, since a few huge channels
# take the range of every per-token scale (smoothing K is issue #6's remedy).

# %% [markdown]
# ## V scale granularity
# V's scale per tensor, per channel, or per block of BLOCK_N keys and channel, everything else as the paper.
# What to see: each bar is the error over the paper setting's on the same inputs (dashed line at 1); a bar
# well short of the line is a setting that pays.

# %%
show(v_study)

# %% [markdown]
# Conclusion: V's granularity moves the error by the factors printed above; it matters where V has outlier
# channels or tokens, and little on well-spread inputs.

# %% [markdown]
# ## P's codes and the normalizer
# How P becomes 8-bit codes (127 fixed levels as the paper, or 255 signed levels, taken against P itself or
# against the tile's row maximum) and whether the normalizer sums float P or the codes. What to see: the last
# bar, unquantized P, is the floor that quantized Q, K and V set; the gap between it and the paper's bar is what
# P's codes cost, and each bar in between says how much of that gap a setting recovers.

# %%
show(p_study)

# %% [markdown]
# Conclusion: "P float32" is the floor that quantized Q, K and V set; the gap between it and the paper's
# setting is what P's 127 fixed levels cost. The printed best setting says how much of that gap finer P codes
# and the normalizer recover on each family.

# %% [markdown]
# ## Beyond the paper: the recommended configuration (issue #6)
#
# `sim.QuantConfig.recommended()` keeps per-token Q and K, smooths K (its per-channel mean removed, which
# leaves softmax unchanged), scales V per block of keys and channel, takes P's codes against each row's
# maximum within the key tile with 255 signed levels, and divides by what actually multiplied V. Each bar
# below undoes one of those options, so the figure says what each one buys on each input family.

# %%
rec_study = ex.recommended_study(size)
show(rec_study)

# %% [markdown]
# Conclusion (numbers above): the finer P codes (255 levels, tile-max scale) carry most of the gain on normal
# and real inputs; K smoothing is what matters on the LLM-like outlier family, where a shared per-channel
# offset of K otherwise takes the range of every per-token K scale. On uniform inputs V's own 8-bit rounding
# sets a floor (about 0.5x the paper's error, docs/recommended.md derives it) that no P or K option can cross.
