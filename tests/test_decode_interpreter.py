"""Decoding (docs/spec.md 3.6-3.8): sim's splits, lengths and paged caches, and the decode kernel under
TRITON_INTERPRET=1 against them, bit for bit (contract level 1).

sim first (NumPy only, fast): the split schedule, kv_splits=1 as the single pass, splits within the a-priori error
bound, paged = contiguous gathered, rows that see no key, bad arguments. Then the kernel: every configuration,
splits, GQA packing, lengths, both causal alignments and paged caches with holes, shared pages and poisoned unused
memory give sim's output and log-sum-exp bits; one split is the prefill kernel; the default split count is
decode_splits'; the per-tile trace is sim's; an unvalidated bad block table gives NaN, not another sequence's data.

Sizes stay small (the interpreter is slow): the file runs in about a minute on two cores.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sim
from sim.config import default_scale, n_blocks
from strategies import (DECODE_GROUPS, attention_cases, decode_cases, int8_configs, make_block_table,
                        make_paged_cache, make_qkv, paged_tables)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton decorates the kernels
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED, attention_forward  # noqa: E402
from intfa.kernels.decode import COMBINE_SPLIT_CHUNK  # noqa: E402
from intfa.kernels.dispatch import (  # noqa: E402
    MAX_KV_SPLITS, DecodeLaunch, Launch, decode_launch, decode_splits, decode_tiles_in_flight, split_count)
from test_kernel_interpreter import assert_same_bits, half_int8_tolerance, quantize_like_sim, t  # noqa: E402

SMALL_BLOCKS = (16, 32)
INT32_MIN = np.iinfo(np.int32).min
interpreter_only = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")


@st.composite
def small_configs(draw):
    """Every full-INT8 option (granularities, P schemes and scales, normalizers) at the interpreter's small tiles."""
    return draw(int8_configs(blocks=SMALL_BLOCKS))


def sim_int8(codes, scales, cfg, case, **kwargs):
    """sim.attention_int8's (out, lse) for a decode case's arguments (``kwargs`` override them)."""
    args = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=True, config=cfg, return_lse=True,
                kv_splits=case["kv_splits"], seq_lens=case["seq_lens"], causal_alignment=case["causal_alignment"])
    return sim.attention_int8(*codes, *scales, **{**args, **kwargs})


def kernel_int8(codes, scales, cfg, case, *, v_seq_contiguous=False, **kwargs):
    """intfa.attention_int8's (out, lse) in float32 for the same arguments (torch CPU tensors)."""
    q8, k8, v8 = map(t, codes)
    if v_seq_contiguous:  # the cache layout Hopper wants: keys contiguous
        v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)
    seq_lens = case["seq_lens"]
    args = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=True, config=cfg, return_lse=True,
                kv_splits=case["kv_splits"], seq_lens=None if seq_lens is None else t(seq_lens),
                causal_alignment=case["causal_alignment"], out_dtype=torch.float32)
    out, lse = intfa.attention_int8(q8, k8, v8, *map(t, scales), **{**args, **kwargs})
    return out.numpy(), lse.numpy()


def fixed_case(*, batch=1, heads_q=2, heads_kv=1, seq_q=1, seq_k=100, head_dim=32, seed=0, distribution="normal",
               is_causal=False, causal_alignment="top_left", kv_splits=1, seq_lens=None, scale=None):
    """A decode case in the format of strategies.decode_cases (for @example and fixed tests)."""
    rng = np.random.default_rng(seed)
    q, k, v = make_qkv(rng, (batch, heads_q, seq_q, head_dim), (batch, heads_kv, seq_k, head_dim), distribution)
    return dict(q=q, k=k, v=v, seq_lens=None if seq_lens is None else np.asarray(seq_lens, np.int32),
                is_causal=is_causal, causal_alignment=causal_alignment, kv_splits=kv_splits, scale=scale,
                distribution=distribution)


# --- sim: the split schedule and the combine ----------------------------------------------------------------


@given(st.integers(0, 200), st.integers(1, 40))
def test_split_schedule_partitions_the_tiles_in_order(n_tiles, kv_splits):
    ranges = sim.split_tile_ranges(n_tiles, kv_splits)
    assert len(ranges) == kv_splits
    assert [j for r in ranges for j in r] == list(range(n_tiles)), "every tile once, in increasing order"
    per_split = n_blocks(n_tiles, kv_splits)
    lengths = [len(r) for r in ranges]
    nonempty = [n for n in lengths if n]
    assert all(n == per_split for n in nonempty[:-1]), f"only the last non-empty split may be short: {lengths}"
    assert lengths == nonempty + [0] * (kv_splits - len(nonempty)), "empty splits come last"


@given(attention_cases(max_seq=120, head_dims=(16, 32)), small_configs())
def test_sim_one_split_is_the_single_pass(case, cfg):
    """kv_splits=1 is the single pass's bits, whether the split path runs (full lengths given) or not."""
    kwargs = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=case["enable_gqa"], config=cfg,
                  return_lse=True)
    out, lse = sim.attention(case["q"], case["k"], case["v"], **kwargs)
    out1, lse1 = sim.attention(case["q"], case["k"], case["v"], kv_splits=1, **kwargs)
    assert_same_bits(out1, out, "kv_splits=1 output")
    assert_same_bits(lse1, lse, "kv_splits=1 lse")
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    full = np.full(case["q"].shape[0], case["k"].shape[2], np.int32)
    out_split_path, lse_split_path = sim.attention_int8(*codes, *scales, seq_lens=full, **kwargs)
    assert_same_bits(out_split_path, out, "kv_splits=1 through the split path, output")
    assert_same_bits(lse_split_path, lse, "kv_splits=1 through the split path, lse")


