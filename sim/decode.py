"""Decoding in sim: key splits and their combine, per-sequence lengths and causal alignment, paged caches.

docs/spec.md, sections 3.6-3.8. Decoding reads a long key cache with a few queries; to spread that read over
the GPU the kernel cuts each sequence's key tiles into ``kv_splits`` contiguous splits, runs the online softmax
of section 3 on each split independently (from m = -inf), and combines the partial states. Each split has its own
running max, so its P codes differ from those of one pass over all keys: the split count is part of the numbers,
and this module is where they are defined.

- :func:`split_tile_ranges`: which key tiles each split visits (per sequence, from its own length).
- :func:`combine_splits`: the partial states merged in a fixed order (max first, then sums in split order).
- :func:`split_loop`: sim's loop run split by split, sequence by sequence, then combined.
- :func:`gather_pages`, :func:`paged_scale_shape`, :func:`check_paged_cache`: a paged INT8 cache (pages of
  ``page_size`` keys and a block table per sequence) as the contiguous arrays the loop reads. Gathering is exact.

Per-sequence lengths ``seq_lens`` mask keys at or past each sequence's end. The causal alignment says where the
queries sit among the keys: "top_left" (torch SDPA: query i at key position i) or "bottom_right" (the queries are
the newest tokens, as a serving engine decodes and prefills in chunks: query i of sequence b at key position
``seq_lens[b] - Nq + i``). A row that sees no key at all (only possible with these two) has out 0 and lse -inf.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from .loop import LoopState, Operands, _tile_loop
from .config import THREAD_GROUPS, QuantConfig, n_blocks
from .quant import scale_shape

_F32 = np.float32

#: Where query i of sequence b sits among the keys when causal: "top_left" at position i (torch SDPA),
#: "bottom_right" at seq_len_b - Nq + i (the queries are the sequence's newest tokens).
CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


@dataclasses.dataclass
class SplitPart:
    """One split of one sequence: the key tiles it visited, its partial state, and (traced) its tile steps.

    state : :class:`LoopState` of sequence ``batch`` alone: m, l (1, Hq, Nq), acc (1, Hq, Nq, D) float32.
    steps : the :class:`TileStep` list of this split (batch dimension 1), or None when not traced.
    """

    batch: int
    split: int
    tiles: range
    state: LoopState
    steps: list | None


# --- the split schedule and the combine ---------------------------------------------------------------


def check_kv_splits(kv_splits) -> int:
    """``kv_splits`` as an int >= 1; TypeError / ValueError naming the argument otherwise."""
    if isinstance(kv_splits, (bool, np.bool_)) or not isinstance(kv_splits, numbers.Integral):
        raise TypeError(f"kv_splits: expected an int >= 1, got {type(kv_splits).__name__}")
    if kv_splits < 1:
        raise ValueError(f"kv_splits: expected an int >= 1, got {kv_splits}")
    return int(kv_splits)


def check_causal_alignment(causal_alignment) -> str:
    """``causal_alignment`` if it is one of :data:`CAUSAL_ALIGNMENTS`; ValueError naming the argument otherwise."""
    if causal_alignment not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal_alignment: expected one of {list(CAUSAL_ALIGNMENTS)}, got {causal_alignment!r}")
    return causal_alignment


def split_tile_ranges(n_tiles: int, kv_splits: int) -> list[range]:
    """The key tiles each split visits: split s covers [s*T, (s+1)*T) clipped to n_tiles, T = ceil(n_tiles/kv_splits).

    Every tile belongs to exactly one split and the splits are in increasing key order. Only the last non-empty
    split can be shorter than T; the splits after it (when kv_splits does not divide evenly) are empty, as is every
    split of an empty sequence. Returns ``kv_splits`` ranges.
    """
    per_split = n_blocks(n_tiles, kv_splits)
    return [range(min(s * per_split, n_tiles), min((s + 1) * per_split, n_tiles)) for s in range(kv_splits)]


def combine_splits(parts: list) -> LoopState:
    """Merge the splits' partial states (:class:`LoopState`, in split order) into one, as the spec orders it::

        m     = max_s m_s                          (-inf where every split is empty for the row)
        m_sub = m, or 0 where m = -inf
        w_s   = exp2(m_s - m_sub)                  (0 for a split that saw no key of the row)
        l     = 0;  l   = l + l_s * w_s            for s = 0, 1, ... in split order
        acc   = 0;  acc = acc + acc_s * w_s        likewise

    With one split this is the identity (w = 1 exactly), so ``kv_splits=1`` is the single-pass loop's numbers.
    """
    m = parts[0].m
    for part in parts[1:]:
        m = np.maximum(m, part.m)
    m_sub = np.where(m == -np.inf, _F32(0.0), m)
    l = np.zeros_like(parts[0].l)
    acc = np.zeros_like(parts[0].acc)
    for part in parts:
        weight = np.exp2(part.m - m_sub)
        l = l + part.l * weight
        acc = acc + part.acc * weight[..., None]
    return LoopState(m, l, acc)


def query_offsets(seq_lens: np.ndarray, seq_q: int, causal_alignment: str) -> np.ndarray:
    """Key position of each sequence's query 0, (B,) int64: 0 ("top_left") or seq_len - Nq ("bottom_right")."""
    if causal_alignment == "top_left":
        return np.zeros(len(seq_lens), np.int64)
    return np.asarray(seq_lens, np.int64) - seq_q


