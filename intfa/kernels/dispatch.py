"""Which kernel runs for which call, with which launch parameters: the one place that decides.

:func:`attention_forward` is the entry every caller uses (the torch API, the benchmark, the tests). It picks the
kernel for the shape and device and takes tile rows, warps and pipeline depth from a table: :func:`prefill_launch`
per (architecture, head dim, causal, Nq), :func:`decode_launch` per (architecture, head dim, Nq, GQA group size).
Launch parameters change speed, never numbers: everything that changes a number is a field of
:class:`sim.QuantConfig`, and nothing here overrides one (a block-scaled Q fixes the prefill kernel's tile height
to ``config.block_m``, because its scale groups are those tiles).

The one number chosen here is the decode kernel's split count ``kv_splits`` (docs/spec.md 3.6: each split runs its
own online softmax), and only when the caller leaves it open (``kv_splits=None``, ``intfa.attention_int8``'s
default): :func:`decode_splits` picks it from the batch, the kv heads, the key tiles, the head dim and the GPU's SM
count, so that small batches still fill the GPU. It is public so that the same number can be given to sim
(``sim.attention_int8(..., kv_splits=...)``) to reproduce the kernel's bytes; under the interpreter the SM count is
fixed (:data:`INTERPRETER_SM_COUNT`), so CPU runs are deterministic.

Kernels: :mod:`.prefill` (one program per query tile and head) for Nq > :data:`DECODE_MAX_SEQ_Q`; :mod:`.decode`
(keys split across programs, GQA heads packed in a tile, paged caches, per-sequence lengths, bottom-right causal
alignment) for small Nq and for whatever only it does.
"""

from __future__ import annotations

import dataclasses

import torch

from sim.config import QuantConfig, n_blocks

from .decode import decode_forward
from .prefill import prefill_forward

#: Calls with at most this many queries run the decode kernel (issue 10: decoding and chunked prefill).
DECODE_MAX_SEQ_Q = 64
#: The SM count the split heuristic assumes under the interpreter (CPU): fixed, and small enough that the CPU tests'
#: small shapes split.
INTERPRETER_SM_COUNT = 8
#: The most splits the heuristic chooses (each adds a partial state to write and to combine).
MAX_KV_SPLITS = 64
#: Pipeline depth of the paged decode kernel. The block-table entry is one more load in each tile's chain, and
#: Triton's pipeliner keeps the K/V copies ahead of the tile being computed only from 5 stages on: with 3 or 4 it
#: waits for every copy in flight at each tile (``async_wait {num = 0}`` in the TTGIR, ``DEPBAR.LE SB0, 0x0`` in
#: the SASS). Measured on the H100 (results/nvidia-h100-80gb-hbm3/tune/paged-stages.txt, Nk=32k, paged time over
#: contiguous): 3 stages 1.12-1.51 (D=64) and 0.99-1.26 (D=128); 5 stages 0.97-1.01 on every shape, large grids
#: included. Hopper only (and the interpreter, which ignores it) until other architectures are measured: five
#: stages of D=256 tiles would not fit the shared memory of sm_86/sm_89.
PAGED_STAGES = 5


#: The prefill kernels: "tl", the Triton-language kernel (:mod:`.prefill`, the one the interpreter checks bit for bit),
#: and "gluon", the Hopper kernel (:mod:`.hopper`: TMA ring, producer warp, wgmma; GPU-tested only).
PREFILL_KERNELS = ("tl", "gluon")


@dataclasses.dataclass(frozen=True)
class Launch:
    """Launch parameters of one prefill call: query rows per program, warps, software-pipeline depth, kernel.

    kernel : "tl" or "gluon" (:data:`PREFILL_KERNELS`). For "gluon", ``num_warps`` is implied by ``block_m`` and
        ``warp_specialize`` (a producer warp issues the TMA copies, each 64-row warpgroup consumes), and ``use_tma``
        is always on; ``cooperative`` and ``overlap`` are :func:`intfa.kernels.hopper.hopper_forward`'s options of
        the same names (the tl kernel has neither). ``int_cvt``: the int32 products converted by I2F instructions
        instead of the magic-number add (both kernels; the same values).
    """

    block_m: int
    num_warps: int
    num_stages: int
    use_tma: bool = False
    kernel: str = "tl"
    warp_specialize: bool = False
    cooperative: bool = False
    overlap: bool = False
    int_cvt: bool = False