def test_combine_of_one_split_is_the_identity_and_of_empty_splits_a_no_op():
    rng = np.random.default_rng(0)
    part = sim.LoopState(rng.standard_normal((1, 2, 3)).astype(np.float32),
                         rng.uniform(1, 5, (1, 2, 3)).astype(np.float32), rng.standard_normal((1, 2, 3, 4)).astype(np.float32))
    empty = sim.LoopState(np.full((1, 2, 3), -np.inf, np.float32), np.zeros((1, 2, 3), np.float32),
                          np.zeros((1, 2, 3, 4), np.float32))
    for parts in ([part], [empty, part, empty]):
        merged = sim.combine_splits(parts)
        for name in ("m", "l", "acc"):
            assert_same_bits(getattr(merged, name), getattr(part, name), f"{name} of {len(parts)} parts")
    nothing = sim.combine_splits([empty, empty])
    assert (nothing.m == -np.inf).all() and (nothing.l == 0).all() and (nothing.acc == 0).all()


@settings(max_examples=15)
@given(attention_cases(max_seq=200, head_dims=(16, 32, 64)), small_configs(), st.integers(2, 9))
def test_sim_splits_stay_within_the_error_bound(case, cfg, kv_splits):
    """Splitting moves the numbers, not the guarantee: |O - O_ref| <= sim.int8_error_bound (spec 3.6)."""
    kwargs = dict(is_causal=case["is_causal"], scale=case["scale"], enable_gqa=case["enable_gqa"])
    out = sim.attention(case["q"], case["k"], case["v"], config=cfg, kv_splits=kv_splits, **kwargs)
    ref = sim.reference_attention(case["q"], case["k"], case["v"], **kwargs)
    bound = sim.int8_error_bound(case["q"], case["k"], case["v"], config=cfg, **kwargs)
    excess = np.abs(out - ref) - bound
    assert (excess <= 0).all(), f"error exceeds the bound by {excess.max():.3e} at {np.unravel_index(excess.argmax(), excess.shape)}"


@st.composite
def paged_sim_cases(draw):
    """(case, cfg, page_size, block_table, num_pages) with a case from decode_cases whose lengths are set."""
    case = draw(decode_cases(max_seq_k=130, head_dims=(32,)))
    cfg = draw(small_configs())
    if cfg.k_granularity == "head":  # a paged cache's K scales are paged or per tensor (intfa refuses "head")
        cfg = cfg.replace(k_granularity="tensor")
    if case["seq_lens"] is None:
        case["seq_lens"] = np.full(case["q"].shape[0], case["k"].shape[2], np.int32)
    page_size = cfg.block_n * draw(st.sampled_from((1, 2)))
    table, num_pages = draw(paged_tables(case["seq_lens"], page_size))
    return case, cfg, page_size, table, num_pages


def paged_operands(case, cfg, page_size, table, num_pages, seed=0):
    """The case's Q codes and a paged cache for it: (codes, scales) numpy, unused memory poisoned."""
    q8, qs = sim.quantize(case["q"], cfg.q_granularity, block_size=cfg.block_m)
    rng = np.random.default_rng(seed)
    k8, v8, ks, vs = make_paged_cache(rng, cfg, table, case["seq_lens"], num_pages=num_pages,
                                      heads=case["k"].shape[1], page_size=page_size, head_dim=case["q"].shape[3],
                                      distribution=case["distribution"])
    return (q8, k8, v8), (qs, ks, vs)


@settings(max_examples=15)
@given(paged_sim_cases())
def test_sim_paged_cache_is_the_contiguous_cache_gathered(paged):
    """Gathering is exact (spec 3.8): a paged call is the contiguous call on sim.gather_pages' cache."""
    case, cfg, page_size, table, num_pages = paged
    (q8, k8, v8), (qs, ks, vs) = paged_operands(case, cfg, page_size, table, num_pages)
    lens = case["seq_lens"]
    out, lse = sim_int8((q8, k8, v8), (qs, ks, vs), cfg, case, block_table=table)

    def gathered_scale(scale, granularity):
        keys = sim.keys_per_scale_row(granularity, cfg.block_n)
        return scale if keys is None else sim.gather_pages(scale, table, lens, keys_per_row=keys, fill=np.float32(1))

    contiguous = (q8, sim.gather_pages(k8, table, lens), sim.gather_pages(v8, table, lens))
    scales = (qs, gathered_scale(ks, cfg.k_granularity), gathered_scale(vs, cfg.v_quant_granularity))
    expected_out, expected_lse = sim_int8(contiguous, scales, cfg, case)
    assert_same_bits(out, expected_out, "paged output")
    assert_same_bits(lse, expected_lse, "paged lse")
    assert np.isfinite(out).all(), "poisoned unused pages and slots must never be read"


