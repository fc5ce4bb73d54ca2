"""The benchmark's CPU-side pieces: FLOPs, bytes, suites, providers, speed-ups, the table, the result files.

No timing here, except the one GPU test at the end (a tiny decode run through the measurement itself).
"""

import dataclasses
import itertools
import json
import math

import pandas as pd
import pytest
import torch

import intfa
from intfa import bench
from intfa.bench import (
    CSV_COLUMNS,
    DECODE_SECTIONS,
    PROVIDERS,
    Shape,
    add_speedups,
    attention_flops,
    float_bytes,
    format_table,
    get_provider,
    int8_bytes,
    sanitize_gpu_name,
    suite_shapes,
)
from intfa.runtime import cuda_available

#: Where the providers' own calls run: compiled on a GPU, else Triton's interpreter on CPU tensors (conftest).
DEVICE = "cuda" if cuda_available() else "cpu"


def test_flops_count_two_matrix_products():
    # S = Q K^T and O = P V: Nq * Nk * D multiply-adds each, two operations per multiply-add, per (batch, head).
    assert attention_flops(1, 1, 3, 5, 7, causal=False) == 2 * (2 * 3 * 5 * 7)
    assert attention_flops(4, 32, 1024, 1024, 64, causal=False) == 4 * 4 * 32 * 1024 * 1024 * 64
    assert attention_flops(4, 32, 1024, 1024, 64, causal=True) == 2 * 4 * 32 * 1024 * 1024 * 64
    assert Shape(2, 3, 10, 20, 64, False).flops == attention_flops(2, 3, 10, 20, 64, False)
    with pytest.raises(ValueError, match="seq_k"):
        attention_flops(1, 1, 1, 0, 64, causal=False)
    with pytest.raises(ValueError, match="batch"):
        attention_flops(True, 1, 1, 1, 64, causal=False)


def test_paper_suite_is_the_papers_figure():
    shapes = suite_shapes("paper")
    assert [s.seq_q for s in shapes] == [1024, 2048, 4096, 8192, 16384]
    assert all((s.batch, s.heads, s.head_dim, s.causal, s.seq_q == s.seq_k) == (4, 32, 64, False, True)
               for s in shapes)


def test_full_suite_covers_head_dims_masks_lengths_and_decode():
    shapes = suite_shapes("full")
    assert len(set(shapes)) == len(shapes)
    prefill = [s for s in shapes if s.seq_q == s.seq_k]
    decode = [s for s in shapes if s.decode]
    assert {(s.head_dim, s.causal) for s in prefill} == {(64, False), (64, True), (128, False), (128, True)}
    assert sorted({s.seq_q for s in prefill}) == [1024, 2048, 4096, 8192, 16384, 32768]
    assert len(prefill) == 4 * 6
    assert {s.seq_q for s in decode} == {1, 4, 16} and min(s.seq_k for s in decode) >= 8192
    assert not any(s.causal for s in decode)  # top-left causal with Nq < Nk is not a decoding step
    with pytest.raises(ValueError, match="suite"):
        suite_shapes("huge")


def test_decode_suite_is_issue_10s_grid():
    shapes = suite_shapes("decode")
    expected = {(b, 32, hkv, nk, d, nq) for b, hkv, nk, d, nq in itertools.product(
        (1, 8, 32), (32, 8), (4096, 16384, 32768, 65536, 131072), (64, 128), (1, 4, 16))}
    assert len(shapes) == len(set(shapes)) == len(expected)
    assert {(s.batch, s.heads, s.kv_heads, s.seq_k, s.head_dim, s.seq_q) for s in shapes} == expected
    assert all(s.decode and not s.causal for s in shapes)
    assert {s.gqa for s in shapes} == {True, False}
    # Caches too large for an 80 GB GPU are skipped by the memory check, the others measured.
    largest = Shape(32, 32, 16, 131072, 128, False)
    assert bench.bytes_needed(largest, 1) > 80e9
    assert bench.bytes_needed(Shape(32, 32, 16, 131072, 128, False, kv_heads=8), 1) < 40e9


