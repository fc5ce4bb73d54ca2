"""The Gluon Hopper kernel (intfa.kernels.hopper) on an H100 against sim: the GPU contract (docs/spec.md, level 2).

Run on the device: ``pytest -m gpu tests/test_hopper_gpu.py`` (needs compute capability 9.0; skipped elsewhere).
The same contract as tests/test_kernel_gpu.py, for every launch variant of the Gluon kernel:

- exact: Q8 K8^T and P8 V8 of every visited tile (the kernel's own trace);
- P codes at most one step from sim's (ex2.approx and fused multiply-adds), on a small measured fraction;
- the output's and the lse's errors against float64 within a small factor of sim's own;
- agreement with the tl kernel far below the quantization error (the two run the same float32 operations; only
  reduction orders and the compiler's contractions may differ).

Each launch variant's cases first run in a child process (:func:`warm_up` fills Triton's cache): an int8 dot
under warp specialization can abort the whole process while compiling (Triton issue 11586), which would take
pytest down with it. A variant whose child crashed fails its tests with the child's output instead.
Select variants with ``HOPPER_LAUNCHES=ws-overlap-cvt,ws`` (default: every launch of ALL_LAUNCHES).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_kernel_gpu import INT32_MIN, cuda, make_qkv, reference_lse, rel_l2, shape_id

import intfa
import sim
from intfa.kernels import Launch, attention_forward
from intfa.kernels import dispatch
from intfa.kernels.dispatch import gluon_launch
from intfa.kernels.hopper import hopper_forward, unsupported_reason
from sim.config import default_scale

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                       reason="needs a Hopper GPU (compute capability 9.0)"),
]

#: Launch variants of the Gluon kernel (hopper_forward keyword arguments).
ALL_LAUNCHES = {
    "one-partition": {"block_m": 128, "num_stages": 2},
    "one-warpgroup": {"block_m": 64, "num_stages": 2},
    "overlap": {"block_m": 128, "num_stages": 3, "overlap": True},
    "ws": {"block_m": 128, "num_stages": 2, "warp_specialize": True},
    "ws-cvt": {"block_m": 128, "num_stages": 2, "warp_specialize": True, "int_cvt": True},
    "ws-overlap": {"block_m": 128, "num_stages": 3, "warp_specialize": True, "overlap": True},
    "coop": {"block_m": 128, "num_stages": 2, "warp_specialize": True, "cooperative": True},
    "coop-overlap-cvt": {"block_m": 128, "num_stages": 3, "warp_specialize": True, "cooperative": True,
                         "overlap": True, "int_cvt": True},
    "ws-overlap-cvt": {"block_m": 128, "num_stages": 4, "warp_specialize": True, "overlap": True, "int_cvt": True},
}
#: The launches run by default: all of them. The overlapped loop failed the contract on the H100 until 61ef79e (P8 @
#: V8 wrong from the second key tile, docs/hopper.md); every overlapped launch has passed it since ("ws-overlap" and
#: "ws-overlap-cvt", a consumer partition per warpgroup, at d2064ba). The API routes to "ws-overlap-cvt"
#: (dispatch.gluon_launch): name it in HOPPER_LAUNCHES for a shorter run.
LAUNCHES = [name for name in os.environ.get("HOPPER_LAUNCHES", ",".join(ALL_LAUNCHES)).split(",") if name]

CONFIGS = {
    "paper": sim.QuantConfig.paper(),
    "recommended": sim.QuantConfig.recommended(),
    # every other option: block-scaled Q (its tiles are 64 rows: block_m follows) and K, V per block, 64-key tiles
    "rich": sim.QuantConfig(q_granularity="block", k_granularity="block", v_granularity="block", block_m=64,
                            block_n=64, p_quant="signed255", p_scale="tile_max", normalizer="quantized"),
    "channel": sim.QuantConfig(k_granularity="tensor", v_granularity="channel", block_n=64),
}

# (batch, heads_q, heads_kv, seq_q, seq_k, head_dim, is_causal). Nk a multiple of 16 (TMA's row pitch of the
# sequence-contiguous V); tails past the tiles, Nq != Nk, GQA and MQA, one query row.
SHAPES = [
    (2, 4, 2, 339, 208, 64, True),
    (1, 2, 2, 1024, 1024, 128, False),
    (1, 8, 1, 1000, 1040, 64, False),
    (1, 2, 2, 1536, 1536, 128, True),
    (1, 2, 1, 1, 272, 128, False),
]

# The cases each launch runs: (test, config, shape index). Trace tests on two shapes for the paper and recommended
# configurations; output tests on every shape for the paper's, on two for the others.
CASES = [("trace", c, s) for c in ("paper", "recommended") for s in (0, 1)] \
    + [("output", "paper", s) for s in range(len(SHAPES))] \
    + [("output", c, s) for c in ("recommended", "rich", "channel") for s in (0, 3)] \
    + [("float16", "paper", 0)]


def launch_for(launch_name: str, cfg: sim.QuantConfig) -> dict:
    """The variant's arguments; block-scaled Q fixes the tile height to its scale groups."""
    launch = dict(ALL_LAUNCHES[launch_name])
    if cfg.q_granularity == "block":
        launch["block_m"] = cfg.block_m
    return launch