def test_sim_rows_that_see_no_key_give_zero_and_minus_infinity():
    """bottom_right with Nq > length, and a length of 0: out 0, lse -inf; other rows as usual (spec 3.5, 3.7)."""
    case = fixed_case(batch=3, seq_q=5, seq_k=40, is_causal=True, causal_alignment="bottom_right", kv_splits=3,
                      seq_lens=[3, 0, 40])
    cfg = sim.QuantConfig(block_m=16, block_n=16, normalizer="quantized")
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = sim_int8(codes, scales, cfg, case, enable_gqa=True)
    blind = np.zeros(out.shape[:3], bool)
    blind[0, :, :2] = True  # queries at key positions -2 and -1
    blind[1] = True  # no keys at all
    assert (out[blind] == 0).all() and (lse[blind] == -np.inf).all()
    assert np.isfinite(out).all() and np.isfinite(lse[~blind]).all()
    # The last query of sequence 0 sits at key 2: it sees keys 0..2, as a contiguous 3-key cache does.
    alone, alone_lse = sim.attention_int8(codes[0][:1, :, 4:], codes[1][:1, :, :3], codes[2][:1, :, :3], scales[0][:1, :, 4:],
                                          scales[1][:1, :, :3], scales[2][:1], enable_gqa=True, config=cfg, return_lse=True)
    assert_same_bits(out[:1, :, 4:], alone, "last query of a 3-key sequence")
    assert_same_bits(lse[:1, :, 4:], alone_lse, "its lse")


def _sim_paged_args(page_size=16, lens=(20, 5)):
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    case = fixed_case(batch=2, seq_k=32, seq_lens=list(lens))
    table, num_pages = make_block_table(np.random.default_rng(0), case["seq_lens"], page_size, holes=1)
    codes, scales = paged_operands(case, cfg, page_size, table, num_pages)
    return cfg, codes, scales, table, case["seq_lens"]


@pytest.mark.parametrize("change, error, match", [
    (dict(kv_splits=0), ValueError, r"kv_splits: expected an int >= 1, got 0"),
    (dict(kv_splits=True), TypeError, r"kv_splits: expected an int >= 1, got bool"),
    (dict(kv_splits=2.0), TypeError, r"kv_splits: expected an int >= 1, got float"),
    (dict(causal_alignment="bottom"), ValueError, r"causal_alignment: expected one of \['top_left', 'bottom_right'\]"),
    (dict(seq_lens=None), ValueError, r"seq_lens: a paged cache \(block_table given\) needs"),
    (dict(seq_lens=np.array([20, 33], np.int32)), ValueError, r"seq_lens: expected lengths in \[0, 32\] \(block_table "
                                                              r"holds 2 pages of 16 keys per sequence\), got 33 for sequence 1"),
    (dict(seq_lens=np.array([20], np.int32)), ValueError, r"seq_lens: expected shape \(2,\)"),
    (dict(seq_lens=np.array([20.0, 5.0])), TypeError, r"seq_lens: expected a 1-d integer numpy array"),
    (dict(block_table=np.zeros((1, 2), np.int32)), ValueError, r"block_table: expected 2 rows"),
    (dict(block_table=np.array([[0, 9], [1, -1]], np.int32)), ValueError,
     r"block_table: expected page indices in \[0, 4\) for the pages sequence 0 uses, got 9 at \[0, 1\]"),
    (dict(block_table=np.array([[0, 1], [-1, 0]], np.int32)), ValueError, r"got -1 at \[1, 0\]"),
])
def test_sim_bad_decode_arguments(change, error, match):
    cfg, codes, scales, table, lens = _sim_paged_args()
    kwargs = dict(config=cfg, enable_gqa=True, seq_lens=lens, block_table=table)
    with pytest.raises(error, match=match):
        sim.attention_int8(*codes, *scales, **{**kwargs, **change})


def test_sim_paged_layout_errors():
    cfg, codes, scales, table, lens = _sim_paged_args(page_size=16)
    with pytest.raises(ValueError, match=r"k_codes: expected a page size that is a multiple of config.block_n=32"):
        sim.attention_int8(*codes, *scales, config=cfg.replace(block_n=32), enable_gqa=True, seq_lens=lens,
                           block_table=table)
    with pytest.raises(ValueError, match=r"k_scale: expected shape \(4, 1, 16, 1\)"):
        sim.attention_int8(*codes, scales[0], scales[1][:, :, :8], scales[2], config=cfg, enable_gqa=True,
                           seq_lens=lens, block_table=table)


def test_sim_contiguous_lengths_past_the_cache():
    case = fixed_case(seq_k=32)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    with pytest.raises(ValueError, match=r"seq_lens: expected lengths in \[0, 32\] \(the keys' sequence dimension\), "
                                         r"got 33 for sequence 0"):
        sim.attention_int8(*codes, *scales, config=cfg, enable_gqa=True, seq_lens=np.array([33]))
    with pytest.raises(ValueError, match=r"seq_lens: expected lengths in \[0, 32\]"):
        sim.trace_operands(sim.quantize_operands(case["q"], case["k"], case["v"], cfg), config=cfg,
                           seq_lens=np.array([33]))


# --- the kernel: bit for bit ----------------------------------------------------------------------------