def test_shape_kv_heads_default_and_checks():
    assert Shape(2, 8, 1, 64, 32, False).kv_heads == 8 and not Shape(2, 8, 1, 64, 32, False).gqa
    grouped = Shape(2, 8, 1, 64, 32, False, kv_heads=2)
    assert grouped.gqa and "Hkv2" in grouped.label()
    assert grouped.flops == Shape(2, 8, 1, 64, 32, False).flops  # the same arithmetic on fewer K/V heads
    with pytest.raises(ValueError, match="kv_heads"):
        Shape(2, 8, 1, 64, 32, False, kv_heads=3)
    with pytest.raises(ValueError, match="seq_k"):
        Shape(2, 8, 1, 0, 32, False)


def test_bytes_count_each_operand_once():
    shape = Shape(2, 4, 3, 10, 8, False, kv_heads=2)
    q_elements, kv_elements = 2 * 4 * 3 * 8, 2 * 2 * 10 * 8
    out_bytes = 2 * q_elements  # float16 output
    assert float_bytes(shape) == 2 * (q_elements + 2 * kv_elements) + out_bytes
    assert float_bytes(shape, element_bytes=1) == q_elements + 2 * kv_elements + out_bytes
    # Paper: int8 codes, float32 scales per query token, per key token, one for V per (batch, KV head).
    scales = 2 * 4 * 3 + 2 * 2 * 10 + 2 * 2
    assert int8_bytes(shape, intfa.QuantConfig.paper()) == q_elements + 2 * kv_elements + 4 * scales + out_bytes


@pytest.mark.parametrize("config", [intfa.QuantConfig.paper(), intfa.QuantConfig.recommended(block_n=16)],
                         ids=["paper", "recommended"])
def test_int8_bytes_are_the_bytes_of_quantize_operands(config):
    # The byte model against the operands the int8 providers actually hold.
    shape = Shape(1, 4, 2, 40, 16, False, kv_heads=2)
    q = torch.randn(shape.batch, shape.heads, shape.seq_q, shape.head_dim, dtype=torch.float16, device=DEVICE)
    k = torch.randn(shape.batch, shape.kv_heads, shape.seq_k, shape.head_dim, dtype=torch.float16, device=DEVICE)
    v = torch.randn_like(k)
    operands = intfa.quantize_operands(q, k, v, config)
    held = sum(x.numel() * x.element_size() for x in operands)
    assert int8_bytes(shape, config) == held + q.numel() * 2
    assert float_bytes(shape) == sum(x.numel() * x.element_size() for x in (q, k, v, q))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100-80gb-hbm3"),
        ("NVIDIA H200", "nvidia-h200"),
        ("  Weird/GPU (rev 2)!  ", "weird-gpu-rev-2"),
        ("", "unknown-gpu"),
    ],
)
def test_gpu_name_sanitizer(name, expected):
    assert sanitize_gpu_name(name) == expected


def _row(provider, ms, *, seq=4096, head_dim=64, causal=False, error=None, shape=None):
    shape = shape or Shape(4, 32, seq, seq, head_dim, causal)
    row = {"gpu": "fake-gpu", "provider": provider, **dataclasses.asdict(shape)}
    if error:
        row["error"] = error
    else:
        row.update(ms=ms, ms_p20=ms * 0.99, ms_p80=ms * 1.01, tflops=shape.flops / (ms * 1e-3) / 1e12,
                   rel_l2_vs_sdpa=1e-3)
    return row


def _fake_rows():
    """Made-up timings for testing the plumbing only (never written under results/)."""
    return add_speedups([
        _row("sdpa-flash", 2.0), _row("sdpa-cudnn", 1.0), _row("int8-full", 0.5),
        _row("triton-fp8", None, error="RuntimeError: boom"),
        _row("sdpa-flash", 8.0, seq=8192), _row("sdpa-cudnn", None, seq=8192, error="skipped: out of memory"),
        _row("int8-full", 4.0, seq=8192),
    ])