def device_arch(device: torch.device) -> str:
    """"sm90" for Hopper, "sm80" for Ampere, ...; "cpu" for the interpreter."""
    if device.type != "cuda":
        return "cpu"
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def prefill_launch(arch: str, head_dim: int, is_causal: bool, seq_q: int, config: QuantConfig) -> Launch:
    """Launch parameters of the prefill kernel (speed only; the result does not depend on them).

    Measured on the H100 (docs/performance.md, version 6; results/nvidia-h100-80gb-hbm3/tune/v6-variants.csv):
    64-row tiles with 4 warps (one warpgroup) beat 128 rows with 8 warps at every head dim, by 12% at D=128 and
    19% at D=64 (two programs share an SM and overlap each other's softmax and products); three stages of K/V in
    flight beat two and four; K and V through TMA descriptors gain 2-8% except with V block scales at D >= 128,
    where they lost 8% (more registers spilled). The interpreter takes the same choices, so that it runs both
    load paths. Architectures before Hopper have no TMA. The int32 products convert by I2F on Hopper (``int_cvt``):
    two instructions per score fewer at D=128, 1.5 at D=64, and +1-11% at N = 1k-16k in the paper configuration,
    0-4% in the recommended one (results/nvidia-h100-80gb-hbm3/tune/v9-int-cvt-7e585b0*.csv); other architectures
    keep the magic-number add until measured.
    """
    del is_causal, seq_q  # one row for both until a sweep says otherwise
    use_tma = arch in ("sm90", "cpu") and not (config.v_granularity == "block" and head_dim >= 128)
    block_m = config.block_m if config.q_granularity == "block" else 64  # block-scaled Q: its groups are the tiles
    num_warps = 8 if block_m >= 128 else 4
    return Launch(block_m=block_m, num_warps=num_warps, num_stages=3, use_tma=use_tma,
                  int_cvt=arch in ("sm90", "cpu"))


def gluon_launch(head_dim: int = 128, is_causal: bool = False) -> Launch:
    """The Gluon kernel's launch for a head dim and causality: the fastest variant that passes the GPU contract.

    ``ws-overlap-cvt`` everywhere: a producer warp, each 64-row consumer warpgroup its own partition, the overlapped
    loop (tile j + 1's Q8 @ K8^T issued with tile j's P8 @ V8), I2FP conversions, 4 ring stages. Measured on the
    H100 (results/nvidia-h100-80gb-hbm3/tune/v14-ws-overlap.csv, d2064ba, paper configuration, B=4, H=32, TOP/s,
    the tl kernel and cuDNN in the same run; every variant's output bit-identical to the tl kernel's), at N = 4k /
    8k / 16k / 32k: D=128 628 / 687 / 707 / 730 (the cooperative overlapped loop ``coop-overlap-cvt``, the launch
    before, 596 / 645 / 659 / 682; ``ws-cvt`` without overlap 569-629), causal 442 / 586 / 642 / 685 (``ws-cvt``
    498 / 574 / 608 / 628); D=64 401 / 436 / 454 / 464 (``ws-cvt`` 383-424), causal 323 / 401 / 438 / 458. 3 stages
    instead of 4: 1-6% slower. The two partitions drift apart, where the cooperative partition's warpgroups move
    in step. ``head_dim`` and ``is_causal`` stay parameters: the launch was chosen per case until this measurement.
    """
    return Launch(block_m=128, num_warps=4, num_stages=4, use_tma=True, kernel="gluon", warp_specialize=True,
                  overlap=True, int_cvt=True)


