"""The authors' defects measured (:mod:`sim.authors` emulates them): causal running max, normalizer, tails."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

import sim
from sim import authors

from .figures import Study, fmt
from .harness import facet_titles, get_size, log2_ticks, reference, study_params
from .inputs import SYNTHETIC_FAMILIES, synthetic_qkv


def causal_defect_study(size="small", families=("normal", "uniform"), *, name="accuracy/authors_causal_defect",
                        progress=True) -> Study:
    """Causal error vs float64: the project's (sim) against the authors' kernel, running max lost."""
    size = get_size(size)
    config = authors.authors_config()
    rows = []
    for n in tqdm(size.causal_seq_lens, desc="causal defect", disable=not progress, leave=False):
        for fam, seed in itertools.product(families, size.seeds):
            q, k, v = synthetic_qkv(fam, seq_len=n, heads=size.heads, head_dim=size.head_dim, seed=seed)
            ref = reference(q, k, v, is_causal=True)
            outs = {"project (sim)": sim.attention(q, k, v, is_causal=True, config=config),
                    "authors (running max lost)": authors.causal_running_max_lost(q, k, v, config=config)}
            for variant, out in outs.items():
                rows.append({"family": fam, "sample": seed, "seq_len": n, "variant": variant,
                             **sim.all_metrics(out, ref)})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["family", "seq_len", "variant"])["rel_l2"].mean()
    n_max = max(size.causal_seq_lens)
    findings = [f"{fam}, N={n_max}: project {fmt(means[(fam, n_max, 'project (sim)')])}, authors "
                f"{fmt(means[(fam, n_max, 'authors (running max lost)')])} (rel. L2)" for fam in families]
    ratio = min(means[(fam, n_max, "authors (running max lost)")] / means[(fam, n_max, "project (sim)")]
                for fam in families)
    grid = sns.relplot(data=frame, x="seq_len", y="rel_l2", hue="variant", col="family", kind="line", marker="o",
                       errorbar=("pi", 100), height=3, aspect=1.2)
    grid.set(xscale="log", yscale="log")
    log2_ticks(grid, size.causal_seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "relative L2 error vs float64 (causal)")
    facet_titles(grid).figure.suptitle(f"Causal full INT8: the authors' kernel errs {fmt(ratio)}x or more "
                                       f"than the project's at N={n_max}", y=1.04)
    caption = ("The authors' kernel forgets the running max before the diagonal block, so each query sees only "
               f"the {config.block_m} keys of its own tile: its error is of order 1, not quantization-sized.")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=list(families)))


def normalizer_bias_study(size="small", families=SYNTHETIC_FAMILIES, *, name="accuracy/authors_normalizer_bias",
                          progress=True) -> Study:
    """The bias of a normalizer that sums float P, probed with V = 1 (exact output: 1 everywhere).

    With V = 1 the V codes are exactly 127 and float64 attention gives exactly 1, so ``mean(out) - 1`` is
    the normalizer's bias and nothing else: sum(round(127 P)) / (127 sum P) - 1 for the float normalizer.
    """
    size = get_size(size)
    rows = []
    for n in tqdm(size.bias_seq_lens, desc="normalizer bias", disable=not progress, leave=False):
        for fam, seed in itertools.product(families, size.seeds):
            q, k, _ = synthetic_qkv(fam, seq_len=n, heads=size.bias_heads, head_dim=size.head_dim, seed=seed)
            ones = np.ones_like(k)
            for norm in sim.NORMALIZERS:
                out = sim.attention(q, k, ones, config=authors.authors_config().replace(normalizer=norm))
                rows.append({"family": fam, "sample": seed, "seq_len": n, "normalizer": norm,
                             "bias": float(out.astype(np.float64).mean() - 1.0),
                             "max_abs_bias": float(np.abs(out.astype(np.float64) - 1.0).max())})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["family", "seq_len", "normalizer"])["bias"].mean()
    findings = [f"{fam}, N={n}: l float {100 * means[(fam, n, 'float')]:+.3f}%, l quantized "
                f"{100 * means[(fam, n, 'quantized')]:+.2g}%" for fam in families for n in (min(size.bias_seq_lens),
                                                                                           max(size.bias_seq_lens))]
    worst = float(means.xs("float", level="normalizer").abs().max())
    fixed = float(means.xs("quantized", level="normalizer").abs().max())
    plot = frame.assign(bias_percent=100 * frame["bias"])
    grid = sns.relplot(data=plot, x="seq_len", y="bias_percent", hue="normalizer", col="family", kind="line",
                       marker="o", errorbar=("pi", 100), height=3, aspect=1.1)
    grid.set(xscale="log")
    for ax in grid.axes.flat:
        ax.axhline(0, color="0.5", lw=0.8)
    log2_ticks(grid, size.bias_seq_lens)
    grid.set_axis_labels("sequence length N (tokens)", "mean output bias with V = 1 (%)")
    facet_titles(grid).figure.suptitle(f"Normalizer summing float P: bias up to {100 * worst:.2g}% "
                                       f"(summing the codes: {100 * fixed:.1g}%)", y=1.04)
    caption = ("With V = 1 the exact output is 1; the curve is the mean of (output - 1) over every element. "
               "The authors' l sums float P while the numerator multiplies round(127 P).")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, families=list(families)))


def tail_defect_study(size="small", family="normal", *, name="accuracy/authors_tail_defect", progress=True) -> Study:
    """Non-causal error when N is not a multiple of BLOCK_N: masked (project) vs read past the end (authors)."""
    size = get_size(size)
    config = authors.authors_config()
    heads = max(2, size.heads)
    rows = []
    for n in tqdm(size.tail_seq_lens, desc="tail defect", disable=not progress, leave=False):
        for seed in size.seeds:
            q, k, v = synthetic_qkv(family, seq_len=n, heads=heads, head_dim=size.head_dim, seed=seed)
            ref = reference(q, k, v)
            outs = {"project (sim)": sim.attention(q, k, v, config=config),
                    "authors": authors.tail_past_block(q, k, v, config=config, garbage_seed=seed)}
            for variant, out in outs.items():
                for h in range(heads):
                    reads = "none" if n % config.block_n == 0 else ("next head's rows" if h < heads - 1
                                                                    else "past the tensor's end")
                    label = variant if variant.startswith("project") else f"authors, reading {reads}"
                    rows.append({"family": family, "sample": seed, "seq_len": n, "head": h, "variant": label,
                                 "keys_read_past_n": (-n) % config.block_n,
                                 **sim.all_metrics(out[:, h:h + 1], ref[:, h:h + 1])})
    frame = pd.DataFrame(rows)
    means = frame.groupby(["seq_len", "variant"])["rel_l2"].mean()
    findings = [f"N={n} ({(-n) % config.block_n} keys read past N): " +
                ", ".join(f"{variant} {fmt(means[(n, variant)])}" for variant in means.loc[n].index)
                for n in size.tail_seq_lens]
    project = means.xs("project (sim)", level="variant")
    authors_min = means.drop(index="project (sim)", level="variant").min()
    # Points, not bars: the errors span decades, and a bar on a log axis has no meaningful length.
    grid = sns.catplot(data=frame, x="seq_len", y="rel_l2", hue="variant", kind="point", errorbar=("pi", 100),
                       dodge=0.4, linestyle="none", markers="o", height=3.2, aspect=1.8)
    grid.set(yscale="log")
    grid.set_axis_labels("sequence length N (tokens; BLOCK_N = 64)", "relative L2 error vs float64, per head")
    grid.figure.suptitle(f"Tails past the block: reading the next rows raises the error from "
                         f"{fmt(project.max())} or less to {fmt(authors_min)} or more", y=1.04)
    caption = ("Non-causal; points: mean over heads and seeds, whiskers their min to max. The authors' kernel reads "
               "whole key tiles: past N it takes the next head's first rows, or for the last head unrelated memory "
               "(modelled as random codes).")
    return Study(name, frame, grid.figure, caption, findings, study_params(size, family=family))