def test_speedups_divide_the_sdpa_time_of_the_same_shape():
    rows = {(r["provider"], r["seq_q"]): r for r in _fake_rows()}
    assert rows["int8-full", 4096]["speedup_vs_cudnn"] == pytest.approx(2.0)
    assert rows["int8-full", 4096]["speedup_vs_flash"] == pytest.approx(4.0)
    assert rows["sdpa-cudnn", 4096]["speedup_vs_cudnn"] == pytest.approx(1.0)
    assert math.isnan(rows["triton-fp8", 4096]["speedup_vs_cudnn"])  # failed provider
    assert math.isnan(rows["int8-full", 8192]["speedup_vs_cudnn"])  # the reference failed on this shape
    assert rows["int8-full", 8192]["speedup_vs_flash"] == pytest.approx(2.0)


def test_best_sdpa_is_the_fastest_backend_that_ran_the_shape():
    decode = Shape(8, 32, 1, 32768, 128, False, kv_heads=8)
    rows = {r["provider"]: r for r in add_speedups([
        _row("sdpa-flash", 2.0, shape=decode), _row("sdpa-efficient", 1.5, shape=decode),
        _row("sdpa-cudnn", None, shape=decode, error="RuntimeError: No available kernel"),
        _row("sdpa-math", None, shape=decode, error="skipped: scratch"), _row("int8-full", 0.5, shape=decode),
        _row("sdpa-flash", 1.0, seq=4096),  # another shape: not compared
    ])}
    assert {r["best_sdpa"] for r in rows.values() if r["seq_k"] == 32768} == {"sdpa-efficient"}
    assert rows["int8-full"]["speedup_vs_best_sdpa"] == pytest.approx(3.0)
    assert rows["sdpa-efficient"]["speedup_vs_best_sdpa"] == pytest.approx(1.0)
    assert math.isnan(rows["sdpa-cudnn"]["speedup_vs_best_sdpa"])
    assert rows["sdpa-flash"]["best_sdpa"] == "sdpa-flash"  # the prefill row: its own shape's fastest


def test_table_shows_rates_ratios_and_failures():
    table = format_table(_fake_rows(), ["sdpa-flash", "sdpa-cudnn", "triton-fp8", "int8-full"])
    lines = table.splitlines()
    assert lines[0].startswith("TOP/s")
    assert any(line.startswith("speed-up over sdpa-cudnn") for line in lines)
    assert any(line.startswith("speed-up over sdpa-flash") for line in lines)
    expected_tflops = Shape(4, 32, 4096, 4096, 64, False).flops / 0.5e-3 / 1e12
    first = next(line for line in lines if line.split()[:3] == ["4", "32", "4096"])
    assert first.split()[-4:] == [f"{expected_tflops / 4:.1f}", f"{expected_tflops / 2:.1f}", "err",
                                  f"{expected_tflops:.1f}"]
    ratios = [line.split() for line in lines if line.split()[:3] == ["4", "32", "8192"]]
    assert ratios[0][-3] == "skip"  # cudnn's TOP/s cell on the shape where it ran out of memory
    assert ratios[1][-1] == "-"  # int8-full over cudnn: nothing to divide by
    assert ratios[2][-1] == "2.00x"  # int8-full over flash
    # Columns line up: every line of a section has the same width.
    section = lines[: lines.index("") if "" in lines else len(lines)]
    assert len({len(line) for line in section[1:]}) == 1


def test_decode_table_shows_grouped_heads_bandwidth_and_best_sdpa():
    decode = Shape(8, 32, 1, 32768, 128, False, kv_heads=8)
    rows = [_row("sdpa-flash", 2.0, shape=decode), _row("int8-full", 0.5, shape=decode)]
    for row in rows:
        row.update(gbytes=1.0, gbytes_per_s=1.0 / (row["ms"] * 1e-3), copy_gbytes_per_s=5000.0)
        row["fraction_of_copy"] = row["gbytes_per_s"] / row["copy_gbytes_per_s"]
    lines = format_table(add_speedups(rows), ["sdpa-flash", "int8-full"], DECODE_SECTIONS).splitlines()
    assert lines[0] == "ms (median)" and lines[1].split()[:4] == ["B", "H", "Hkv", "Nq"]
    cells = [line.split() for line in lines if line.split()[:3] == ["8", "32", "8"]]
    assert [c[-2:] for c in cells] == [["2.000", "0.500"], ["500", "2000"], ["10%", "40%"], ["1.00x", "4.00x"]]