#: Keys from which the Gluon kernel (gluon_launch's) outruns the tl kernel on the H100, per (head dim <= 64,
#: causal); None: never. Measured as the API runs both: ``python -m intfa.bench --suite full``'s int8-full against
#: int8-full-tl (the tl kernel with prefill_launch's parameters), B=4, H=32, paper configuration, in two runs
#: (results/nvidia-h100-80gb-hbm3/tune/bench-full-342d3aa.csv, int8-full on the Gluon kernel from 4k keys at D=128
#: and 8k at D=64; at N = 4k / 8k / 16k / 32k): D=128 1.02 / 1.06 / 1.11 / 1.12, causal 1.01 / 0.96 / 1.02 / 1.09;
#: D=64 1.01 (tl both) / 0.96 / 1.01 / 1.04, causal 0.99 (tl both) / 1.08 / 1.13 / 1.14. tune/bench-full-24f2b37.csv
#: (D=128 causal from 16k): D=128 1.01 / 1.06 / 1.11 / 1.12, causal 1.00 (tl both) / 1.00 (tl both) / 1.03 / 1.11;
#: D=64 0.98 (tl both) / 0.97 / 1.01 / 1.03, causal 0.98 (tl both) / 1.07 / 1.13 / 1.14. The same kernel timed twice
#: ("tl both") moves by 2-4% (0.96 at D=128 causal 8k in bench-full.csv at 1c52384): the Gluon kernel takes a length
#: where both runs have it at 1.0 or more, from there on (scripts/bench_hopper.py's tl row, a 64-row TMA launch
#: that is not the API's, is slower at D=64 and is not used).
GLUON_MIN_KEYS = {(True, False): 16384, (True, True): 8192, (False, False): 4096, (False, True): 16384}
#: The same with V block scales (the recommended configuration, where the tl kernel spills at D=128): Gluon /
#: tl (int8-rec / int8-rec-tl, tune/bench-full-342d3aa.csv, where the Gluon kernel ran from 4k keys) 1.12 / 1.13 /
#: 1.13 / 1.15 at D=128, but causal 0.84 / 0.95 / 1.01 / 1.03; at D=64 1.14-1.17, causal 1.06-1.30.
GLUON_MIN_KEYS_V_BLOCK = {(True, False): 4096, (True, True): 4096, (False, False): 4096, (False, True): 16384}


def default_prefill_launch(arch: str, head_dim: int, is_causal: bool, seq_q: int, seq_k: int, config: QuantConfig,
                           gluon_reason: str | None) -> Launch:
    """The prefill kernel ``kernel="auto"`` runs: the fastest correct one (issue 9).

    On Hopper the Gluon kernel (:func:`gluon_launch`) wherever it takes the operands and was measured faster: keys
    at least :data:`GLUON_MIN_KEYS` for the head dim and causality, or
    :data:`GLUON_MIN_KEYS_V_BLOCK` (likewise) with V block scales: ``gluon_reason`` is why it cannot
    (:func:`intfa.kernels.hopper.unsupported_reason`, an attn_mask), None when it can; block-scaled Q stays on the
    tl kernel (its tiles are config.block_m rows, and the Gluon launches are measured at 128). Everywhere else, and
    for the interpreter, the tl kernel (:func:`prefill_launch`), the one the interpreter checks bit for bit; the
    Gluon kernel computes its bytes (the GPU tests check it against sim and the tl kernel).
    """
    if config.v_granularity == "block":
        min_keys = GLUON_MIN_KEYS_V_BLOCK[(head_dim <= 64, bool(is_causal))]
    else:
        min_keys = GLUON_MIN_KEYS[(head_dim <= 64, bool(is_causal))]
    if (arch == "sm90" and gluon_reason is None and config.q_granularity != "block" and min_keys is not None
            and seq_k >= min_keys):
        return gluon_launch(head_dim, is_causal)
    return prefill_launch(arch, head_dim, is_causal, seq_q, config)


