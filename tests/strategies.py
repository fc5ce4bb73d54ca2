"""Hypothesis strategies shared by every test file: sim's tests and the kernel's fuzz the same space.

Arrays come from a drawn seed through NumPy (hypothesis' own array strategies are slow at attention
sizes); shapes, distributions and configurations are drawn by hypothesis and shrink as usual.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import sim
from sim.inputs import QKV_FAMILIES, TENSOR_FAMILIES, make_qkv, make_tensor  # noqa: F401 (re-exported)

#: Input families, defined once in sim.inputs: per-tensor ones for quantizer tests, and the attention
#: triples (with the LLM-like "outliers" and the ill-conditioned "extreme_outliers").
DISTRIBUTIONS = QKV_FAMILIES
SIM_HEAD_DIMS = (16, 32, 48, 64, 80, 128, 256)
KERNEL_HEAD_DIMS = (32, 64, 128)
BLOCKS = (16, 32, 64, 128)


@st.composite
def attention_cases(draw, head_dims=SIM_HEAD_DIMS, max_seq=300, distributions=DISTRIBUTIONS, dtypes=(np.float16,)):
    """A full SDPA call: dict with q, k, v (numpy), is_causal, enable_gqa, scale, distribution.

    Odd lengths, Nq != Nk, GQA/MQA (Hq a multiple of Hkv), causal and not, explicit scales.
    """
    batch = draw(st.integers(1, 2))
    heads_kv = draw(st.integers(1, 3))
    group = draw(st.sampled_from((1, 1, 2, 3)))
    seq_q = draw(st.integers(1, max_seq))
    seq_k = draw(st.one_of(st.just(seq_q), st.integers(1, max_seq)))
    head_dim = draw(st.sampled_from(head_dims))
    distribution = draw(st.sampled_from(distributions))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q, k, v = make_qkv(rng, (batch, heads_kv * group, seq_q, head_dim), (batch, heads_kv, seq_k, head_dim),
                       distribution, dtype)
    scale = draw(st.one_of(st.none(), st.floats(0.01, 1.0)))
    return dict(q=q, k=k, v=v, is_causal=draw(st.booleans()), enable_gqa=group > 1 or draw(st.booleans()),
                scale=scale, distribution=distribution)


#: Granularities whose scales stay within one (batch, head): what the torch API accepts ("tensor" is refused).
BATCH_INVARIANT_QK = tuple(g for g in sim.QK_GRANULARITIES if g in sim.BATCH_INVARIANT_GRANULARITIES)
BATCH_INVARIANT_V = tuple(g for g in sim.V_GRANULARITIES if g in sim.BATCH_INVARIANT_GRANULARITIES)


@st.composite
def int8_configs(draw, blocks=BLOCKS, p_quants=sim.P_QUANTS, batch_invariant=False):
    """A full-INT8 QuantConfig: every granularity, tile size, P scheme and scale, and normalizer.

    ``batch_invariant``: only granularities within one (batch, head) (no "tensor": the torch API's configs).
    K smoothing is left off here (it changes what quantize() is given, which the quantizer-level tests
    compare directly); its own tests draw it (test_sim_attention, test_kernel_interpreter).
    """
    qk = BATCH_INVARIANT_QK if batch_invariant else sim.QK_GRANULARITIES
    v = BATCH_INVARIANT_V if batch_invariant else sim.V_GRANULARITIES
    return sim.QuantConfig(
        q_granularity=draw(st.sampled_from(qk)),
        k_granularity=draw(st.sampled_from(qk)),
        v_granularity=draw(st.sampled_from(v)),
        block_m=draw(st.sampled_from(blocks)),
        block_n=draw(st.sampled_from(blocks)),
        p_quant=draw(st.sampled_from(p_quants)),
        p_scale=draw(st.sampled_from(sim.P_SCALES)),
        normalizer=draw(st.sampled_from(sim.NORMALIZERS)),
    )


@st.composite
def quant_inputs(draw, max_seq=200, head_dims=SIM_HEAD_DIMS):
    """(x, granularity, block_size): one tensor to quantize at a drawn granularity."""
    batch = draw(st.integers(1, 2))
    heads = draw(st.integers(1, 3))
    seq = draw(st.integers(1, max_seq))
    head_dim = draw(st.sampled_from(head_dims))
    distribution = draw(st.sampled_from(TENSOR_FAMILIES))
    granularity = draw(st.sampled_from(sim.QUANT_GRANULARITIES))
    block = draw(st.sampled_from(BLOCKS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_tensor(rng, (batch, heads, seq, head_dim), distribution, draw(st.sampled_from((np.float16, np.float32))))
    return x, granularity, block


# --- added for the simulator's property tests (tests/test_sim_*.py) -----------------------------------


@st.composite
def integer_configs(draw, blocks=BLOCKS):
    """Any QuantConfig whose two products use integer codes: :func:`int8_configs` with either P scale,
    or the same with INT4 Q and K."""
    config = draw(int8_configs(blocks=blocks))
    return config.replace(qk_format=draw(st.sampled_from(("int8", "int8", "int4"))),
                          p_scale=draw(st.sampled_from(sim.P_SCALES)))


@st.composite
def float_mode_configs(draw, blocks=BLOCKS):
    """``QuantConfig.none`` at a drawn tile size: the float32 tile loop, no quantization."""
    return sim.QuantConfig.none(block_m=draw(st.sampled_from(blocks)), block_n=draw(st.sampled_from(blocks)))


def emulation_configs(block_m: int = 128, block_n: int = 64) -> dict:
    """The paper's comparison formats by name, every one at the same tile size."""
    return {
        "fp16": sim.QuantConfig.fp16(block_m, block_n),
        "half_int8": sim.QuantConfig.half_int8(block_m, block_n),
        "int8": sim.QuantConfig(block_m=block_m, block_n=block_n),
        "fp8_e4m3": sim.QuantConfig.fp8("e4m3", block_m, block_n),
        "fp8_e5m2": sim.QuantConfig.fp8("e5m2", block_m, block_n),
    }


# --- added for issue 11: named configurations, masks, batch placements -------------------------------------


def named_configs(block_m: int = 16, block_n: int = 16) -> dict:
    """Every configuration :class:`sim.QuantConfig` names (its classmethods, found by introspection, so that a new
    one is covered without editing this), at the given tile size; fp8 in both flavours."""
    configs = {}
    for name, attr in vars(sim.QuantConfig).items():
        if not isinstance(attr, classmethod):
            continue
        config = getattr(sim.QuantConfig, name)().replace(block_m=block_m, block_n=block_n)
        configs[name if name != "fp8" else "fp8_e4m3"] = config
    configs["fp8_e5m2"] = sim.QuantConfig.fp8("e5m2", block_m, block_n)
    return configs


def is_kernel_config(config) -> bool:
    """True for what the Triton kernels run: INT8 Q and K; INT8 or 16-bit float P and V."""
    return config.qk_format == "int8" and config.pv_format in ("int8", "float16", "bfloat16")


#: Kinds of attn_mask the mask strategies draw.
MASK_KINDS = ("bool", "additive", "padding")


@st.composite
def attention_masks(draw, batch, heads_q, seq_q, seq_k, kinds=MASK_KINDS, dtype=np.float32):
    """An attn_mask for (batch, heads_q, seq_q, seq_k) scores, as torch SDPA takes it, in a drawn broadcast shape.

    "bool": each key kept with a drawn probability, and some rows fully masked; "additive": normal values (scaled
    scores move by O(1)) with -inf entries, some rows fully -inf, and some rows of torch.finfo(float32).min (a
    "masked" value that stays finite); "padding": per sequence a number of valid keys (what a padded batch has), as
    bool keep-masks of shape (B, 1, 1, Nk) or (B, 1, Nq, Nk). Shapes: the full (B, Hq, Nq, Nk) or a broadcast one
    ((Nq, Nk), (1, Hq, Nq, Nk), (B, 1, Nq, Nk)). ``dtype`` is the additive mask's dtype.
    """
    kind = draw(st.sampled_from(kinds))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "padding":
        lengths = rng.integers(0, seq_k + 1, batch)
        mask = np.arange(seq_k)[None, :] < lengths[:, None]  # (B, Nk)
        shape = draw(st.sampled_from(((batch, 1, 1, seq_k), (batch, 1, seq_q, seq_k))))
        return np.ascontiguousarray(np.broadcast_to(mask[:, None, None, :], shape))
    shape = draw(st.sampled_from(((batch, heads_q, seq_q, seq_k), (seq_q, seq_k), (1, heads_q, seq_q, seq_k),
                                  (batch, 1, seq_q, seq_k))))
    full_rows = rng.random(shape[:-1]) < draw(st.sampled_from((0.0, 0.1)))
    if kind == "bool":
        mask = rng.random(shape) < draw(st.floats(0.2, 1.0))
        mask[full_rows] = False
        return mask
    mask = rng.standard_normal(shape).astype(np.float32)
    mask[rng.random(shape) < draw(st.floats(0.0, 0.7))] = -np.inf
    mask[full_rows] = -np.inf
    mask[rng.random(shape[:-1]) < 0.05] = np.finfo(np.float32).min
    return mask.astype(dtype)


@st.composite
def masked_attention_cases(draw, kinds=MASK_KINDS, **case_kwargs):
    """:func:`attention_cases` with an ``attn_mask`` entry (see :func:`attention_masks`; None a quarter of the time)."""
    case = draw(attention_cases(**case_kwargs))
    b, hq, nq, _ = case["q"].shape
    nk = case["k"].shape[2]
    mask = draw(st.one_of(st.none(), attention_masks(b, hq, nq, nk, kinds=kinds, dtype=case["q"].dtype)))
    case["attn_mask"] = mask if mask is None or mask.dtype == np.bool_ else mask.astype(case["q"].dtype)
    return case


@st.composite
def batch_placements(draw, head_dims=(16, 32), max_seq=40, max_batch=3, max_heads=3):
    """One sequence's (q, k, v), (1, 1, N, D) float16, and a batch it is placed in at a drawn (batch, head).

    Returns dict(single=(q, k, v), batch=(Q, K, V) with the sequence at [index], index=(b, h), is_causal, scale).
    The neighbours are drawn from any family, scaled by a factor from 1/100 to 100 (issue 11: a neighbour with a
    10x larger V moved the paper configuration's error from 1.7e-2 to 0.10).
    """
    seq_q = draw(st.integers(1, max_seq))
    seq_k = draw(st.one_of(st.just(seq_q), st.integers(1, max_seq)))
    head_dim = draw(st.sampled_from(head_dims))
    batch, heads = draw(st.integers(1, max_batch)), draw(st.integers(1, max_heads))
    if batch * heads == 1:
        batch = 2
    index = (draw(st.integers(0, batch - 1)), draw(st.integers(0, heads - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    single = make_qkv(rng, (1, 1, seq_q, head_dim), (1, 1, seq_k, head_dim), draw(st.sampled_from(DISTRIBUTIONS)))
    factor = np.float32(10.0 ** draw(st.floats(-2, 2)))
    big = make_qkv(rng, (batch, heads, seq_q, head_dim), (batch, heads, seq_k, head_dim),
                   draw(st.sampled_from(DISTRIBUTIONS)), np.float32)
    placed = []
    for neighbours, x in zip(big, single):
        neighbours = np.clip(neighbours * factor, -6e4, 6e4).astype(np.float16)  # finite in float16
        neighbours[index] = x[0, 0]
        placed.append(neighbours)
    return dict(single=single, batch=tuple(placed), index=index, is_causal=draw(st.booleans()),
                scale=draw(st.one_of(st.none(), st.floats(-1.0, 1.0))))


# --- added for the decode kernel (tests/test_decode_*.py) -----------------------------------------------------

#: GQA group sizes (query heads per kv head) the decode tests pack into one tile.
DECODE_GROUPS = (1, 4, 8)


@st.composite
def decode_cases(draw, max_seq_q=16, max_seq_k=300, groups=DECODE_GROUPS, head_dims=KERNEL_HEAD_DIMS,
                 distributions=DISTRIBUTIONS, max_splits=8, lengths=True):
    """A decode call: few queries against a longer cache. dict with q (B, Hkv * group, Nq, D), k and v
    (B, Hkv, Nk, D) float16 numpy; seq_lens (B,) int32 in [0, Nk] or None; is_causal, causal_alignment,
    kv_splits (>= 1), scale, distribution.

    Lengths of 0 and below Nq (rows that see no key with bottom-right alignment), more splits than key tiles
    (empty splits) and causal splits that are entirely masked all lie in this space.
    """
    batch = draw(st.integers(1, 3))
    heads_kv = draw(st.integers(1, 2))
    group = draw(st.sampled_from(groups))
    seq_q = draw(st.integers(1, max_seq_q))
    seq_k = draw(st.integers(1, max_seq_k))
    head_dim = draw(st.sampled_from(head_dims))
    distribution = draw(st.sampled_from(distributions))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, k, v = make_qkv(rng, (batch, heads_kv * group, seq_q, head_dim), (batch, heads_kv, seq_k, head_dim),
                       distribution)
    seq_lens = None
    if lengths and draw(st.booleans()):
        seq_lens = np.array(draw(st.lists(st.integers(0, seq_k), min_size=batch, max_size=batch)), np.int32)
    return dict(q=q, k=k, v=v, seq_lens=seq_lens, is_causal=draw(st.booleans()),
                causal_alignment=draw(st.sampled_from(sim.CAUSAL_ALIGNMENTS)),
                kv_splits=draw(st.integers(1, max_splits)), scale=draw(st.one_of(st.none(), st.floats(0.01, 1.0))),
                distribution=distribution)


def make_block_table(rng: np.random.Generator, seq_lens, page_size: int, *, holes: int = 0, share_first_page=False,
                     spare_columns: int = 0):
    """A block table for ``seq_lens`` as a paged cache's allocator leaves it: (block_table (B, max_pages) int32,
    num_pages).

    Pages are handed out in a shuffled order from a pool with ``holes`` pages no sequence uses (between used
    ones); with ``share_first_page`` the second sequence's first page is the first sequence's (a shared prefix:
    the two sequences then hold the same keys there). Entries past a sequence's pages, and ``spare_columns``
    more, are -1 or page indices out of range: a kernel must never read them.
    """
    needed = [-(-int(n) // page_size) for n in seq_lens]
    max_pages = max(max(needed, default=0), 1) + spare_columns
    num_pages = sum(needed) + holes
    share = share_first_page and len(needed) >= 2 and needed[0] >= 1 and needed[1] >= 1
    pool = list(rng.permutation(max(num_pages, 1)))
    table = np.where(rng.random((len(needed), max_pages)) < 0.5, -1, num_pages + 7).astype(np.int32)
    for b, n in enumerate(needed):
        for p in range(n):
            table[b, p] = pool.pop()
    if share:
        table[1, 0] = table[0, 0]
    return table, max(num_pages, 1)


@st.composite
def paged_tables(draw, seq_lens, page_size: int):
    """(block_table, num_pages) for ``seq_lens`` (:func:`make_block_table`), with holes, shared pages and spare
    columns drawn."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return make_block_table(rng, seq_lens, page_size, holes=draw(st.integers(0, 3)),
                            share_first_page=draw(st.booleans()), spare_columns=draw(st.integers(0, 1)))


def make_paged_cache(rng: np.random.Generator, config, block_table, seq_lens, *, num_pages: int, heads: int,
                     page_size: int, head_dim: int, distribution: str = "normal"):
    """An INT8 paged K/V cache for ``config``: (k_codes, v_codes, k_scale, v_scale) numpy, in the layouts of
    docs/spec.md 3.8 (:func:`sim.paged_scale_shape`).

    Pages are quantized per page at the config's granularities ("channel" and "head" scales, one per sequence, are
    drawn).
    Everything no key in use reaches (pages no sequence uses, slots and tiles past a length) is then poisoned: code
    -128 and NaN scales, so that reading any of it shows.
    """
    batch = block_table.shape[0]
    pages = (num_pages, heads, page_size, head_dim)
    _, k, v = make_qkv(rng, (1, 1, 1, head_dim), pages, distribution)
    v_gran = config.v_quant_granularity

    def quantize_pages(x, granularity):
        if granularity in ("channel", "head"):  # one scale (per channel) per sequence: drawn
            codes, _ = sim.quantize(x, "tensor")
            shape = sim.paged_scale_shape(granularity, num_pages=num_pages, heads=heads, page_size=page_size,
                                          head_dim=head_dim, batch=batch, block_n=config.block_n)
            return codes, rng.uniform(0.5, 2.0, shape).astype(np.float32) / np.float32(127)
        return sim.quantize(x, granularity, block_size=config.block_n)

    k_codes, k_scale = quantize_pages(k, config.k_granularity)
    v_codes, v_scale = quantize_pages(v, v_gran)
    used = np.zeros((num_pages, page_size), bool)  # (page, slot) holds a key in use
    for b, n in enumerate(seq_lens):
        for p in range(-(-int(n) // page_size)):
            used[block_table[b, p], : min(page_size, int(n) - p * page_size)] = True
    for codes in (k_codes, v_codes):
        codes.transpose(0, 2, 1, 3)[~used] = -128
    for scale, gran in ((k_scale, config.k_granularity), (v_scale, v_gran)):
        keys = sim.keys_per_scale_row(gran, config.block_n)
        if keys is not None:  # a scale row is in use where one of its keys is
            row_used = used.reshape(num_pages, page_size // keys, keys).any(axis=2)
            scale.transpose(0, 2, 1, 3)[~row_used] = np.nan
    return k_codes, v_codes, k_scale, v_scale