@interpreter_only
@settings(max_examples=8)
@given(decode_cases(max_seq_k=160), small_configs(), st.booleans())
@example(fixed_case(batch=2, heads_q=8, heads_kv=1, seq_q=3, seq_k=130, is_causal=True, kv_splits=7,
                    seq_lens=[130, 17]),
         sim.QuantConfig(block_m=16, block_n=16, p_quant="signed255", p_scale="tile_max", normalizer="quantized",
                         v_granularity="block", q_granularity="block", k_granularity="block"), True)
def test_decode_matches_sim(case, cfg, v_seq_contiguous):
    """Contiguous caches: every configuration, split count, group size, length and alignment: sim's bits."""
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = kernel_int8(codes, scales, cfg, case, v_seq_contiguous=v_seq_contiguous)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case)
    assert_same_bits(out, expected_out, f"output {cfg}")
    assert_same_bits(lse, expected_lse, "lse")


TWO_TILES = DecodeLaunch(block_m=16, num_warps=4, num_stages=1, tiles_in_flight=2)


def kernel_with_launch(codes, scales, cfg, case, launch, *, block_table=None, v_seq_contiguous=False):
    """attention_forward's (out, lse) in float32 with a given DecodeLaunch (the API takes none), as kernel_int8."""
    q8, k8, v8 = map(t, codes)
    if v_seq_contiguous:
        v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)
    seq_lens = case["seq_lens"]
    scale = default_scale(q8.shape[-1]) if case["scale"] is None else case["scale"]  # as the API's
    out, lse = attention_forward(
        q8, k8, v8, *map(t, scales), config=cfg, scale=scale, is_causal=case["is_causal"], out_dtype=torch.float32,
        return_lse=True, kv_splits=case["kv_splits"], seq_lens=None if seq_lens is None else t(seq_lens),
        causal_alignment=case["causal_alignment"], block_table=None if block_table is None else t(block_table),
        launch=launch)
    return out.numpy(), lse.numpy()


@interpreter_only
@settings(max_examples=4)
@given(decode_cases(max_seq_k=160), small_configs())
@example(fixed_case(batch=2, heads_q=4, heads_kv=2, seq_q=2, seq_k=150, is_causal=True, kv_splits=2,
                    causal_alignment="bottom_right", seq_lens=[150, 47]),
         sim.QuantConfig(block_m=16, block_n=16, p_quant="signed255", p_scale="tile_max", normalizer="quantized",
                         v_granularity="block", k_granularity="token"))
def test_two_tiles_in_flight_give_sims_bits(case, cfg):
    """DecodeLaunch.tiles_in_flight=2 (two tiles' products before their folds; odd counts end with one tile):
    sim's bits, as one tile at a time."""
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = kernel_with_launch(codes, scales, cfg, case, TWO_TILES)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case)
    assert_same_bits(out, expected_out, f"output {cfg}")
    assert_same_bits(lse, expected_lse, "lse")


@interpreter_only
@settings(max_examples=3)
@given(paged_sim_cases(), st.booleans())
def test_two_tiles_in_flight_on_paged_caches_give_sims_bits(paged, v_seq_contiguous):
    """Two tiles in flight through a paged cache (holes, shared pages, poisoned unused memory): sim's bits."""
    case, cfg, page_size, table, num_pages = paged
    codes, scales = paged_operands(case, cfg, page_size, table, num_pages)
    out, lse = kernel_with_launch(codes, scales, cfg, case, TWO_TILES, block_table=table,
                                  v_seq_contiguous=v_seq_contiguous)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case, block_table=table)
    assert_same_bits(out, expected_out, f"paged output {cfg}")
    assert_same_bits(lse, expected_lse, "paged lse")


@pytest.fixture
def decode_calls(monkeypatch):
    """The keyword arguments of each decode_forward call that attention_forward makes (no kernel runs)."""
    from intfa.kernels import dispatch

    calls = []
    monkeypatch.setattr(dispatch, "decode_forward", lambda *args, **kwargs: calls.append(kwargs))
    return calls


def test_the_table_takes_two_tiles_for_long_splits_and_keeps_a_callers_launch(decode_calls):
    """attention_forward without a launch takes decode_tiles_in_flight's choice once the split count is known
    (from the paged capacity for a paged cache); a caller's DecodeLaunch is run as given."""
    q8 = torch.zeros((1, 4, 1, 32), dtype=torch.int8)
    cache = torch.zeros((1, 1, 16384, 32), dtype=torch.int8)
    scales = (torch.ones((1, 4, 1, 1)), torch.ones((1, 1, 16384, 1)), torch.ones((1, 1, 1, 32)))
    cfg = sim.QuantConfig(block_n=16)
    attention_forward(q8, cache, cache, *scales, config=cfg, scale=0.1, kv_splits=1)  # one 16k-key split
    attention_forward(q8, cache, cache, *scales, config=cfg, scale=0.1, kv_splits=2)  # 8k-key splits
    own = DecodeLaunch(block_m=16, num_warps=4, num_stages=2)  # tiles_in_flight 1
    attention_forward(q8, cache, cache, *scales, config=cfg, scale=0.1, kv_splits=1, launch=own)
    pages = torch.zeros((64, 1, 256, 32), dtype=torch.int8)
    page_scales = (scales[0], torch.ones((64, 1, 256, 1)), scales[2])
    table, lengths = torch.arange(64, dtype=torch.int32)[None], torch.tensor([300], dtype=torch.int32)
    attention_forward(q8, pages, pages, *page_scales, config=cfg, scale=0.1, kv_splits=1, block_table=table,
                      seq_lens=lengths)  # capacity 64 x 256 = 16k keys
    assert [call["tiles_in_flight"] for call in decode_calls] == [2, 1, 1, 2]