def gpu_operands(q, k, v, cfg):
    """sim's codes and scales on the GPU, V sequence-contiguous (the layout the Gluon kernel reads)."""
    ops = sim.quantize_operands(q, k, v, cfg)
    codes = [cuda(x.astype(np.int8)) for x in (ops.q, ops.k, ops.v)]
    codes[2] = codes[2].transpose(2, 3).contiguous().transpose(2, 3)
    scales = [cuda(s) for s in (ops.q_scale, ops.k_scale, ops.v_scale)]
    return ops, codes, scales


def run_case(test: str, config_name: str, shape_index: int, launch_name: str):
    """One case's kernel call, as the tests below make it: (ops, out, lse, trace or None); "float16": the float16
    output without lse."""
    cfg = CONFIGS[config_name]
    shape = SHAPES[shape_index]
    q, k, v = make_qkv(shape)
    ops, codes, scales = gpu_operands(q, k, v, cfg)
    kwargs = dict(config=cfg, scale=default_scale(shape[5]), is_causal=shape[-1], **launch_for(launch_name, cfg))
    if test == "float16":
        return hopper_forward(*codes, *scales, out_dtype=torch.float16, return_lse=False, **kwargs)
    result = hopper_forward(*codes, *scales, out_dtype=torch.float32, return_lse=True, trace=test == "trace",
                            **kwargs)
    torch.cuda.synchronize()
    return (ops, *result) if test == "trace" else (ops, *result, None)


def tl_output(config_name: str, shape_index: int) -> np.ndarray:
    """The tl kernel's float32 output on the case's operands (64-row tiles, or config.block_m for block-scaled Q)."""
    cfg = CONFIGS[config_name]
    shape = SHAPES[shape_index]
    _, codes, scales = gpu_operands(*make_qkv(shape), cfg)
    block_m = cfg.block_m if cfg.q_granularity == "block" else 64
    return attention_forward(*codes, *scales, config=cfg, scale=default_scale(shape[5]), is_causal=shape[-1],
                             out_dtype=torch.float32, launch=Launch(block_m, 4, 3, True)).cpu().numpy()


def warm_up(launch_name: str, case_indices) -> None:
    """Child process: run some cases of one launch variant once (compiles them into Triton's cache). The first
    variant's children also compile the tl kernel's cases, which every variant's output test compares with."""
    for index in case_indices:
        print(f"START {CASES[index]}", flush=True)
        run_case(*CASES[index], launch_name)
        if CASES[index][0] == "output" and launch_name == LAUNCHES[0]:
            tl_output(*CASES[index][1:])
        torch.cuda.synchronize()
        print(f"DONE {CASES[index]}", flush=True)


