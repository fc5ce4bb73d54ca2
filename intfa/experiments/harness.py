"""The sweep harness of the accuracy studies: sizes, the float64 reference, the sweep, shared plot helpers.

Every error is measured against float64 attention (:func:`sim.reference_attention`) over every output
element; the paper's MRE (:func:`sim.mre_paper`, 4 elements) is reported only to compare with the paper.
A study module (:mod:`.blocks`, :mod:`.granularity`, ...) builds configurations, runs them through
:func:`sweep` on :func:`study_cases`, and turns the tidy frame into a :class:`~.figures.Study` whose findings
are sentences computed from that frame, so that what a figure says is what was measured.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import sim

from .inputs import FAMILIES, input_cases, real_available

METRICS = ("rel_l2", "max_abs", "cosine", "mre_paper", "mre_all")


# --- sizes --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Size:
    """How big each study runs. "small" is for CI and notebooks' default; "full" for the results.

    seeds : synthetic samples per family (bands over them); heads, head_dim, seq_len : synthetic shape
    of the block and granularity studies; block_sizes : BLOCK_N (and BLOCK_M) swept; grid_seeds :
    samples per family and block sizes of the BLOCK_M x BLOCK_N grid (``grid_blocks``); seq_lens : N of
    the format study; causal_seq_lens and tail_seq_lens : N of the defect studies; bias_seq_lens,
    bias_heads : the normalizer probe (no reference needed, so it reaches further); real_tokens : text
    length of the real activations; format_heads : heads of each sample of the format study (None:
    ``heads``); query_rows : at most this many query rows of each of those heads are measured by the format
    study (every key is attended; None: every row), see :func:`subsample_queries`. Sim's cost per head
    grows with N at a rate nearly independent of the rows measured (the keys and values are prepared per
    head), so at long N one head with many rows measures as many elements as several with few, for less.
    """

    name: str
    seeds: tuple
    heads: int
    head_dim: int
    seq_len: int
    block_sizes: tuple
    grid_blocks: tuple
    grid_seeds: tuple
    seq_lens: tuple
    causal_seq_lens: tuple
    tail_seq_lens: tuple
    bias_seq_lens: tuple
    bias_heads: int
    real_tokens: int
    format_heads: int | None = None
    query_rows: int | None = None


SIZES = {
    "small": Size("small", seeds=(0, 1), heads=2, head_dim=64, seq_len=256, block_sizes=(16, 32, 64, 128, 256),
                  grid_blocks=(16, 64, 256), grid_seeds=(0,), seq_lens=(128, 256, 512), causal_seq_lens=(256, 512),
                  tail_seq_lens=(200, 255), bias_seq_lens=(256, 1024), bias_heads=2, real_tokens=128),
    "full": Size("full", seeds=(0, 1, 2), heads=4, head_dim=64, seq_len=1024, block_sizes=(16, 32, 64, 128, 256),
                 grid_blocks=(16, 32, 64, 128, 256), grid_seeds=(0,), seq_lens=(1024, 2048, 4096, 8192, 16384),
                 causal_seq_lens=(512, 1024, 2048, 4096),
                 tail_seq_lens=(1000, 1025, 2047), bias_seq_lens=(256, 1024, 4096, 16384), bias_heads=1,
                 real_tokens=512, format_heads=1, query_rows=2048),
}


def get_size(size: str | Size) -> Size:
    """A :class:`Size` from its name ("small" or "full"), or itself."""
    if isinstance(size, Size):
        return size
    if size not in SIZES:
        raise ValueError(f"size: expected one of {list(SIZES)}, got {size!r}")
    return SIZES[size]


def usable_families(families: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    """``families`` without "real" where it cannot be captured, and the reason (None if nothing dropped)."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"families: expected names from {FAMILIES}, got {unknown}")
    if "real" in families:
        ok, reason = real_available()
        if not ok:
            warnings.warn(reason, stacklevel=2)
            return tuple(f for f in families if f != "real"), reason
    return tuple(families), None


# --- measurement --------------------------------------------------------------------------------------