def test_two_tiles_in_flight_only_for_long_splits_of_few_rows():
    """The table's choice (measured on the H100): two tiles in flight for 16-row programs whose splits keep 16k
    keys or more; one otherwise, and for larger tiles whatever the split."""
    assert decode_tiles_in_flight(16, 131072, 8) == 2  # 16k-key splits
    assert decode_tiles_in_flight(16, 131072, 16) == 1  # 8k keys
    assert decode_tiles_in_flight(16, 16384, 1) == 2
    assert decode_tiles_in_flight(16, 16383, 1) == 1
    assert decode_tiles_in_flight(64, 131072, 1) == 1  # 64-row programs: over twice as slow with two
    with pytest.raises(ValueError, match=r"kv_splits: expected an int >= 1, got 0"):
        decode_tiles_in_flight(16, 16384, 0)


@interpreter_only
@settings(max_examples=7)
@given(paged_sim_cases(), st.booleans())
def test_paged_decode_matches_sim(paged, v_seq_contiguous):
    """Paged caches with holes, shared pages, padded and spare table entries, and every byte no key in use
    reaches poisoned (-128 codes, NaN scales): sim's bits, so none of it was read."""
    case, cfg, page_size, table, num_pages = paged
    codes, scales = paged_operands(case, cfg, page_size, table, num_pages)
    out, lse = kernel_int8(codes, scales, cfg, case, v_seq_contiguous=v_seq_contiguous, block_table=t(table))
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case, block_table=table)
    assert_same_bits(out, expected_out, f"paged output {cfg}")
    assert_same_bits(lse, expected_lse, "paged lse")


@interpreter_only
@pytest.mark.parametrize("cfg", [
    sim.QuantConfig(block_m=32, block_n=32, q_granularity="block", k_granularity="tensor", v_granularity="channel",
                    p_quant="signed255", normalizer="quantized"),
    sim.QuantConfig(block_m=16, block_n=16, k_granularity="block", v_granularity="block", p_scale="tile_max"),
], ids=["block-q-channel-v", "block-kv-tile-max"])
@pytest.mark.parametrize("seq_q, seq_k, is_causal", [(1, 77, False), (5, 70, True), (20, 17, True)])
def test_one_split_is_the_prefill_kernel(cfg, seq_q, seq_k, is_causal):
    """kv_splits=1: the decode kernel (GQA rows packed, 16-row tiles) gives the prefill kernel's bits."""
    case = fixed_case(batch=2, heads_q=4, heads_kv=2, seq_q=seq_q, seq_k=seq_k, is_causal=is_causal)
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    args = [*map(t, codes), *map(t, scales)]
    kwargs = dict(config=cfg, scale=32 ** -0.5, is_causal=is_causal, out_dtype=torch.float32, return_lse=True)
    prefill = attention_forward(*args, launch=Launch(block_m=cfg.block_m, num_warps=4, num_stages=1), **kwargs)
    decode = attention_forward(*args, launch=DecodeLaunch(block_m=16, num_warps=4, num_stages=1), kv_splits=1,
                               **kwargs)
    for name, a, b in zip(("output", "lse"), decode, prefill):
        assert_same_bits(a.numpy(), b.numpy(), f"decode vs prefill {name}")


@interpreter_only
@pytest.mark.parametrize("group", DECODE_GROUPS)
def test_gqa_rows_over_several_tiles(group):
    """(head, query) rows packed across several 16-row tiles, the last one partial; causal bottom-right, split."""
    case = fixed_case(batch=2, heads_q=2 * group, heads_kv=2, seq_q=5, seq_k=60, is_causal=True,
                      causal_alignment="bottom_right", kv_splits=3, seq_lens=[60, 23])
    cfg = sim.QuantConfig(block_m=16, block_n=16, q_granularity="block", v_granularity="channel")
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    shape = sim.check_attention_shapes(case["q"].shape, case["k"].shape, case["v"].shape, enable_gqa=True, scale=None)
    out, lse = attention_forward(*map(t, codes), *map(t, scales), config=cfg, scale=shape.scale, is_causal=True,
                                 out_dtype=torch.float32, return_lse=True, kv_splits=3, seq_lens=t(case["seq_lens"]),
                                 causal_alignment="bottom_right", launch=DecodeLaunch(block_m=16, num_warps=4,
                                                                                      num_stages=1))
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case)
    assert_same_bits(out.numpy(), expected_out, f"group {group} output")
    assert_same_bits(lse.numpy(), expected_lse, f"group {group} lse")


@interpreter_only
def test_splits_entirely_masked_or_empty():
    """Top-left causal with 2 queries and 200 keys: every split after the first is masked for every row; a
    sequence of 20 keys has fewer tiles than splits (empty splits); one of 0 keys sees nothing."""
    case = fixed_case(batch=3, heads_q=4, heads_kv=1, seq_q=2, seq_k=200, is_causal=True, kv_splits=5,
                      seq_lens=[200, 20, 0])
    cfg = sim.QuantConfig(block_m=16, block_n=16, p_scale="tile_max", normalizer="quantized")
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = kernel_int8(codes, scales, cfg, case)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case)
    assert_same_bits(out, expected_out, "output")
    assert_same_bits(lse, expected_lse, "lse")
    assert (out[2] == 0).all() and (lse[2] == -np.inf).all(), "a sequence without keys: out 0, lse -inf"
    assert np.isfinite(out).all() and np.isfinite(lse[:2]).all()