def test_results_files_round_trip(tmp_path):
    rows = _fake_rows()
    quantize_rows = [{"gpu": "fake-gpu", "granularity": "token", "batch": 4, "heads": 32, "seq": 8192, "head_dim": 128,
                      "ms": 1.0, "gbytes": 0.4, "gbytes_per_s": 400.0, "copy_gbytes_per_s": 500.0,
                      "fraction_of_copy": 0.8}]
    meta = {"gpu": "Fake GPU", "torch": torch.__version__, "command": "python -m intfa.bench --suite paper"}
    paths = bench.write_results(rows, quantize_rows, meta, tmp_path / "fake-gpu", "paper")
    assert paths["csv"] == tmp_path / "fake-gpu" / "bench-paper.csv"
    frame = pd.read_csv(paths["csv"])
    assert tuple(frame.columns) == CSV_COLUMNS
    assert len(frame) == len(rows)
    assert frame.loc[frame.provider == "triton-fp8", "error"].item() == "RuntimeError: boom"
    assert frame.loc[(frame.provider == "int8-full") & (frame.seq_q == 4096), "speedup_vs_cudnn"].item() == 2.0
    assert json.loads(paths["json"].read_text()) == meta
    assert pd.read_csv(paths["quantize_csv"]).fraction_of_copy.item() == 0.8


def test_plot_writes_prefill_and_decode_figures(tmp_path):
    rows = _fake_rows()
    decode = _row("sdpa-flash", 0.1, seq=8192)
    decode["seq_q"] = 16
    written = bench.plot_results(rows + add_speedups([decode]), tmp_path, "full", "Fake GPU")
    assert [p.name for p in written] == ["bench-full.png", "bench-full-decode.png"]
    assert all(p.stat().st_size > 1000 for p in written)


def test_decode_suite_plots_latency_and_bandwidth_in_one_figure(tmp_path):
    rows = []
    for shape in [s for s in suite_shapes("decode") if s.batch == 1 and s.seq_k <= 16384]:
        for provider, ms in (("sdpa-flash", 0.2), ("int8-full", 0.1)):
            row = _row(provider, ms, shape=shape)
            row.update(gbytes_per_s=float(shape.seq_k) / ms, copy_gbytes_per_s=3000.0)
            rows.append(row)
    written = bench.plot_results(add_speedups(rows), tmp_path, "decode", "Fake GPU")
    assert [p.name for p in written] == ["bench-decode.png"]
    assert written[0].stat().st_size > 1000


def test_replot_reads_a_csv_from_before_the_decode_suite(tmp_path):
    """A CSV with the first 16 columns only (as written before the decode suite): read_rows derives GB/s from
    the providers' byte counts and the copy of the same run (quantize-<suite>.csv), replot draws both figures."""
    decode = Shape(4, 32, 1, 8192, 64, False)
    rows = _fake_rows() + [_row("sdpa-flash", 0.1, shape=decode), _row("int8-full", 0.4, shape=decode)]
    pd.DataFrame(rows).reindex(columns=list(CSV_COLUMNS[:16])).to_csv(tmp_path / "bench-full.csv", index=False)
    pd.DataFrame([{"gpu": "fake-gpu", "granularity": "token", "copy_gbytes_per_s": 3000.0}]).to_csv(
        tmp_path / "quantize-full.csv", index=False)
    read = {(r["provider"], r["seq_q"], r["seq_k"]): r for r in bench.read_rows(tmp_path / "bench-full.csv")}
    row = read["int8-full", 1, 8192]
    assert row["gbytes"] == pytest.approx(get_provider("int8-full").bytes_moved(decode) / 1e9)
    assert row["gbytes_per_s"] == pytest.approx(row["gbytes"] / 0.4e-3)
    assert row["fraction_of_copy"] == pytest.approx(row["gbytes_per_s"] / 3000.0)
    assert read["triton-fp8", 4096, 4096]["error"] == "RuntimeError: boom" and read["sdpa-flash", 1, 8192]["error"] is None
    written = bench.replot(tmp_path / "bench-full.csv", tmp_path / "out")
    assert [p.name for p in written] == ["bench-full.png", "bench-full-decode.png"]
    with pytest.raises(ValueError, match="bench-<suite>.csv"):
        bench.replot(tmp_path / "quantize-full.csv")


