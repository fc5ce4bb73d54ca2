"""The benchmark's CPU-side pieces: FLOPs, suites, speed-ups, the table, the result files. No timing here."""

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch

from intfa import bench
from intfa.bench import (
    CSV_COLUMNS,
    PROVIDERS,
    Shape,
    add_speedups,
    attention_flops,
    format_table,
    sanitize_gpu_name,
    suite_shapes,
)


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


def _row(provider, ms, *, seq=4096, head_dim=64, causal=False, error=None):
    shape = Shape(4, 32, seq, seq, head_dim, causal)
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


def test_percentile_interpolates():
    assert bench.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert bench.percentile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    assert bench.percentile([5.0], 0.8) == 5.0


def test_input_sets_exceed_l2():
    l2 = 50 * 2**20
    assert bench._n_input_sets(10 * 2**20, l2) == 8  # capped
    assert bench._n_input_sets(50 * 2**20, l2) == 3
    assert bench._n_input_sets(2**30, l2) == 1


def test_provider_names_are_the_public_ones():
    # The seven names, in order (public contract), then the recommended configuration's two.
    assert PROVIDERS[:7] == ("sdpa-flash", "sdpa-cudnn", "triton-fp16", "triton-fp8", "int8-half", "int8-full",
                             "int8-full-e2e")
    assert PROVIDERS[7:] == ("int8-rec", "int8-rec-e2e")
    assert bench._parse_providers(["sdpa-cudnn,int8-full", "int8-full"]) == ["sdpa-cudnn", "int8-full"]
    with pytest.raises(SystemExit):
        bench.main(["--providers", "int9"])


def test_list_runs_without_a_gpu(capsys):
    assert bench.main(["--suite", "paper", "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(suite_shapes("paper"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when there is no GPU")
def test_without_cuda_exits_nonzero_with_a_message(capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert bench.main(["--suite", "paper"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