@dataclasses.dataclass(frozen=True)
class DecodeLaunch:
    """Launch parameters of the decode kernel, and the split heuristic's knobs (see :func:`split_count`).

    block_m : packed (query head, query) rows per program, a power of two >= 16 (tl.dot's smallest tile).
    num_warps, num_stages : warps per program, K/V tiles in flight.
    tiles_in_flight : key tiles per iteration of the program's loop, 1 or 2 (decode_forward's).
    waves : the split count aims at this many programs per SM ...
    min_deep_split_keys : ... as long as each split keeps at least this many keys;
    min_split_keys : and at least one program per SM (one wave) with splits of at least this many keys (a split's
        partial state costs a write and a read of rows x D floats: short splits spend more on that than on the
        cache, and a short split cannot hide its pipeline's ramp).
    """

    block_m: int
    num_warps: int
    num_stages: int
    waves: float = 2.0
    min_split_keys: int = 512
    min_deep_split_keys: int = 512
    tiles_in_flight: int = 1


def decode_launch(arch: str, head_dim: int, seq_q: int, group_size: int, paged: bool = False) -> DecodeLaunch:
    """Launch parameters of the decode kernel (speed only, except through the default split count).

    One tile holds all ``group_size * seq_q`` packed rows where that is at most 128, so that K and V are read once
    per kv head; 16 rows is the least tl.dot takes. Measured on the H100 (scripts/tune_decode.py, D=128 and 64,
    non-causal, one query; results/nvidia-h100-80gb-hbm3/tune/tune_decode-32k.csv and stages-d{64,128}-1d4f165.csv):
    4 warps and 3 stages at least as fast as 8 warps, 2 stages or 4-6 stages. Split count: two programs per SM beat
    one wave where the splits stay long enough: at D=64 from 1k keys a split on (8-22% at B=1 and B=8; B=1, 8 kv
    heads, 32k keys: 27.7 us at 32 splits, 30.0 at 16), at D=128 only from 8k keys (2-4% at B=8 with 8 kv heads and
    B=1 with 32, Nk >= 32k), while 4k-key splits there lost 3-8% to one wave (B=1, 8 kv heads, 64k-128k keys; the
    whole decode suite at cc509c4 against 1d4f165). D=64 tiles are half the bytes: a program is through its split
    sooner, and a second one on the SM keeps more loads in flight. A paged cache (``paged``) takes
    :data:`PAGED_STAGES` on Hopper. ``tiles_in_flight`` stays 1 here: it depends on the split length, and
    attention_forward sets it from :func:`decode_tiles_in_flight` once the split count is known. Other
    architectures and the interpreter use the same table until someone measures them.
    """
    rows = group_size * seq_q
    block_m = min(128, max(16, 1 << (rows - 1).bit_length()))
    num_warps = 8 if block_m >= 128 else 4
    num_stages = PAGED_STAGES if paged and arch in ("sm90", "cpu") else 3
    return DecodeLaunch(block_m=block_m, num_warps=num_warps, num_stages=num_stages, waves=2.0, min_split_keys=512,
                        min_deep_split_keys=1024 if head_dim <= 64 else 8192)


#: Splits of at least this many keys take two key tiles per iteration in 16-row programs (decode_tiles_in_flight).
PAIRED_TILES_MIN_SPLIT_KEYS = 16384


