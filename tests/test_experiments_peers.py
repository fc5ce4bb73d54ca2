"""A fast check of the peers study (intfa.experiments.peers): NumPy only, a tiny size, synthetic families."""

from __future__ import annotations

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("seaborn")
from intfa import experiments as ex
from intfa.experiments import peers

TINY = ex.Size("tiny", seeds=(0,), heads=1, head_dim=32, seq_len=96, block_sizes=(16, 64), grid_blocks=(16, 32),
               grid_seeds=(0,), seq_lens=(64, 128), causal_seq_lens=(160,), tail_seq_lens=(100,),
               bias_seq_lens=(128,), bias_heads=1, real_tokens=32)


def test_peer_configs_are_ours_then_the_peers():
    configs = ex.peer_configs()
    assert list(configs)[:3] == list(peers.OURS)
    assert all(not configs[c].simulated_only for c in peers.OURS)  # ours: what the kernels run
    assert all(configs[c].simulated_only for c in configs if c not in peers.OURS)


def test_peers_study_at_tiny_size(tmp_path):
    study = ex.peers_study(TINY, ("normal", "outliers"), progress=False)
    assert study.name == "accuracy/peers_error"
    frame = study.frame
    assert set(frame["config"]) == set(ex.peer_configs()) and set(frame["metric"]) == set(peers.PEER_METRICS)
    assert set(frame["side"]) == {"ours", "peer"} and np.isfinite(frame["value"]).all()
    assert len(frame) == 2 * len(ex.peer_configs()) * len(peers.PEER_METRICS)  # 2 families x 1 seed
    assert any("best peer" in f for f in study.findings) and study.params["seq_len"] == 512
    files = study.save(tmp_path)
    assert {p.suffix for p in files} == {".png", ".csv", ".json"}
    assert json.loads((tmp_path / "accuracy" / "peers_error.json").read_text())["findings"] == study.findings


def test_peers_study_is_in_the_main_job():
    names = [thunk.__code__.co_names for thunk in ex.accuracy_studies("small", progress=False)]
    assert any("peers_study" in n for n in names)