def test_percentile_interpolates():
    assert bench.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert bench.percentile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    assert bench.percentile([5.0], 0.8) == 5.0


def test_input_sets_exceed_l2():
    l2 = 50 * 2**20
    assert bench.n_input_sets(10 * 2**20, l2) == 8  # capped
    assert bench.n_input_sets(50 * 2**20, l2) == 3
    assert bench.n_input_sets(2**30, l2) == 1


def test_provider_names_are_the_public_ones():
    # The issue's seven names, in order (public contract), then the recommended configuration's two, then the
    # SDPA backends and the paged cache the decode suite adds, then the tl kernel's two where the default is Gluon.
    assert PROVIDERS[:7] == ("sdpa-flash", "sdpa-cudnn", "triton-fp16", "triton-fp8", "int8-half", "int8-full",
                             "int8-full-e2e")
    assert PROVIDERS[7:9] == ("int8-rec", "int8-rec-e2e")
    assert PROVIDERS[9:12] == ("sdpa-efficient", "sdpa-math", "int8-paged")
    assert PROVIDERS[12:] == ("int8-full-tl", "int8-rec-tl")  # kernel="tl" beside the API's default
    assert bench.parse_providers(["sdpa-cudnn,int8-full", "int8-full"]) == ["sdpa-cudnn", "int8-full"]
    with pytest.raises(SystemExit):
        bench.main(["--providers", "int9"])
    with pytest.raises(ValueError, match="provider"):
        get_provider("int9")


def test_each_suite_runs_its_providers():
    assert bench.default_providers("paper") == list(PROVIDERS[:9])
    assert bench.default_providers("full") == [*PROVIDERS[:9], "int8-full-tl", "int8-rec-tl"]
    assert sorted(bench.default_providers("decode")) == sorted(
        ["sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "int8-full", "int8-paged"])
    assert bench.sdpa_providers() == ["sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math"]
    with pytest.raises(ValueError, match="already registered"):
        bench.register("sdpa-flash", bytes_moved=float_bytes, suites=())(lambda q, k, v, shape: None)


def test_providers_skip_what_they_cannot_run():
    grouped = Shape(1, 32, 1, 4096, 64, False, kv_heads=8)
    assert "grouped-query" in get_provider("triton-fp16").skip_reason(grouped)
    assert get_provider("sdpa-flash").skip_reason(grouped) is None
    assert get_provider("int8-full").skip_reason(grouped) is None
    math_backend = get_provider("sdpa-math")
    assert math_backend.skip_reason(grouped) is None  # small: run
    assert "scratch" in math_backend.skip_reason(Shape(32, 32, 16, 131072, 128, False, kv_heads=8))


def test_int8_cache_provider_computes_grouped_attention():
    # The timed callable of int8-full: attention on the pre-quantized cache.
    shape = Shape(1, 4, 2, 96, 32, False, kv_heads=2)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(size, generator=generator).half().to(DEVICE)
               for size in ((1, 4, 2, 32), (1, 2, 96, 32), (1, 2, 96, 32)))
    provider = get_provider("int8-full")
    with provider.context():
        out = provider.prepare(q, k, v, shape)()
    reference = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), enable_gqa=True)
    assert out.shape == reference.shape and out.dtype == torch.float16
    assert torch.linalg.vector_norm(out.float() - reference) / torch.linalg.vector_norm(reference) < 0.05