def test_paged_calls_take_the_deeper_pipeline(decode_calls):
    """The launch table gives a paged cache PAGED_STAGES stages (Triton pipelines its table-entry load chain only
    from there: docs/performance.md), a contiguous one the table's depth; a caller's own DecodeLaunch is kept."""
    from intfa.kernels import dispatch

    q8 = torch.zeros((1, 4, 1, 32), dtype=torch.int8)
    pages = torch.zeros((3, 1, 32, 32), dtype=torch.int8)
    scales = (torch.ones((1, 4, 1, 1)), torch.ones((3, 1, 32, 1)), torch.ones((1, 1, 1, 32)))
    cfg = sim.QuantConfig(block_n=16)
    table, lengths = torch.tensor([[2, 0]], dtype=torch.int32), torch.tensor([50], dtype=torch.int32)
    paged = dict(config=cfg, scale=0.1, block_table=table, seq_lens=lengths, kv_splits=2)
    attention_forward(q8, pages, pages, *scales, **paged)
    attention_forward(q8, pages[:1], pages[:1], *scales, config=cfg, scale=0.1, kv_splits=2)
    own = DecodeLaunch(block_m=16, num_warps=4, num_stages=2)
    attention_forward(q8, pages, pages, *scales, **paged, launch=own)
    table_stages = dispatch.decode_launch("cpu", 32, 1, 4).num_stages
    seen = [call["num_stages"] for call in decode_calls]
    assert seen == [dispatch.PAGED_STAGES, table_stages, 2] and dispatch.PAGED_STAGES > table_stages
    assert dispatch.decode_launch("sm90", 128, 1, 4, paged=True).num_stages == dispatch.PAGED_STAGES
    assert dispatch.decode_launch("sm80", 128, 1, 4, paged=True).num_stages == table_stages  # not measured there


@interpreter_only
@pytest.mark.parametrize("kv_splits", [COMBINE_SPLIT_CHUNK, COMBINE_SPLIT_CHUNK + 1, 3 * COMBINE_SPLIT_CHUNK - 5])
def test_combine_reads_the_splits_chunk_by_chunk(kv_splits):
    """The combine reads COMBINE_SPLIT_CHUNK splits at a time; a last chunk that is partly past the last split adds
    exact zeros, so one chunk, one split more, and a ragged third chunk (most splits empty: 3 key tiles) all give
    sim's bits."""
    case = fixed_case(batch=1, heads_q=2, heads_kv=1, seq_q=2, seq_k=40, kv_splits=kv_splits)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = kernel_int8(codes, scales, cfg, case)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case)
    assert_same_bits(out, expected_out, "output")
    assert_same_bits(lse, expected_lse, "lse")


@interpreter_only
def test_default_split_count_is_decode_splits():
    """kv_splits=None (the API's default) takes decode_splits' count, which sim then reproduces to the bit."""
    case = fixed_case(batch=1, heads_q=4, heads_kv=1, seq_q=1, seq_k=1100)
    cfg = sim.QuantConfig(block_m=16, block_n=16)
    splits = decode_splits(1, 4, 1, 1, 1100, cfg, "cpu", head_dim=32)
    assert splits > 1, "this shape must split under the interpreter's SM count"
    codes, scales = quantize_like_sim(case["q"], case["k"], case["v"], cfg)
    out, lse = kernel_int8(codes, scales, cfg, case, kv_splits=None)
    expected_out, expected_lse = sim_int8(codes, scales, cfg, case, kv_splits=splits)
    assert_same_bits(out, expected_out, "output")
    assert_same_bits(lse, expected_lse, "lse")
    one_split, _ = sim_int8(codes, scales, cfg, case, kv_splits=1)
    assert not np.array_equal(out, one_split), "the split count must show in the numbers (else this test is void)"


def test_split_count_heuristic():
    """Fill the GPU (up to waves x SMs programs, never past) when the programs alone do not; no split below the
    minimum."""
    # 2 waves of 132 SMs = 264 programs at most: floor(264 / programs) splits, at most tiles // 8 of them.
    assert split_count(256, 512, 132, waves=2.0, min_split_tiles=8) == 1  # 2 splits would make 512 programs
    assert split_count(32, 2048, 132, waves=2.0, min_split_tiles=8) == 8  # floor(264 / 32)
    assert split_count(8, 2048, 132, waves=2.0, min_split_tiles=8) == 33  # floor(264 / 8): B=1, 8 kv heads
    assert split_count(8, 2048, 132, waves=1.0, min_split_tiles=8) == 16  # one wave: 128 programs, not 136
    assert split_count(8, 100, 132, waves=2.0, min_split_tiles=8) == 12  # 100 tiles // 8
    assert split_count(1, 3, 132, waves=2.0, min_split_tiles=8) == 1  # too short to split
    assert split_count(1, 10**6, 132, waves=2.0, min_split_tiles=1) == MAX_KV_SPLITS
    assert split_count(1000, 10**6, 132, waves=2.0, min_split_tiles=8) == 1  # the programs fill the GPU