def reference(q, k, v, *, is_causal=False) -> np.ndarray:
    """float64 attention (:func:`sim.reference_attention`), one (batch, head) at a time to bound memory."""
    out = np.empty(q.shape, np.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            sl = (slice(b, b + 1), slice(h, h + 1))
            out[sl] = sim.reference_attention(q[sl], k[sl], v[sl], is_causal=is_causal)
    return out


def config_fields(config: sim.QuantConfig) -> dict:
    """The configuration as columns of a tidy frame."""
    return dataclasses.asdict(config)


def sweep(configs: Mapping[str, sim.QuantConfig], cases, *, is_causal=False, total_cases=None,
          desc="sweep", progress=True, on_error="raise") -> pd.DataFrame:
    """Run every configuration on every input case; one row per (case, configuration).

    configs : name -> :class:`sim.QuantConfig`; cases : iterable of :class:`InputCase`.
    on_error : "raise", or "record": a configuration that sim rejects gets NaN metrics and its error
        message in the ``error`` column, so that one unsupported setting leaves a visible hole in the
        figure instead of no figure.
    Columns: family, sample, seq_len (keys), query_rows (measured), heads, head_dim, config, the config's
    fields, METRICS, error.
    """
    if not configs:
        raise ValueError("configs: expected at least one configuration")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error: expected 'raise' or 'record', got {on_error!r}")
    rows = []
    total = None if total_cases is None else total_cases * len(configs)
    with tqdm(total=total, desc=desc, disable=not progress, leave=False) as bar:
        for case in cases:
            ref = reference(case.q, case.k, case.v, is_causal=is_causal)
            for name, config in configs.items():
                error = None
                try:
                    out = sim.attention(case.q, case.k, case.v, is_causal=is_causal, config=config)
                    metrics = sim.all_metrics(out, ref)
                except ValueError as err:
                    if on_error == "raise":
                        raise
                    error, metrics = f"{type(err).__name__}: {err}", dict.fromkeys(METRICS, np.nan)
                rows.append({"family": case.family, "sample": case.sample, "seq_len": case.seq_len,
                             "query_rows": case.q.shape[2], "heads": case.q.shape[1], "head_dim": case.q.shape[3],
                             "config": name,
                             **config_fields(config), **metrics, "error": error})
                bar.update()
    return pd.DataFrame(rows)


def sweep_failures(frame: pd.DataFrame, label_column: str) -> list[str]:
    """Findings naming each configuration sim could not run (recorded by :func:`sweep`)."""
    failed = frame[frame["error"].notna()]
    return [f"not measured, sim raised for '{label}': {msg}"
            for label, msg in failed.groupby(label_column)["error"].first().items()]


def study_cases(size: Size, families, seeds=None, seq_len=None, heads=None, query_rows=None):
    """(the input cases of ``families`` at ``size``, their count for a progress bar).

    seeds, seq_len, heads : override ``size.seeds`` / ``size.seq_len`` / ``size.heads``. "real" counts its 6
    layers (MiniLM). query_rows : keep at most this many query rows of each case (:func:`subsample_queries`);
    None keeps all.
    """
    seeds = size.seeds if seeds is None else seeds
    cases = input_cases(families, seq_len=seq_len or size.seq_len, heads=heads or size.heads,
                        head_dim=size.head_dim, seeds=seeds, real_tokens=size.real_tokens)
    if query_rows is not None:
        cases = (subsample_queries(case, query_rows) for case in cases)
    n_real = 6 if "real" in families else 0  # MiniLM has 6 layers
    return cases, len(seeds) * len([f for f in families if f != "real"]) + n_real


def measured_rows(n: int, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` query rows, evenly spaced, the last one included (the paper's
    MRE reads the last output elements), in increasing order."""
    for name, value in (("n", n), ("limit", limit)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if n <= limit:
        return np.arange(n)
    if limit == 1:
        return np.array([n - 1])
    return np.floor(np.linspace(0, n - 1, limit)).astype(np.int64)  # from 0 to n - 1, spacing >= 1: distinct


def rows_independent(config: sim.QuantConfig) -> bool:
    """Whether each output row of non-causal attention depends on its own query row alone (and all keys).

    True for float Q and for integer Q scaled per token; a tensor or block Q scale mixes rows.
    """
    return not config.qk_is_int or config.q_granularity == "token"


def subsample_queries(case, limit: int):
    """``case`` with at most ``limit`` query rows (:func:`measured_rows`), every key and value kept.

    For a configuration where :func:`rows_independent` holds, the non-causal output of these rows is the
    same rows of the full output: bit for bit where the products are exact (integer P @ V), and up to
    float32 summation order where BLAS sums float products in a shape-dependent order (relative difference
    of order 1e-6, tested below 1e-5, against errors of 2e-4 and more). So the error at a long N can be
    measured on a sample of its rows for a fraction of the cost.
    """
    rows = measured_rows(case.q.shape[2], limit)
    if len(rows) == case.q.shape[2]:
        return case
    return dataclasses.replace(case, q=np.ascontiguousarray(case.q[:, :, rows]))


def study_params(size: Size, **extra) -> dict:
    """A study's ``params`` record: the size it ran at and its own settings."""
    return {"size": dataclasses.asdict(size)} | extra


def log2_ticks(grid, values):
    """Tick exactly the swept values on a log x axis (no minor-tick clutter)."""
    for ax in grid.axes.flat:
        ax.set_xticks(list(values), [str(v) for v in values])
        ax.minorticks_off()


def facet_titles(grid, template="{col_name}"):
    """Short facet titles (seaborn's default repeats the column name); returns ``grid`` for chaining."""
    grid.set_titles(template)
    return grid