_CHILD = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
import test_hopper_gpu
test_hopper_gpu.warm_up({launch!r}, {indices!r})
"""

#: Cases per warm-up child: compilation dominates (~15 s a specialization), so children run in parallel.
CASES_PER_CHILD = 3


def _warm_up_in_child(task) -> str | None:
    """None if the child ran its cases, else the tail of what it printed (the last START names the culprit)."""
    launch_name, indices = task
    tests = Path(__file__).resolve().parent
    code = _CHILD.format(tests=str(tests), root=str(tests.parent), launch=launch_name, indices=list(indices))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode == 0:
        return None
    return f"exit status {result.returncode}\n{(result.stdout + result.stderr)[-4000:]}"


@pytest.fixture(scope="session")
def crashed_cases() -> dict:
    """(launch, case index) -> the output of the warm-up child that crashed on it or before it."""
    tasks = [(name, range(i, min(i + CASES_PER_CHILD, len(CASES))))
             for name in LAUNCHES for i in range(0, len(CASES), CASES_PER_CHILD)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        outcomes = list(pool.map(_warm_up_in_child, tasks))
    return {(name, index): text for (name, indices), text in zip(tasks, outcomes) if text is not None
            for index in indices}


def require_warm(crashed_cases, launch_name, case):
    key = (launch_name, CASES.index(case))
    if key in crashed_cases:
        pytest.fail(f"launch {launch_name!r}, case {case}: its warm-up child process failed (compile abort?):\n"
                    f"{crashed_cases[key]}")


def case_params(test):
    return [pytest.param(c, s, l, id=f"{l}-{c}-{shape_id(SHAPES[s])}") for (t, c, s) in CASES if t == test
            for l in LAUNCHES]


# --- exact: integer products; P codes within one step ---------------------------------------------------------


@pytest.mark.parametrize("config_name, shape_index, launch_name", case_params("trace"))
def test_integer_products_exact_and_p_codes_within_one_step(config_name, shape_index, launch_name, crashed_cases):
    require_warm(crashed_cases, launch_name, ("trace", config_name, shape_index))
    cfg = CONFIGS[config_name]
    shape = SHAPES[shape_index]
    ops, _, _, trace = run_case("trace", config_name, shape_index, launch_name)
    qk, p_codes, pv = (trace[name].cpu().numpy() for name in ("qk", "p_codes", "pv"))
    _, hq, nq, d = ops.q.shape
    hkv, nk = ops.k.shape[1], ops.k.shape[2]
    head_map = np.arange(hq) // (hq // hkv)
    k_all, v_all = ops.k[:, head_map].astype(np.float64), ops.v[:, head_map].astype(np.float64)
    visited = qk[..., :nk] != INT32_MIN
    assert visited[..., 0].all(), "key tile 0 must be visited by every query"
    if shape[-1]:  # causal: every key at or before the query is visited
        assert visited[..., np.arange(nk)[None, :] <= np.arange(nq)[:, None]].all()

    expected_qk = ops.q.astype(np.float64) @ np.swapaxes(k_all, -1, -2)
    np.testing.assert_array_equal(qk[..., :nk][visited], expected_qk[visited])

    weights = p_codes.astype(np.float64) + (128 if cfg.p_quant == "signed255" else 0)
    bn = cfg.block_n
    for j in range(pv.shape[2]):
        lo, hi = j * bn, min((j + 1) * bn, nk)
        rows = visited[:, :, :, lo]
        expected_pv = weights[..., lo:hi] @ v_all[:, :, lo:hi]
        np.testing.assert_array_equal(pv[:, :, j][rows], expected_pv[rows], err_msg=f"P8 @ V8, tile {j}")

    steps = sim.trace_operands(ops, config=cfg, is_causal=shape[-1], scale=default_scale(d)).steps
    sim_codes = np.concatenate([s.p_codes for s in steps], axis=-1)[..., :nk]
    diff = np.abs(p_codes[..., :nk][visited].astype(np.int64) - sim_codes[visited])
    fraction = float((diff > 0).mean())
    print(f"\n[P codes] {launch_name} {shape_id(shape)} {config_name}: {fraction:.3e} of {diff.size} codes differ "
          f"from sim by one step (max step {int(diff.max())})")
    assert diff.max() <= 1
    assert fraction < 1e-2


# --- bounded: the output, and the tl kernel ----------------------------------------------------------------------


@pytest.mark.parametrize("config_name, shape_index, launch_name", case_params("output"))
def test_output_error_within_sims_and_agrees_with_tl(config_name, shape_index, launch_name, crashed_cases):
    """Error vs float64 <= 1.1 x sim's (+ eps); lse error <= 1.5 x sim's; distance to the tl kernel << sim's error."""
    require_warm(crashed_cases, launch_name, ("output", config_name, shape_index))
    cfg = CONFIGS[config_name]
    shape = SHAPES[shape_index]
    q, k, v = make_qkv(shape)
    is_causal, gqa = shape[-1], shape[1] != shape[2]
    _, out, lse, _ = run_case("output", config_name, shape_index, launch_name)
    out, lse = out.cpu().numpy(), lse.cpu().numpy()
    sim_out, sim_lse = sim.attention(q, k, v, is_causal=is_causal, enable_gqa=gqa, config=cfg, return_lse=True)
    ref = sim.reference_attention(q, k, v, is_causal=is_causal, enable_gqa=gqa)
    err_kernel, err_sim = rel_l2(out, ref), rel_l2(sim_out, ref)

    tl_out = tl_output(config_name, shape_index)
    distance_tl = rel_l2(out, tl_out.astype(np.float64))
    identical = float((out == tl_out).mean())
    print(f"\n[output] {launch_name} {shape_id(shape)} {config_name}: rel L2 vs float64 kernel {err_kernel:.4e} "
          f"sim {err_sim:.4e}; vs tl kernel {distance_tl:.2e} ({identical:.1%} identical)")
    assert err_kernel <= 1.1 * err_sim + 1e-5
    assert sim.max_abs_error(out, ref) <= 1.5 * sim.max_abs_error(sim_out, ref) + 1e-4
    assert distance_tl <= 0.1 * err_sim + 1e-6
    lse_ref = reference_lse(q, k, is_causal=is_causal, enable_gqa=gqa)
    lse_err_kernel, lse_err_sim = np.abs(lse - lse_ref).max(), np.abs(sim_lse - lse_ref).max()
    print(f"[lse] max abs error vs float64: kernel {lse_err_kernel:.3e} sim {lse_err_sim:.3e}")
    assert lse_err_kernel <= 1.5 * lse_err_sim + 1e-4


