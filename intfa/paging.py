"""Paged INT8 KV caches: a contiguous cache written into fixed-size pages with a block table per sequence.

:func:`page_operands` lays out what :func:`intfa.quantize_operands` returns the way a paged serving engine keeps
it (docs/spec.md 3.8): K and V codes in pages of ``page_size`` keys, (num_pages, Hkv, page_size, D), V
sequence-contiguous within each page; per-key and per-block scales in pages like the codes; per-tensor,
per-head and per-channel scales unpaged. ``intfa.attention_int8(*paged.args, block_table=paged.block_table,
seq_lens=paged.seq_lens, config=config)`` then gives the contiguous cache's bytes. The benchmark's
``int8-paged`` provider and scripts/tune_decode.py use it; so can a user building a cache to test against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sim.config import QuantConfig, n_blocks
from sim.decode import keys_per_scale_row

from .api import Operands


class PagedOperands(NamedTuple):
    """Q and a paged K/V cache, in :func:`intfa.attention_int8`'s argument order (``args``), with its table."""

    q_codes: torch.Tensor
    k_pages: torch.Tensor
    v_pages: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor

    @property
    def args(self) -> tuple:
        """The six positional arguments of :func:`intfa.attention_int8`."""
        return self[:6]


def page_operands(ops: Operands, config: QuantConfig, page_size: int, *, seed: int | None = 0) -> PagedOperands:
    """``ops`` (full INT8, from :func:`intfa.quantize_operands`) as a paged cache of ``page_size``-key pages.

    Sequence b's chunk p (keys [p * page_size, (p + 1) * page_size)) goes to page ``block_table[b, p]``; with a
    ``seed`` the pages are shuffled (a cache that grew in any order), with None they follow each other. The last
    page of each sequence is zero-padded; ``seq_lens`` is Nk for every sequence. ``page_size`` must be a multiple
    of ``config.block_n`` (the kernels' key tiles may not straddle pages).
    """
    if page_size < 1 or page_size % config.block_n:
        raise ValueError(f"page_size: expected a positive multiple of config.block_n={config.block_n}, got {page_size}")
    q8, k8, v8, q_scale, k_scale, v_scale = ops
    b, _, nk, _ = k8.shape
    per_seq = n_blocks(nk, page_size)
    device = k8.device
    if seed is None:
        order = torch.arange(b * per_seq, device=device)
    else:
        order = torch.randperm(b * per_seq, generator=torch.Generator().manual_seed(seed)).to(device)
    block_table = order.view(b, per_seq).to(torch.int32)

    def pages(x: torch.Tensor, keys_per_row: int) -> torch.Tensor:
        """(B, H, rows, C) -> (num_pages, H, rows per page, C): chunk i of the flattened sequences at order[i]."""
        rows = page_size // keys_per_row
        padded = x.new_zeros((b, x.shape[1], per_seq * rows, x.shape[3]))
        padded[:, :, : x.shape[2]] = x
        chunks = padded.unflatten(2, (per_seq, rows)).transpose(1, 2).flatten(0, 1)
        out = torch.empty_like(chunks)
        out[order] = chunks
        return out

    def paged_scale(scale: torch.Tensor, granularity: str) -> torch.Tensor:
        keys_per_row = keys_per_scale_row(granularity, config.block_n)
        return scale if keys_per_row is None else pages(scale, keys_per_row)

    v_pages = pages(v8, 1).transpose(2, 3).contiguous().transpose(2, 3)  # sequence-contiguous within a page
    seq_lens = torch.full((b,), nk, dtype=torch.int32, device=device)
    return PagedOperands(q8, pages(k8, 1), v_pages, q_scale, paged_scale(k_scale, config.k_granularity),
                         paged_scale(v_scale, config.v_quant_granularity), block_table, seq_lens)
