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
# # 01 · INT8 FlashAttention, one head, tile by tile
#
# One (batch, head) at a small size, run through `sim.attention_trace`, which keeps every key tile's
# intermediates: the integer scores `Q8 K8ᵀ`, the scaled scores `S` (in the exp2 domain, as the kernels
# work), the running max `m`, `P = exp2(S − m)` and its 8-bit codes, the normalizer `l` and the
# accumulator. Then the authors' three code defects, emulated in `sim.authors`, on the same kind of input.

# %% tags=["parameters"]
import os

SIZE = os.environ.get("INTFA_NOTEBOOK_SIZE", "small")  # "small" (quick, CI) or "full" (the committed figures' sizes)
# A full-size run saves its figures under results/scratch/; True (or INTFA_UPDATE_RESULTS=1) writes results/.
UPDATE_RESULTS = os.environ.get("INTFA_UPDATE_RESULTS") == "1"

# %%
import pandas as pd

import sim
from intfa import experiments as ex
from intfa.experiments import stepthrough

OUT = ex.notebook_out_dir(SIZE, update_results=UPDATE_RESULTS)
SEQ_LEN, HEAD_DIM = 160, 32
config = sim.QuantConfig.paper().replace(block_m=32, block_n=32)
q, k, v = stepthrough.one_head(SEQ_LEN, HEAD_DIM, seed=0)
trace = sim.attention_trace(q, k, v, config=config)
print(f"N={SEQ_LEN}, D={HEAD_DIM}, {config}; {len(trace.steps)} key tiles")

# %% [markdown]
# ## The quantized operands
# Q and K are quantized per token (one float32 scale per row, `max|row| / 127`), V per (batch, head).

# %%
ops = trace.operands
pd.DataFrame({
    "Q scale (first 6 rows)": ops.q_scale[0, 0, :6, 0], "K scale (first 6 rows)": ops.k_scale[0, 0, :6, 0],
}).assign(**{"V scale (this head)": float(ops.v_scale.ravel()[0])})

# %% [markdown]
# ## One key tile
# The first tile, all 160 query rows: the exact int32 product, the scaled scores, P and its codes. What to see:
# P is mostly dark (small) with a few bright keys per row, and the codes follow P in 127 steps.

# %%
fig = stepthrough.plot_tile(trace, 0)

# %% [markdown]
# The title gives the share of P codes that are 0: those keys contribute nothing to `P8 @ V8`. With 127
# fixed levels every P below 1/254 is lost, which is why P's resolution dominates the INT8 error (notebook 02).
# The last tile, after the running max has settled:

# %%
fig = stepthrough.plot_tile(trace, len(trace.steps) - 1)

# %% [markdown]
# ## The running state across tiles
# `m` only rises; when it does, `alpha < 1` rescales what `l` and the accumulator already hold.

# %%
fig = stepthrough.plot_running_state(trace)

# %% [markdown]
# The same, as a table for one query row: `sum_codes / 127` is what the numerator multiplied, `sum_p`
# what the paper's normalizer adds.

# %%
table = stepthrough.tile_table(trace, row=100)
table  # noqa: B018 (the notebook shows it)

# %%
ref = sim.reference_attention(q, k, v)
print(f"rel. L2 vs float64 of this head: {sim.relative_l2(trace.out, ref):.3g}; "
      f"row 100: l (float P) = {table['l'].iloc[-1]:.4f}, codes/127 summed with the same rescaling gives "
      f"{sim.attention_trace(q, k, v, config=config.replace(normalizer='quantized')).steps[-1].l[0, 0, 100] / 127:.4f}")

# %% [markdown]
# ## The authors' three defects, against the project's behaviour
# `sim.authors` emulates the original Triton code by arranging operands as it does and running the same
# tile loop: (1) causal: the running max is not carried into the diagonal stage, so each query keeps only
# its own tile's keys; (2) the normalizer sums float P while the numerator uses `round(127 P)`; (3) the last
# key tile is read whole past N. Here N=200 with BLOCK_M=64, BLOCK_N=32.

# %%
defects = stepthrough.defects_per_row(seq_len=200, head_dim=HEAD_DIM, block_m=64, block_n=32)
defects.save(OUT)
print(defects.report())

# %%
frame = defects.frame
median_abs = frame.assign(value=frame["value"].abs()).groupby(["defect", "variant"])["value"].median()
causal_key = next(d for d in frame["defect"].unique() if d.startswith("causal"))
bias_key = next(d for d in frame["defect"].unique() if d.startswith("normalizer"))
print(f"median |bias| of the float normalizer: {median_abs[(bias_key, 'authors')]:.2g}; median per-row error of "
      f"the project's causal INT8: {median_abs[(causal_key, 'project')]:.2g} "
      f"(ratio {median_abs[(bias_key, 'authors')] / median_abs[(causal_key, 'project')]:.2g})")

# %% [markdown]
# What to see: in the causal panel the authors' rows match the project's for the first query tile (nothing
# precedes its diagonal block) and then jump to order-1 errors; in the tail panel every authors row carries the
# keys read past N. The normalizer's bias is the printed ratio of the quantization error itself: the fix costs
# nothing, and the numbers above say how much it buys on this input.