@pytest.mark.parametrize("launch_name", LAUNCHES)
def test_float16_output_is_the_rounded_float32_output(launch_name, crashed_cases):
    """out_dtype float16 rounds the same float32 result (nearest even), on a shape with tails and GQA."""
    require_warm(crashed_cases, launch_name, ("float16", "paper", 0))
    require_warm(crashed_cases, launch_name, ("output", "paper", 0))
    out16 = run_case("float16", "paper", 0, launch_name)
    _, out32, _, _ = run_case("output", "paper", 0, launch_name)
    assert torch.equal(out16, out32.to(torch.float16))


def test_unsupported_layouts_are_named():
    """The dispatcher's predicate: what the Gluon kernel cannot read, with the reason."""
    cfg = CONFIGS["paper"]
    q = torch.zeros(1, 2, 128, 128, dtype=torch.int8, device="cuda")
    v_seq = q.transpose(2, 3).contiguous().transpose(2, 3)
    assert unsupported_reason(q, q, v_seq, config=cfg) is None
    assert "sequence-contiguous" in unsupported_reason(q, q, q, config=cfg)
    assert "head dim" in unsupported_reason(q[..., :96], q[..., :96], v_seq[..., :96], config=cfg)
    assert "half-INT8" in unsupported_reason(q, q, v_seq, config=sim.QuantConfig.half_int8())
    assert "contiguous" in unsupported_reason(q.transpose(1, 2).contiguous().transpose(1, 2), q, v_seq, config=cfg)
    with pytest.raises(ValueError, match="hopper_forward: V codes"):
        scales = [torch.ones(1, 1, 1, 1, device="cuda")] * 3
        hopper_forward(q, q, q, *scales, config=cfg, scale=0.1, is_causal=False, out_dtype=torch.float16,
                       return_lse=False)