def decode_tiles_in_flight(block_m: int, seq_k: int, kv_splits: int) -> int:
    """Key tiles per iteration of the decode programs' loop (DecodeLaunch.tiles_in_flight): speed only.

    block_m : rows per program. seq_k : keys of the longest sequence the call can hold (the cache's Nk, or a paged
    cache's capacity, block-table width x page size). kv_splits : splits per sequence, >= 1.
    Two (both tiles' loads and Q8 @ K8^T before their folds) where the programs have 16 rows and a split of seq_k
    keys keeps at least PAIRED_TILES_MIN_SPLIT_KEYS of them; one otherwise. Measured on the H100
    (results/nvidia-h100-80gb-hbm3/tune/tiles-in-flight-*.csv, B=1 with 8 or 32 kv heads and B=8 with 8, one or
    four queries, 16-row programs): splits of 16k-32k keys -1% to +11% with two (+4% in the median), of 4k-8k keys
    -10% to +10%, of 1k-2k keys -10% to +4%, of 512 keys 13-19% slower; 64-row programs (16 queries x 4 heads) over
    twice as slow at D=128 (0-4% faster at D=64).
    """
    if kv_splits < 1:
        raise ValueError(f"kv_splits: expected an int >= 1, got {kv_splits}")
    if block_m > 16:
        return 1
    return 2 if -(-seq_k // kv_splits) >= PAIRED_TILES_MIN_SPLIT_KEYS else 1


def device_sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; :data:`INTERPRETER_SM_COUNT` for the interpreter (CPU)."""
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return torch.cuda.get_device_properties(device).multi_processor_count


def split_count(programs: int, key_tiles: int, num_sms: int, *, waves: float, min_split_tiles: int,
                min_deep_split_tiles: int | None = None) -> int:
    """The split heuristic: the larger of two counts, each no larger than a wave's worth of programs.

    - fill: one program per SM (one wave), splits of at least ``min_split_tiles`` tiles;
    - deepen: ``waves`` programs per SM, splits of at least ``min_deep_split_tiles`` (default ``min_split_tiles``):
      two programs per SM keep twice the loads in flight, which pays while each split is long enough to run its
      pipeline at speed.

    programs : first-stage programs without splitting (batch x kv heads x row tiles). key_tiles : key tiles of
    the longest sequence. Returns an int in [1, MAX_KV_SPLITS]; 1 when the programs alone fill the target (a grid
    of more than ``waves * num_sms / 2`` programs runs unsplit).
    """
    # Rounded down: a split count that overshoots the wave by a few programs (B=1, 8 kv heads: 17 splits, 136
    # programs on 132 SMs) leaves those few for a second round on SMs that are already busy.
    programs = max(programs, 1)
    deep_tiles = min_split_tiles if min_deep_split_tiles is None else min_deep_split_tiles
    fill = min(num_sms // programs, key_tiles // max(min_split_tiles, 1))
    deepen = min(int(waves * num_sms) // programs, key_tiles // max(deep_tiles, 1))
    return max(1, min(max(fill, deepen), MAX_KV_SPLITS))


def decode_splits(batch: int, heads_q: int, heads_kv: int, seq_q: int, seq_k: int, config: QuantConfig,
                  device: torch.device | str, *, head_dim: int) -> int:
    """The split count :func:`attention_forward` uses when given ``kv_splits=None`` (``intfa.attention_int8``'s
    default): pass it to ``sim.attention_int8(..., kv_splits=...)`` to reproduce the kernel's numbers.

    seq_k : keys of the longest possible sequence: Nk for a contiguous cache, max_pages * page_size for a paged one
    (the heuristic reads no length from the device). ``device``: where the kernel runs (its SM count and
    architecture; "cpu" for the interpreter). head_dim : D (the minimum split length depends on it; keyword, so
    that no caller reproduces another head dim's count by accident).
    """
    device = torch.device(device)
    group = heads_q // heads_kv
    launch = decode_launch(device_arch(device), head_dim, seq_q, group)
    row_tiles = -(-group * seq_q // launch.block_m)
    return split_count(batch * heads_kv * row_tiles, n_blocks(seq_k, config.block_n), device_sm_count(device),
                       waves=launch.waves, min_split_tiles=launch.min_split_keys // config.block_n,
                       min_deep_split_tiles=launch.min_deep_split_keys // config.block_n)


def attention_forward(
    q_codes: torch.Tensor, k_codes: torch.Tensor, v: torch.Tensor,
    q_scale: torch.Tensor, k_scale: torch.Tensor, v_scale: torch.Tensor | None,
    *, config: QuantConfig, scale: float, is_causal: bool = False, out_dtype: torch.dtype = torch.float16,
    return_lse: bool = False, trace: bool = False, launch: Launch | DecodeLaunch | None = None,
    fp_fusion: bool | None = None, kv_splits: int | None = 1, seq_lens: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None, causal_alignment: str = "top_left", attn_mask: torch.Tensor | None = None,
    kernel: str = "auto",
):
    """INT8 attention on prepared operands (shapes and values already checked), by the kernel that suits them.

    Parameters are those of :func:`intfa.kernels.prefill.prefill_forward` and
    :func:`intfa.kernels.decode.decode_forward`. The decode kernel runs for Nq <= DECODE_MAX_SEQ_Q, and for
    whatever only it does: a paged cache (``block_table``), per-sequence lengths (``seq_lens``), bottom-right
    causal alignment, or ``kv_splits`` other than 1. ``kv_splits`` (decode kernel): an int >= 1, or None for
    :func:`decode_splits`' choice; the prefill kernel is one split. ``launch`` overrides the table's choice and,
    by its type, the kernel (tuning scripts and tests): a :class:`Launch` runs the prefill kernel (``block_m`` must
    stay ``config.block_m`` for block-scaled Q), a :class:`DecodeLaunch` the decode kernel. ``attn_mask``
    ((B, Hq, Nq, Nk) bool or float32, broadcast dimensions at stride 0) runs the prefill kernel, whatever Nq.
    ``kernel`` (when ``launch`` is None): "auto" takes :func:`default_prefill_launch`'s prefill kernel (the Gluon
    kernel on Hopper where it runs the operands and was measured faster, else the tl kernel), "tl" the
    Triton-language kernels only, "gluon" the Gluon prefill kernel (:func:`gluon_launch`) or a ValueError naming
    why it cannot run. Returns out (B, Hq, Nq, D) out_dtype; with ``return_lse`` also lse (B, Hq, Nq) float32;
    with ``trace`` the trace dict last.
    """
    b, hq, nq, d = q_codes.shape
    hkv = k_codes.shape[1]
    if kernel not in ("auto", *PREFILL_KERNELS):
        raise ValueError(f"kernel: expected 'auto', 'tl' or 'gluon', got {kernel!r}")
    if kernel == "gluon" and launch is None:
        launch = gluon_launch(d, is_causal)
    decode_only = (block_table is not None or seq_lens is not None or (is_causal and causal_alignment == "bottom_right")
                   or (kv_splits is not None and kv_splits > 1))
    if attn_mask is not None and (decode_only or isinstance(launch, DecodeLaunch)):
        raise ValueError("attn_mask: only the prefill kernel takes one; a paged cache, per-sequence lengths, "
                         "bottom-right causal alignment, kv_splits > 1 or a DecodeLaunch need the decode kernel")
    if isinstance(launch, Launch):
        if decode_only and launch.kernel == "gluon":
            raise ValueError("kernel: the Gluon kernel is a prefill kernel; a paged cache, per-sequence lengths, "
                             "bottom-right causal alignment or kv_splits > 1 need the decode kernel (kernel='auto')")
        if decode_only:
            raise ValueError("launch: a paged cache, per-sequence lengths, bottom-right causal alignment or kv_splits "
                             f"> 1 need the decode kernel (a DecodeLaunch), got {launch}")
        use_decode = False
    else:
        use_decode = attn_mask is None and (decode_only or isinstance(launch, DecodeLaunch) or nq <= DECODE_MAX_SEQ_Q)
    if scale < 0:
        # The kernels take each row's max of qk * k_scale and scale it by q_row, which needs q_row >= 0. A
        # negative softmax scale is the same arithmetic on negated Q codes: ((-qk) * k_scale) * (-q_row) is
        # (qk * k_scale) * q_row exactly (negation is exact; the project's codes lie in [-127, 127]).
        q_codes, scale = torch.neg(q_codes), -scale
    elif scale == 0:
        # Every score is 0 (uniform attention over the visible keys): so it is with Q = 0 and any positive scale,
        # without the 0 * -inf = NaN that a zero q_row would make of masked scores.
        q_codes, scale = torch.zeros_like(q_codes), 1.0
    if not use_decode:
        if launch is None:
            arch = device_arch(q_codes.device)
            routed = kernel == "auto" and arch == "sm90"
            if routed:  # the operands' check is made here once, for the route (gluon_reason)
                launch = default_prefill_launch(arch, d, is_causal, nq, k_codes.shape[2], config,
                                                _gluon_unsupported(q_codes, k_codes, v, config, attn_mask))
            else:
                launch = prefill_launch(arch, d, is_causal, nq, config)
        else:
            routed = False
        if launch.kernel == "gluon":
            return _gluon_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                                  is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, trace=trace,
                                  launch=launch, fp_fusion=fp_fusion, attn_mask=attn_mask, operands_checked=routed)
        return prefill_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                               is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, trace=trace,
                               block_m=launch.block_m, num_warps=launch.num_warps, num_stages=launch.num_stages,
                               use_tma=launch.use_tma, fp_fusion=fp_fusion, attn_mask=attn_mask,
                               int_cvt=launch.int_cvt)
    seq_k = block_table.shape[1] * k_codes.shape[2] if block_table is not None else k_codes.shape[2]
    from_table = launch is None
    if from_table:
        launch = decode_launch(device_arch(q_codes.device), d, nq, hq // hkv, paged=block_table is not None)
    if kv_splits is None:
        kv_splits = decode_splits(b, hq, hkv, nq, seq_k, config, q_codes.device, head_dim=d)
    if from_table:
        launch = dataclasses.replace(launch, tiles_in_flight=decode_tiles_in_flight(launch.block_m, seq_k, kv_splits))
    return decode_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                          is_causal=is_causal, kv_splits=kv_splits, out_dtype=out_dtype, return_lse=return_lse,
                          trace=trace, block_m=launch.block_m, num_warps=launch.num_warps,
                          num_stages=launch.num_stages, tiles_in_flight=launch.tiles_in_flight, seq_lens=seq_lens,
                          block_table=block_table, causal_alignment=causal_alignment, fp_fusion=fp_fusion)


def _gluon_unsupported(q_codes, k_codes, v, config, attn_mask) -> str | None:
    """Why the Gluon kernel cannot run this call (None when it can); imports Gluon, so Hopper only."""
    if attn_mask is not None:
        return "the Gluon kernel takes no attn_mask (the tl kernel does)"
    from .hopper import unsupported_reason  # Gluon is imported only where it can run

    return unsupported_reason(q_codes, k_codes, v, config=config)


def _gluon_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, *, config, scale, is_causal, out_dtype, return_lse,
                   trace, launch: Launch, fp_fusion, attn_mask, operands_checked: bool = False):
    """The Gluon kernel where it can run; a ValueError naming why where it cannot (no silent fallback: the caller
    asked for this kernel). ``operands_checked``: the route already found nothing against the operands."""
    if attn_mask is not None:
        raise ValueError("kernel: the Gluon kernel takes no attn_mask (the tl kernel does)")
    arch = device_arch(q_codes.device)
    if arch != "sm90":
        raise ValueError(f"kernel: the Gluon kernel needs a Hopper GPU (sm90), the operands are on {arch!r}"
                         + (" (Gluon has no interpreter)" if arch == "cpu" else ""))
    from .hopper import hopper_forward, unsupported_reason  # Gluon is imported only where it can run

    reason = None if operands_checked else unsupported_reason(q_codes, k_codes, v, config=config)
    if reason is not None:
        raise ValueError(f"kernel: the Gluon kernel cannot run these operands: {reason}")
    block_m = launch.block_m
    if config.q_granularity == "block":  # block-scaled Q: the tiles are its scale groups
        if config.block_m not in (64, 128):
            raise ValueError(f"kernel: the Gluon kernel's tiles are 64 or 128 rows, and block-scaled Q needs tiles of "
                             f"config.block_m={config.block_m}")
        block_m = config.block_m
    return hopper_forward(q_codes, k_codes, v, q_scale, k_scale, v_scale, config=config, scale=scale,
                          is_causal=is_causal, out_dtype=out_dtype, return_lse=return_lse, trace=trace,
                          block_m=block_m, num_stages=launch.num_stages, warp_specialize=launch.warp_specialize,
                          cooperative=launch.cooperative, overlap=launch.overlap, int_cvt=launch.int_cvt,
                          fp_fusion=True if fp_fusion is None else fp_fusion)
