"""The compiled decode kernel on a CUDA GPU against sim (docs/spec.md 3.6-3.8, contract level 2). ``pytest -m gpu``.

The same contract as tests/test_kernel_gpu.py, on decode shapes (a few queries, a long cache), GQA groups packed
into one tile, split counts that leave a short last split or splits masked for every row, per-sequence lengths,
both causal alignments, and paged caches (shuffled pages with holes and padded tables). sim runs with the same
``kv_splits`` as the kernel, so the comparison is of the same numbers:

- exact: the integer products Q8 K8^T and P8 V8 of every visited tile (the kernel's trace);
- P codes within one step of sim's split trace (exp2 and FMA differ compiled), on a small fraction;
- the output's error against float64 attention within a small factor of sim's own error, and the lse's likewise;
- a paged cache gives the bits of the same kernel on the contiguous cache its pages gather to;
- rows that see no key give out 0 and lse -inf; an unvalidated bad block table gives NaN for its sequence only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sim
from sim.config import default_scale
from strategies import make_block_table, make_qkv

import intfa  # noqa: E402  (conftest sets TRITON_INTERPRET=1 where there is no GPU)
from intfa.kernels import attention_forward  # noqa: E402
from intfa.kernels.dispatch import DecodeLaunch, decode_splits  # noqa: E402

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
INT32_MIN = np.iinfo(np.int32).min

PAPER = sim.QuantConfig()  # block_n 128
RICH = sim.QuantConfig(q_granularity="block", k_granularity="block", v_granularity="block", block_m=64, block_n=64,
                       p_quant="signed255", p_scale="tile_max", normalizer="quantized")
CHANNEL = sim.QuantConfig(k_granularity="tensor", v_granularity="channel", block_m=64, block_n=32)
CONFIGS = {"paper": PAPER, "rich": RICH, "channel": CHANNEL}

# (batch, heads_q, heads_kv, seq_q, seq_k, head_dim, is_causal, causal_alignment, seq_lens, kv_splits)
SHAPES = [
    (1, 32, 8, 1, 4099, 128, False, "top_left", None, 16),  # B=1 GQA decode: 16 splits, a short last one
    (2, 16, 2, 16, 2500, 128, True, "bottom_right", (2500, 1301), 7),  # chunked prefill, 128 packed rows
    (3, 4, 1, 16, 700, 64, True, "top_left", None, 3),  # top-left causal: splits 2 and 3 masked for every row
    (4, 8, 8, 4, 1000, 64, True, "bottom_right", (1000, 517, 129, 64), 5),  # MHA, lengths shorter than a split
]


def shape_id(shape):
    b, hq, hkv, nq, nk, d, causal, align, lens, splits = shape
    return (f"b{b}-h{hq}/{hkv}-q{nq}-k{nk}-d{d}{'-causal-' + align if causal else ''}{'-lens' if lens else ''}"
            f"-s{splits}")


def cuda(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(DEVICE)


def rel_l2(out, ref) -> float:
    return sim.relative_l2(np.asarray(out, np.float64), ref)


def decode_inputs(shape, distribution="normal", seed=0):
    """Float q (B, Hq, Nq, D), k and v (B, Hkv, Nk, D) float16 and the lengths (B,) int32 (all Nk when None)."""
    b, hq, hkv, nq, nk, d, _, _, lens, _ = shape
    q, k, v = make_qkv(np.random.default_rng(seed), (b, hq, nq, d), (b, hkv, nk, d), distribution)
    seq_lens = np.full(b, nk, np.int32) if lens is None else np.asarray(lens, np.int32)
    return q, k, v, seq_lens


def reference_decode(q, k, v, seq_lens, *, is_causal, causal_alignment):
    """Float64 attention with per-sequence lengths and either alignment: (out (B, Hq, Nq, D), lse (B, Hq, Nq)).

    Rows that see no key: out 0, lse -inf (the spec's convention).
    """
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    group = hq // hkv
    out = np.zeros(q.shape)
    lse = np.full(q.shape[:3], -np.inf)
    for i in range(b):
        n = int(seq_lens[i])
        kb = np.repeat(k[i, :, :n].astype(np.float64), group, axis=0)
        vb = np.repeat(v[i, :, :n].astype(np.float64), group, axis=0)
        s = (q[i].astype(np.float64) @ np.swapaxes(kb, -1, -2)) * default_scale(d)  # (Hq, Nq, n)
        if is_causal:
            start = n - nq if causal_alignment == "bottom_right" else 0
            s = np.where(np.arange(n)[None, :] <= start + np.arange(nq)[:, None], s, -np.inf)
        seen = np.isfinite(s).any(axis=-1)
        m = np.where(seen, s.max(axis=-1, initial=-np.inf), 0.0)
        p = np.exp(s - m[..., None])
        total = p.sum(axis=-1)
        out[i] = np.where(seen[..., None], (p @ vb) / np.where(seen, total, 1.0)[..., None], 0.0)
        lse[i] = np.where(seen, m + np.log(np.where(seen, total, 1.0)), -np.inf)
    return out, lse


def quantized_cache(q, k, v, cfg):
    """sim's codes and scales (numpy) of q, k, v for ``cfg`` (contiguous)."""
    ops = sim.quantize_operands(q, k, v, cfg)
    return (ops.q.astype(np.int8), ops.k.astype(np.int8), ops.v.astype(np.int8)), (ops.q_scale, ops.k_scale, ops.v_scale)


def to_pages(x: np.ndarray, table, seq_lens, *, num_pages: int, rows_per_page: int, keys_per_row: int = 1):
    """Scatter a contiguous (B, H, rows, X) cache into pages (num_pages, H, rows_per_page, X): the inverse of
    sim.gather_pages for the rows in use; every other row holds -128 (codes) or NaN (scales): never read."""
    pages = np.full((num_pages, x.shape[1], rows_per_page, x.shape[3]), -128 if x.dtype == np.int8 else np.nan,
                    x.dtype)
    for b in range(x.shape[0]):
        rows = -(-int(seq_lens[b]) // keys_per_row)
        for p in range(-(-rows // rows_per_page)):
            lo, hi = p * rows_per_page, min((p + 1) * rows_per_page, rows)
            pages[table[b, p], :, : hi - lo] = x[b, :, lo:hi]
    return pages


def page_the_cache(codes, scales, table, seq_lens, cfg, *, num_pages: int, page_size: int):
    """A contiguous cache's (codes, scales) written into pages along ``table``: Q, and scales without a key
    dimension (per tensor, V per channel of each sequence), unchanged."""
    def paged(x, keys=1):
        return to_pages(x, table, seq_lens, num_pages=num_pages, rows_per_page=page_size // keys, keys_per_row=keys)

    def paged_scale(x, granularity):
        keys = sim.keys_per_scale_row(granularity, cfg.block_n)
        return x if keys is None else paged(x, keys)

    return ((codes[0], paged(codes[1]), paged(codes[2])),
            (scales[0], paged_scale(scales[1], cfg.k_granularity), paged_scale(scales[2], cfg.v_quant_granularity)))


def paged_cache(codes, scales, seq_lens, cfg, *, page_size, seed=1):
    """The contiguous cache (codes, scales) as pages with a shuffled, holed, padded block table:
    (codes, scales, block_table) numpy, Q unchanged."""
    table, num_pages = make_block_table(np.random.default_rng(seed), seq_lens, page_size, holes=3, spare_columns=1)
    return (*page_the_cache(codes, scales, table, seq_lens, cfg, num_pages=num_pages, page_size=page_size), table)


def run_kernel(codes, scales, cfg, shape, seq_lens, *, block_table=None, trace=False, validate=None, launch=None):
    """intfa.attention_int8 (or, traced or with a ``launch``, attention_forward) on CUDA copies; V stored
    sequence-contiguous."""
    _, _, _, _, _, _, causal, align, lens, splits = shape
    q8, k8, v8 = (cuda(x) for x in codes)
    v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)
    scale_t = [cuda(s) for s in scales]
    extra = dict(kv_splits=splits, causal_alignment=align,
                 seq_lens=None if lens is None and block_table is None else cuda(seq_lens),
                 block_table=None if block_table is None else cuda(block_table))
    if trace or launch is not None:
        return attention_forward(q8, k8, v8, *scale_t, config=cfg, scale=default_scale(q8.shape[-1]), is_causal=causal,
                                 out_dtype=torch.float32, return_lse=True, trace=trace, launch=launch, **extra)
    return intfa.attention_int8(q8, k8, v8, *scale_t, is_causal=causal, enable_gqa=True, config=cfg,
                                out_dtype=torch.float32, return_lse=True, validate=validate, **extra)


def run_sim(codes, scales, cfg, shape, seq_lens, *, block_table=None):
    _, _, _, _, _, _, causal, align, lens, splits = shape
    return sim.attention_int8(*codes, *scales, is_causal=causal, enable_gqa=True, config=cfg, return_lse=True,
                              kv_splits=splits, causal_alignment=align,
                              seq_lens=None if lens is None and block_table is None else seq_lens,
                              block_table=block_table)


# --- exact: integer products; P codes within one step ---------------------------------------------------


@pytest.mark.parametrize("launch_name", ["table", "two-tiles"])
@pytest.mark.parametrize("config_name", ["paper", "rich"])
@pytest.mark.parametrize("shape", [(1, 8, 2, 1, 1500, 128, False, "top_left", None, 5),
                                   (2, 8, 2, 9, 700, 64, True, "bottom_right", (700, 333), 3)], ids=shape_id)
def test_decode_integer_products_exact_and_p_codes_within_one_step(shape, config_name, launch_name):
    """The contract on the table's launch (one tile in flight for these short splits; 64-row tiles for the second
    shape) and on 16-row programs with two tiles in flight, each on its own."""
    cfg = CONFIGS[config_name]
    q, k, v, seq_lens = decode_inputs(shape)
    codes, scales = quantized_cache(q, k, v, cfg)
    launch = {"table": None,
              "two-tiles": DecodeLaunch(block_m=16, num_warps=4, num_stages=3, tiles_in_flight=2)}[launch_name]
    _, _, trace = run_kernel(codes, scales, cfg, shape, seq_lens, trace=True, launch=launch)
    qk, p_codes, pv = (trace[n].cpu().numpy() for n in ("qk", "p_codes", "pv"))
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    q8, k8, v8 = (x.astype(np.float64) for x in codes)
    head_map = np.arange(hq) // (hq // hkv)
    visited = qk[..., :nk] != INT32_MIN
    assert visited.any()
    expected_qk = q8 @ np.swapaxes(k8[:, head_map], -1, -2)
    np.testing.assert_array_equal(qk[..., :nk][visited], expected_qk[visited], err_msg="Q8 K8^T")
    weights = p_codes.astype(np.float64) + (128 if cfg.p_quant == "signed255" else 0)
    bn = cfg.block_n
    for j in range(pv.shape[2]):
        lo, hi = j * bn, min((j + 1) * bn, nk)
        rows = visited[:, :, :, lo]  # a tile is visited for all its keys or none
        expected_pv = np.where(visited[..., lo:hi], weights[..., lo:hi], 0) @ v8[:, head_map, lo:hi]
        np.testing.assert_array_equal(pv[:, :, j][rows], expected_pv[rows], err_msg=f"P8 @ V8, tile {j}")

    ops = sim.Operands(*(x.astype(np.float32) for x in codes), *scales)
    parts = sim.trace_operands(ops, config=cfg, is_causal=shape[6], kv_splits=shape[9], seq_lens=seq_lens,
                               causal_alignment=shape[7]).parts
    sim_codes = np.full(p_codes.shape, INT32_MIN, np.int64)
    for part in parts:
        for step in part.steps:
            lo = step.key_tile * bn
            width = min(bn, nk - lo)
            sim_codes[part.batch, ..., lo:lo + width] = step.p_codes[0, ..., :width]
    diff = np.abs(p_codes[..., :nk][visited].astype(np.int64) - sim_codes[..., :nk][visited])
    fraction = float((diff > 0).mean())
    print(f"\n[P codes] {shape_id(shape)} {config_name}: {fraction:.3e} of {diff.size} codes differ from sim by one "
          f"step (max step {int(diff.max())})")
    assert diff.max() <= 1
    assert fraction < 1e-2


# --- bounded: the output --------------------------------------------------------------------------------


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_decode_output_error_within_sims(shape, config_name, paged):
    """Kernel error vs float64 <= 1.1 x sim's (same kv_splits) + a tiny eps; lse likewise."""
    cfg = CONFIGS[config_name]
    q, k, v, seq_lens = decode_inputs(shape)
    codes, scales = quantized_cache(q, k, v, cfg)
    table = None
    if paged:
        codes, scales, table = paged_cache(codes, scales, seq_lens, cfg, page_size=2 * cfg.block_n)
    out, lse = (x.cpu().numpy() for x in run_kernel(codes, scales, cfg, shape, seq_lens, block_table=table))
    sim_out, sim_lse = run_sim(codes, scales, cfg, shape, seq_lens, block_table=table)
    ref, ref_lse = reference_decode(q, k, v, seq_lens, is_causal=shape[6], causal_alignment=shape[7])
    err_kernel, err_sim = rel_l2(out, ref), rel_l2(sim_out, ref)
    print(f"\n[output] {shape_id(shape)} {config_name} {'paged' if paged else 'contiguous'}: rel L2 vs float64 kernel "
          f"{err_kernel:.4e} sim {err_sim:.4e}; kernel vs sim {rel_l2(out, sim_out.astype(np.float64)):.2e}")
    assert np.isfinite(out).all(), "poisoned pages or slots were read, or a row lost its keys"
    assert err_kernel <= 1.1 * err_sim + 1e-5
    assert sim.max_abs_error(out, ref) <= 1.5 * sim.max_abs_error(sim_out, ref) + 1e-4
    seen = np.isfinite(ref_lse)
    assert (lse[~seen] == -np.inf).all() and (out[~seen] == 0).all(), "rows that see no key: lse -inf, out 0"
    lse_err_kernel = np.abs(lse[seen] - ref_lse[seen]).max()
    lse_err_sim = np.abs(sim_lse[seen] - ref_lse[seen]).max()
    print(f"[lse] max abs error vs float64: kernel {lse_err_kernel:.3e} sim {lse_err_sim:.3e}")
    assert lse_err_kernel <= 1.5 * lse_err_sim + 1e-4


@pytest.mark.parametrize("paged", [False, True], ids=["contiguous", "paged"])
@pytest.mark.parametrize("config_name", ["paper", "rich"])
def test_two_tiles_in_flight_give_one_tiles_bits(config_name, paged):
    """DecodeLaunch.tiles_in_flight=2 reorders loads and products only: every fold is the one-tile loop's, so the
    output and lse are its bits (odd and even tile counts per split, a tail tile, causal rows)."""
    cfg = CONFIGS[config_name]
    shape = (2, 8, 2, 3, 1700, 128, True, "bottom_right", (1700, 901), 3)
    q, k, v, seq_lens = decode_inputs(shape)
    codes, scales = quantized_cache(q, k, v, cfg)
    table = None
    if paged:
        codes, scales, table = paged_cache(codes, scales, seq_lens, cfg, page_size=2 * cfg.block_n)
    results = [run_kernel(codes, scales, cfg, shape, seq_lens, block_table=table,
                          launch=DecodeLaunch(block_m=16, num_warps=4, num_stages=3, tiles_in_flight=n))
               for n in (1, 2)]
    for name, one, two in zip(("output", "lse"), *results):
        assert torch.equal(one.view(torch.int32), two.view(torch.int32)), f"{name}: two tiles in flight changed bits"


@pytest.mark.parametrize("config_name", ["paper", "rich"])
def test_paged_cache_gives_the_contiguous_bits(config_name):
    """Same kernel arithmetic, other addressing: a paged cache (shuffled, holed, a shared first page) and the
    contiguous cache its pages gather to give the same bits."""
    cfg = CONFIGS[config_name]
    shape = (3, 16, 4, 4, 3000, 128, True, "bottom_right", (3000, 1111, 2 * cfg.block_n), 6)
    q, k, v, seq_lens = decode_inputs(shape)
    k[1, :, : 2 * cfg.block_n] = k[0, :, : 2 * cfg.block_n]  # sequences 0 and 1 share their first page
    v[1, :, : 2 * cfg.block_n] = v[0, :, : 2 * cfg.block_n]
    # A shared page holds one set of codes, so the two sequences must quantize it alike: with V scaled per (batch,
    # head) (the paper's configuration) that means one V scale, as a serving engine quantizing a shared prefix once
    # would have it. The first key of sequence 1 carries sequence 0's largest |V| of each head.
    if cfg.v_granularity == "head":
        biggest = np.abs(v[:2]).max(axis=(2, 3))  # (2, H)
        v[:2, :, 0, 0] = biggest.max(axis=0)[None, :]  # both sequences: the same max |V| per head, on a shared key
    codes, scales = quantized_cache(q, k, v, cfg)
    page_size = 2 * cfg.block_n
    table, num_pages = make_block_table(np.random.default_rng(3), seq_lens, page_size, holes=5,
                                        share_first_page=True, spare_columns=2)
    paged_codes, paged_scales = page_the_cache(codes, scales, table, seq_lens, cfg, num_pages=num_pages,
                                               page_size=page_size)
    out_paged, lse_paged = run_kernel(paged_codes, paged_scales, cfg, shape, seq_lens, block_table=table)
    out, lse = run_kernel(codes, scales, cfg, shape, seq_lens)
    assert torch.equal(out_paged, out) and torch.equal(lse_paged, lse)


@pytest.mark.parametrize("head_dim", [128, 64])
def test_default_split_count_on_the_device(head_dim):
    """B=1, 8 kv heads, 32k keys: the default split count fills its target without overshooting it (D=128: one
    program per SM, as two would make splits shorter than 8k keys; D=64: two programs per SM; dispatch.split_count),
    and sim with that count is matched."""
    shape = (1, 32, 8, 1, 32768, head_dim, False, "top_left", None, None)
    cfg = PAPER
    splits = decode_splits(1, 32, 8, 1, 32768, cfg, DEVICE, head_dim=head_dim)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    waves = 1 if head_dim == 128 else 2
    print(f"\n[splits] B=1 Hq=32 Hkv=8 Nk=32768 D={head_dim} on {sms} SMs: kv_splits={splits}")
    # Within one split of the target (D=64 stops at 32 splits, the 1k-key minimum, one short of 264 / 8 = 33).
    assert 8 * splits <= waves * sms < 8 * (splits + 2), f"the first stage must fill {waves} wave(s), not overshoot"
    q, k, v, seq_lens = decode_inputs(shape)
    codes, scales = quantized_cache(q, k, v, cfg)
    out, _ = run_kernel(codes, scales, cfg, shape, seq_lens)  # kv_splits=None: the default
    sim_out, _ = run_sim(codes, scales, cfg, shape[:9] + (splits,), seq_lens)
    ref, _ = reference_decode(q, k, v, seq_lens, is_causal=False, causal_alignment="top_left")
    err_kernel, err_sim = rel_l2(out.cpu().numpy(), ref), rel_l2(sim_out, ref)
    print(f"[output] rel L2 vs float64 kernel {err_kernel:.4e} sim (kv_splits={splits}) {err_sim:.4e}")
    assert err_kernel <= 1.1 * err_sim + 1e-5


def test_unvalidated_bad_block_table_gives_nan_for_its_sequence_only():
    """On CUDA nothing is read back by default: an entry out of range is never followed (compute-sanitizer
    checks the 'never'); the sequence's output is NaN, the others' unchanged."""
    shape = (2, 8, 2, 2, 600, 64, True, "bottom_right", (600, 300), 3)
    cfg = RICH
    q, k, v, seq_lens = decode_inputs(shape)
    codes, scales = quantized_cache(q, k, v, cfg)
    codes, scales, table = paged_cache(codes, scales, seq_lens, cfg, page_size=128)
    good, _ = run_kernel(codes, scales, cfg, shape, seq_lens, block_table=table)
    bad_table = table.copy()
    bad_table[1, 1] = 10**6
    bad, _ = run_kernel(codes, scales, cfg, shape, seq_lens, block_table=bad_table, validate=False)
    assert torch.isnan(bad[1]).all()
    assert torch.equal(bad[0], good[0])