def hopper_kwargs(launch) -> dict:
    """A dispatch.Launch of the Gluon kernel as hopper_forward's keyword arguments (ALL_LAUNCHES' format)."""
    options = dict(block_m=launch.block_m, num_stages=launch.num_stages, warp_specialize=launch.warp_specialize,
                   cooperative=launch.cooperative, overlap=launch.overlap, int_cvt=launch.int_cvt)
    return {name: value for name, value in options.items() if value or name in ("block_m", "num_stages")}


def test_the_api_reaches_the_gluon_kernel(crashed_cases):
    """``intfa.attention_int8`` runs dispatch.gluon_launch()'s Gluon launch for ``kernel="gluon"`` (and for the
    default ``kernel="auto"`` where dispatch.default_prefill_launch says so, else the tl kernel): its bytes are
    hopper_forward's with that launch, and it agrees with the tl kernel (``kernel="tl"``) as the output test asks."""
    cfg = CONFIGS["paper"]
    shape = SHAPES[0]
    is_causal = shape[-1]  # the warm-up compiled this case
    launch = gluon_launch(shape[5], is_causal)
    names = [name for name, options in ALL_LAUNCHES.items() if options == hopper_kwargs(launch)]
    assert names, f"dispatch.gluon_launch's launch {launch} is none of ALL_LAUNCHES: the tests would not cover it"
    if names[0] not in LAUNCHES:
        pytest.skip(f"the {names[0]!r} launch (dispatch.gluon_launch's for this case) is not selected")
    require_warm(crashed_cases, names[0], ("output", "paper", 0))
    _, codes, scales = gpu_operands(*make_qkv(shape), cfg)
    kwargs = dict(config=cfg, is_causal=is_causal, enable_gqa=shape[1] != shape[2], out_dtype=torch.float32)
    out_gluon = intfa.attention_int8(*codes, *scales, kernel="gluon", **kwargs)
    out_auto = intfa.attention_int8(*codes, *scales, **kwargs)
    out_tl = intfa.attention_int8(*codes, *scales, kernel="tl", **kwargs)
    direct = hopper_forward(*codes, *scales, config=cfg, scale=default_scale(shape[5]), is_causal=is_causal,
                            out_dtype=torch.float32, return_lse=False, **ALL_LAUNCHES[names[0]])
    assert torch.equal(out_gluon, direct)
    # kernel="auto" takes the Gluon kernel only from GLUON_MIN_KEYS keys on (this shape has fewer: the tl kernel).
    auto_launch = dispatch.default_prefill_launch("sm90", shape[5], is_causal, shape[3], shape[4], cfg, None)
    assert torch.equal(out_auto, direct if auto_launch.kernel == "gluon" else out_tl)
    q, k, v = make_qkv(shape)
    ref = sim.reference_attention(q, k, v, is_causal=is_causal, enable_gqa=shape[1] != shape[2])
    err_sim = rel_l2(sim.attention(q, k, v, is_causal=is_causal, enable_gqa=shape[1] != shape[2], config=cfg), ref)
    assert rel_l2(out_gluon.cpu().numpy(), out_tl.cpu().numpy().astype(np.float64)) <= 0.1 * err_sim + 1e-6
    with pytest.raises(ValueError, match="kernel: the Gluon kernel cannot run these operands: head dim"):
        intfa.attention_int8(*(c[..., :32] for c in codes[:2]), codes[2][..., :32], scales[0], scales[1],
                             scales[2], kernel="gluon", config=cfg, enable_gqa=True)