@pytest.mark.parametrize("suite", bench.SUITES)
def test_list_runs_without_a_gpu(capsys, suite):
    assert bench.main(["--suite", suite, "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(suite_shapes(suite))


def test_seq_k_and_batch_select_a_subset_of_the_suite(capsys):
    assert bench.main(["--suite", "decode", "--seq-k", "32768", "--batch", "1", "8", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [s for s in suite_shapes("decode") if s.seq_k == 32768 and s.batch in (1, 8)]
    assert len(lines) == len(expected) == 24  # 2 batches x 2 kv-head counts x 2 head dims x 3 query counts
    assert all("Nk32768" in line for line in lines)
    with pytest.raises(SystemExit):
        bench.main(["--suite", "decode", "--seq-k", "3", "--list"])


def test_seq_q_and_head_dim_narrow_the_subset_further(capsys):
    args = ["--suite", "decode", "--seq-k", "16384", "131072", "--seq-q", "1", "16", "--head-dim", "128", "--list"]
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [s for s in suite_shapes("decode")
                if s.seq_k in (16384, 131072) and s.seq_q in (1, 16) and s.head_dim == 128]
    assert len(lines) == len(expected) == 24  # 2 cache lengths x 3 batches x 2 kv-head counts x 2 query counts
    assert all(" D128 " in line and ("Nq1 " in line or "Nq16 " in line) for line in lines)
    with pytest.raises(SystemExit):
        bench.main(["--suite", "decode", "--head-dim", "7", "--list"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when there is no GPU")
def test_without_cuda_exits_nonzero_with_a_message(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert bench.main(["--suite", "paper"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.gpu
def test_decode_measurement_fills_every_column(tmp_path):
    # One small decode shape through the real measurement: every default decode provider, timings, GB/s.
    from tqdm.auto import tqdm

    shape = Shape(1, 32, 1, 4096, 128, False, kv_heads=8)
    copy = bench.measure_copy(warmup_ms=5, rep_ms=20)
    providers = bench.default_providers("decode")
    with tqdm(total=len(providers), disable=True) as progress:
        rows = bench.measure_attention([shape], providers, gpu="gpu", warmup_ms=5, rep_ms=20, progress=progress,
                                       copy_gbytes_per_s=copy)
    by_provider = {row["provider"]: row for row in rows}
    assert sorted(by_provider) == sorted(providers)
    int8 = by_provider["int8-full"]
    assert not int8.get("error") and int8["rel_l2_vs_sdpa"] < 0.05
    assert int8["gbytes"] == int8_bytes(shape, intfa.QuantConfig.paper()) / 1e9
    assert int8["fraction_of_copy"] == pytest.approx(int8["gbytes_per_s"] / copy)
    assert int8["best_sdpa"] in bench.sdpa_providers() and int8["speedup_vs_best_sdpa"] > 0
    assert int8["timing"] == "gpu" and int8["host_ms"] > 0 and int8["ms_p20"] <= int8["ms"] <= int8["ms_p80"]
    paths = bench.write_results(rows, [], {"suite": "decode"}, tmp_path, "decode")
    assert tuple(pd.read_csv(paths["csv"]).columns) == CSV_COLUMNS


@pytest.mark.gpu
def test_gpu_timing_hides_the_host_and_eager_timing_counts_it():
    # A call whose host part (a 2 ms Python sleep) dwarfs its GPU part (a tiny copy): "gpu" timing must report the
    # copy's microseconds, "eager" (triton.testing.do_bench's method) the host's milliseconds.
    import time

    x = torch.ones(1024, device="cuda")
    y = torch.empty_like(x)

    def slow_host_call():
        time.sleep(0.002)
        y.copy_(x)

    gpu = bench.time_calls([slow_host_call], 5, 20, "gpu")
    eager = bench.time_calls([slow_host_call], 5, 20, "eager")
    assert gpu["host_ms"] >= 2 and eager["host_ms"] >= 2
    assert gpu["ms"] < 0.5, gpu
    assert eager["ms"] > 1.5, eager
    with pytest.raises(ValueError, match="timing"):
        bench.time_calls([slow_host_call], 5, 20, "wall")
    read = bench.time_calls([slow_host_call], 5, 20, "gpu", "read")
    assert read["ms"] < 0.5, read


def test_timing_and_flush_are_checked_before_any_gpu_work():
    # Both checks run before time_calls touches CUDA, so a bad value names itself on any machine.
    with pytest.raises(ValueError, match="timing: expected one of"):
        bench.time_calls([lambda: None], 1, 1, "wall")
    with pytest.raises(ValueError, match="flush: expected one of"):
        bench.time_calls([lambda: None], 1, 1, "gpu", "evict")
    assert bench.FLUSHES == ("zero", "read")
    assert bench.build_parser().parse_args(["--flush", "read"]).flush == "read"