def _sequence(ops: Operands, b: int) -> Operands:
    """The operands of sequence ``b`` alone (batch dimension 1); per-tensor scales (batch 1) are shared."""
    def pick(x):
        return x if x is None or x.shape[0] == 1 else x[b:b + 1]
    return Operands(*(pick(x) for x in (ops.q, ops.k, ops.v, ops.q_scale, ops.k_scale, ops.v_scale)))


def _key_range(ops: Operands, cfg: QuantConfig, tiles: range) -> Operands:
    """The operands restricted to the keys of ``tiles`` (non-empty): keys, per-key and per-tile scales sliced.

    The loop then sees the same values at positions shifted by ``tiles.start * block_n``: the same arithmetic,
    without every split copying the whole cache (its GQA head expansion is per call).
    """
    lo, hi = tiles.start * cfg.block_n, tiles.stop * cfg.block_n

    def keys_of(scale, granularity):
        if granularity in THREAD_GROUPS:  # a tile's per-thread groups are its scale rows (sim only)
            return scale[:, :, tiles.start * THREAD_GROUPS[granularity]:tiles.stop * THREAD_GROUPS[granularity]]
        keys = keys_per_scale_row(granularity, cfg.block_n)
        return scale if keys is None else scale[:, :, lo // keys:hi // keys]  # per tensor / channel: no key rows

    k_scale = keys_of(ops.k_scale, cfg.k_quant_granularity) if cfg.qk_scaled else ops.k_scale
    v_scale = keys_of(ops.v_scale, cfg.v_quant_granularity) if cfg.pv_scaled else ops.v_scale
    return Operands(ops.q, ops.k[:, :, lo:hi], ops.v[:, :, lo:hi], ops.q_scale, k_scale, v_scale)


def _split_state(ops: Operands, cfg: QuantConfig, tiles: range, *, is_causal: bool, scale: float, trace: bool,
                 seq_len: int, q_start: int):
    """One split of one sequence (batch dimension 1): (LoopState, steps), steps with absolute tiles and columns."""
    b, hq, nq, d = ops.q.shape
    if not tiles:  # an empty split keeps the initial state
        return LoopState(np.full((b, hq, nq), -np.inf, _F32), np.zeros((b, hq, nq), _F32),
                         np.zeros((b, hq, nq, d), _F32)), ([] if trace else None)
    offset = tiles.start * cfg.block_n
    state, steps = _tile_loop(_key_range(ops, cfg, tiles), cfg, is_causal=is_causal, scale=scale, trace=trace,
                              tiles=range(len(tiles)), q_start=np.array([q_start - offset], np.int64),
                              kv_len=np.array([seq_len - offset], np.int64))
    for step in steps or ():
        step.key_tile += tiles.start
        step.cols = slice(step.cols.start + offset, step.cols.stop + offset)
    return state, steps


def split_loop(ops: Operands, cfg: QuantConfig, *, is_causal: bool, scale: float, trace: bool, kv_splits: int,
               seq_lens, q_start):
    """The tile loop split by split (spec 3.6), each sequence on its own tiles; returns (LoopState, parts).

    ops : contiguous operands (a paged cache gathered by :func:`gather_pages`), K and V (B, Hkv, N, D) with
        N >= max(seq_lens). seq_lens : (B,) int, keys per sequence. q_start : (B,) int, the key position of each
        sequence's query 0 (:func:`query_offsets`).
    Returns the combined state for all sequences (m, l (B, Hq, Nq), acc (B, Hq, Nq, D) float32) and the list of
    :class:`SplitPart`, sequence-major, in split order.
    """
    states, parts = [], []
    for b in range(ops.q.shape[0]):
        ops_b = _sequence(ops, b)
        seq_len = int(seq_lens[b])
        mine = []
        for s, tiles in enumerate(split_tile_ranges(n_blocks(seq_len, cfg.block_n), kv_splits)):
            state, steps = _split_state(ops_b, cfg, tiles, is_causal=is_causal, scale=scale, trace=trace,
                                        seq_len=seq_len, q_start=int(q_start[b]))
            mine.append(SplitPart(b, s, tiles, state, steps))
        states.append(combine_splits([part.state for part in mine]))
        parts += mine
    state = LoopState(*(np.concatenate([getattr(st, name) for st in states]) for name in ("m", "l", "acc")))
    return state, parts


# --- per-sequence lengths and paged caches ----------------------------------------------------------------


def _int_array(x, name: str, ndim: int) -> np.ndarray:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer) or x.ndim != ndim:
        what = f"{x.ndim}-d {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected a {ndim}-d integer numpy array, got {what}")
    return x.astype(np.int64)