def test_split_count_deepens_only_long_splits():
    """Two programs per SM where each split keeps min_deep_split_tiles; else one wave of shorter splits (measured
    on the H100: at D=128, 8 kv heads, 64k-128k keys, 32 splits of 4k keys lost 3-8% to 16 of 8k)."""
    d128 = dict(waves=2.0, min_split_tiles=4, min_deep_split_tiles=64)  # 128-key tiles, 8k keys
    assert split_count(8, 256, 132, **d128) == 16  # B=1, 8 kv heads, 32k keys: one wave
    assert split_count(8, 1024, 132, **d128) == 16  # 128k keys: still one wave (33 splits would be 4k keys)
    assert split_count(8, 4096, 132, **d128) == 33  # 512k keys: two waves of 15k-key splits
    assert split_count(32, 512, 132, **d128) == 8  # B=1, 32 kv heads, 64k keys: two programs per SM
    assert split_count(32, 256, 132, **d128) == 4  # 32k keys: one wave
    assert split_count(64, 256, 132, **d128) == 4  # B=8, 8 kv heads, 32k keys (one wave would be 2)
    assert split_count(256, 1024, 132, **d128) == 1  # B=8, 32 kv heads: the programs fill two waves
    d64 = dict(waves=2.0, min_split_tiles=4, min_deep_split_tiles=8)  # 1k keys
    assert split_count(8, 256, 132, **d64) == 32  # D=64, B=1, 8 kv heads, 32k keys: two programs per SM
    assert split_count(8, 128, 132, **d64) == 16  # 16k keys: 33 splits would be shorter than 1k keys
    # The launch table's minimum split lengths: D=64 deepens from 1k keys on, D=128 from 8k.
    assert decode_launch("sm90", 64, 1, 4).min_deep_split_keys == 1024
    assert decode_launch("sm90", 128, 1, 4).min_deep_split_keys == 8192


@interpreter_only
@settings(max_examples=4)
@given(decode_cases(max_seq_k=64, head_dims=(32,), lengths=False), small_configs())
def test_decode_trace_is_sims(case, cfg):
    """Integer scores and P codes of every visited tile: those of sim's split of that tile (its SplitPart)."""
    ops = sim.quantize_operands(case["q"], case["k"], case["v"], cfg)
    codes = [torch.from_numpy(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    scale = sim.check_attention_shapes(ops.q.shape, ops.k.shape, ops.v.shape, enable_gqa=True,
                                       scale=case["scale"]).scale
    _, trace = attention_forward(*codes, *map(t, (ops.q_scale, ops.k_scale, ops.v_scale)), config=cfg, scale=scale,
                                 is_causal=case["is_causal"], out_dtype=torch.float32, trace=True,
                                 kv_splits=case["kv_splits"], causal_alignment=case["causal_alignment"],
                                 launch=DecodeLaunch(block_m=16, num_warps=4, num_stages=1))
    full_lengths = np.full(ops.q.shape[0], ops.k.shape[2])  # the split path (its parts) even for one split
    parts = sim.trace_operands(ops, config=cfg, is_causal=case["is_causal"], scale=scale, seq_lens=full_lengths,
                               kv_splits=case["kv_splits"], causal_alignment=case["causal_alignment"]).parts
    qk, p_codes = trace["qk"].numpy(), trace["p_codes"].numpy()
    visited = qk != INT32_MIN
    bn, nk = cfg.block_n, ops.k.shape[2]
    for part in parts:
        for step in part.steps:
            cols = slice(step.key_tile * bn, min((step.key_tile + 1) * bn, nk))
            width = cols.stop - cols.start
            seen = visited[part.batch, ..., cols]
            assert (qk[part.batch, ..., cols][seen] == step.qk[0, ..., :width][seen]).all(), f"qk, tile {step.key_tile}"
            assert (p_codes[part.batch, ..., cols][seen] == step.p_codes[0, ..., :width][seen]).all(), \
                f"P codes, tile {step.key_tile}, split {part.split}"
    assert visited.any(), "the trace compared nothing"


@interpreter_only
def test_half_int8_decode_splits_close_to_sim():
    """Half-INT8 through the decode kernel (float P @ V: sim's BLAS order may differ, spec 4.1)."""
    case = fixed_case(batch=2, heads_q=4, heads_kv=2, seq_q=3, seq_k=120, is_causal=True)
    cfg = sim.QuantConfig.half_int8(block_m=16, block_n=16)
    ops = intfa.quantize_operands(*(t(case[n]).float() for n in "qkv"), cfg)
    out = attention_forward(*ops, config=cfg, scale=32 ** -0.5, is_causal=True, out_dtype=torch.float32, kv_splits=4)
    expected = sim.attention(case["q"], case["k"], case["v"], is_causal=True, enable_gqa=True, config=cfg, kv_splits=4)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=half_int8_tolerance(case["v"], cfg))


# --- the kernel: bad input ------------------------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("launch", [None, TWO_TILES], ids=["table", "two-tiles"])
def test_unvalidated_bad_table_or_length_gives_nan_for_that_sequence_only(launch):
    """validate=False (the CUDA default): an entry out of range or a length past the table is never followed;
    that sequence's output is NaN, the other's is sim's (through the API, and with two tiles in flight)."""
    cfg, codes, scales, table, lens = _sim_paged_args(lens=(20, 5))
    args = [*map(t, codes), *map(t, scales)]
    expected = sim.attention_int8(*codes, *scales, config=cfg, enable_gqa=True, seq_lens=lens, block_table=table,
                                  kv_splits=2)
    for bad_table, bad_lens in ((np.array([[table[0, 0], 1000], table[1]], np.int32), lens),
                                (table, np.array([20, 99], np.int32)),
                                (table, np.array([-3, 5], np.int32))):
        if launch is None:
            out = intfa.attention_int8(*args, config=cfg, enable_gqa=True, seq_lens=t(bad_lens),
                                       block_table=t(bad_table), kv_splits=2, validate=False, out_dtype=torch.float32)
        else:
            out = attention_forward(*args, config=cfg, scale=default_scale(codes[0].shape[-1]), seq_lens=t(bad_lens),
                                    block_table=t(bad_table), kv_splits=2, out_dtype=torch.float32, launch=launch)
        bad = 0 if (bad_table[0, 1] == 1000 or bad_lens[0] < 0) else 1
        assert torch.isnan(out[bad]).all(), "the sequence with the bad entry or length must be NaN"
        assert_same_bits(out[1 - bad].numpy(), expected[1 - bad], "the other sequence")


@interpreter_only
def test_bad_decode_arguments_in_the_api():
    cfg, codes, scales, table, lens = _sim_paged_args()
    args = [*map(t, codes), *map(t, scales)]
    kwargs = dict(config=cfg, enable_gqa=True, seq_lens=t(lens), block_table=t(table))
    cases = [
        (dict(block_table=t(table).long()), TypeError, r"block_table: expected dtype int32, got torch.int64"),
        (dict(seq_lens=t(lens)[None]), ValueError, r"seq_lens: expected 1 dimension, got shape \(1, 2\)"),
        (dict(seq_lens=None), ValueError, r"seq_lens: a paged cache \(block_table given\) needs"),
        (dict(block_table=t(table)[:1]), ValueError, r"block_table: expected 2 rows"),
        (dict(kv_splits=0), ValueError, r"kv_splits: expected an int >= 1, got 0"),
        (dict(causal_alignment="left"), ValueError, r"causal_alignment: expected one of"),
        (dict(config=cfg.replace(block_n=32)), ValueError, r"k_codes: expected a page size that is a multiple"),
        (dict(seq_lens=t(np.array([20, 40], np.int32))), ValueError, r"seq_lens: expected lengths in \[0, 32\]"),
        (dict(block_table=t(np.array([[0, 1], [7, -1]], np.int32))), ValueError,
         r"block_table: expected page indices in \[0, 4\) for the pages sequence 1 uses, got 7 at \[1, 0\]"),
    ]
    for change, error, match in cases:
        with pytest.raises(error, match=match):
            intfa.attention_int8(*args, **{**kwargs, **change})
    with pytest.raises(ValueError, match=r"v_codes: expected the shape of k_codes"):
        intfa.attention_int8(args[0], args[1], args[2][:3], *args[3:], **kwargs)
    with pytest.raises(ValueError, match=r"k_scale: expected shape \(4, 1, 16, 1\)"):
        intfa.attention_int8(*args[:4], args[4][:, :, :8], args[5], **kwargs)
    with pytest.raises(ValueError, match=r"launch: a paged cache"):
        attention_forward(*args, config=cfg, scale=0.1, seq_lens=t(lens), block_table=t(table),
                          launch=Launch(block_m=16, num_warps=4, num_stages=1))
    minus128 = args[1].clone()
    minus128[int(table[0, 0]), 0, 3, 0] = -128  # a key in use
    with pytest.raises(ValueError, match=r"k_codes: expected codes in \[-127, 127\], found -128"):
        intfa.attention_int8(args[0], minus128, *args[2:], **kwargs)


@pytest.mark.parametrize("config", [sim.QuantConfig(block_m=32, block_n=32),
                                    sim.QuantConfig.recommended(block_m=32, block_n=32)], ids=["paper", "recommended"])
@pytest.mark.parametrize("seed", [None, 3])
def test_page_operands_gives_the_contiguous_bytes(config, seed):
    """intfa.page_operands (the benchmark's int8-paged cache): the paged cache computes the contiguous one's bits,
    per-key K scales and per-block V scales paged like the codes, pages in order or shuffled."""
    rng = np.random.default_rng(7)
    q, k, v = (torch.from_numpy(rng.standard_normal((2, 4, n, 64)).astype(np.float16)) for n in (3, 100, 100))
    ops = intfa.quantize_operands(q, k, v, config)
    paged = intfa.page_operands(ops, config, page_size=64, seed=seed)
    assert paged.k_pages.shape == (4, 4, 64, 64) and paged.v_pages.stride(2) == 1
    contiguous = intfa.attention_int8(*ops, config=config, kv_splits=2)
    from_pages = intfa.attention_int8(*paged.args, config=config, kv_splits=2, block_table=paged.block_table,
                                      seq_lens=paged.seq_lens)
    assert torch.equal(contiguous, from_pages)
    with pytest.raises(ValueError, match="page_size: expected a positive multiple of config.block_n"):
        intfa.page_operands(ops, config, page_size=48)