def check_seq_lens(seq_lens, *, batch: int, capacity: int, capacity_why: str) -> np.ndarray:
    """``seq_lens`` as (B,) int64 with every length in [0, capacity]; errors name the argument."""
    lens = _int_array(seq_lens, "seq_lens", 1)
    if lens.shape != (batch,):
        raise ValueError(f"seq_lens: expected shape ({batch},) (one length per sequence of query), got {lens.shape}")
    bad = np.flatnonzero((lens < 0) | (lens > capacity))
    if bad.size:
        raise ValueError(f"seq_lens: expected lengths in [0, {capacity}] ({capacity_why}), got {int(lens[bad[0]])} "
                         f"for sequence {int(bad[0])}")
    return lens


def check_paged_cache(block_table, seq_lens, *, batch: int, num_pages: int, page_size: int):
    """Validate a paged cache's block table and lengths; returns both as int64 arrays.

    block_table : (B, max_pages) integers, row b the pages of sequence b in key order. Only the first
        ceil(seq_lens[b] / page_size) entries of a row are read, and each must be a page index in
        [0, num_pages); the rest (e.g. -1 padding) are never read. Pages may repeat (shared prefixes).
    seq_lens : (B,) integers in [0, max_pages * page_size].
    """
    table = _int_array(block_table, "block_table", 2)
    if table.shape[0] != batch:
        raise ValueError(f"block_table: expected {batch} rows (one per sequence of query), got shape {table.shape}")
    lens = check_seq_lens(seq_lens, batch=batch, capacity=table.shape[1] * page_size,
                          capacity_why=f"block_table holds {table.shape[1]} pages of {page_size} keys per sequence")
    used = np.arange(table.shape[1])[None, :] < n_blocks(lens, page_size)[:, None]
    bad = np.argwhere(used & ((table < 0) | (table >= num_pages)))
    if bad.size:
        b, p = (int(i) for i in bad[0])
        raise ValueError(f"block_table: expected page indices in [0, {num_pages}) for the pages sequence {b} uses, "
                         f"got {int(table[b, p])} at [{b}, {p}]")
    return table, lens


def keys_per_scale_row(granularity: str, block_n: int) -> int | None:
    """How many keys one row (dimension 2) of a scale tensor covers at ``granularity`` (sim.quantize's vocabulary):
    1 for "token", ``block_n`` for "block" and "block_channel"; None where the scale has no key dimension
    ("tensor", "channel"). These are the scales that are paged like the codes and masked past a length."""
    return {"token": 1, "block": block_n, "block_channel": block_n}.get(granularity)


def paged_scale_shape(granularity: str, *, num_pages: int, heads: int, page_size: int, head_dim: int, batch: int,
                      block_n: int) -> tuple:
    """The shape of a paged cache's scales (docs/spec.md 3.8): stored like the groups they scale.

    Groups of keys ("token": one key; "block", "block_channel": ``block_n`` keys, which tile a page exactly) live
    in pages as the codes do: (num_pages, heads, page_size or page_size / block_n, 1 or head_dim). A group
    spanning whole sequences ("channel") has one scale per sequence: (batch, heads, 1, head_dim). "tensor":
    (1, 1, 1, 1).
    """
    if keys_per_scale_row(granularity, block_n) is not None:
        return scale_shape((num_pages, heads, page_size, head_dim), granularity, block_n)
    return scale_shape((batch, heads, 1, head_dim), granularity)


def gather_pages(pages: np.ndarray, block_table: np.ndarray, seq_lens, *, keys_per_row: int = 1, fill=0):
    """A paged tensor as a contiguous one: (B, H, max_pages * rows_per_page, X), exactly the stored values.

    pages : (num_pages, H, rows_per_page, X): codes (a row per key) or per-key / per-tile scales (a row per
        ``keys_per_row`` keys). block_table : (B, max_pages) page indices (see :func:`check_paged_cache`).
    Rows at or past each sequence's end (``ceil(seq_lens[b] / keys_per_row)``) hold ``fill``, as the kernel's
    masked loads read them; the table entries of pages a sequence does not use are never read.
    """
    b, max_pages = block_table.shape
    _, h, rows, x = pages.shape
    out = np.full((b, h, max_pages * rows, x), fill, pages.dtype)
    for i in range(b):
        valid = n_blocks(int(seq_lens[i]), keys_per_row)
        used = n_blocks(valid, rows)
        if used:
            gathered = pages[np.asarray(block_table[i, :used], np.int64)]  # (used, H, rows, X)
            out[i, :, : used * rows] = gathered.transpose(1, 0, 2, 3).reshape(h, used * rows, x)
        out[i, :, valid:] = fill
    return out


def mask_past_lengths(x: np.ndarray, seq_lens, *, keys_per_row: int = 1, fill=0) -> np.ndarray:
    """A contiguous (B, H, rows, X) tensor with rows at or past each sequence's end set to ``fill`` (a copy)."""
    out = x.copy()
    for i in range(x.shape[0]):
        out[i, :, n_blocks(int(seq_lens[i]), keys_per_row):] = fill
    return out
