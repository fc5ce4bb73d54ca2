"""Real activations: the error per layer and head of all-MiniLM-L6-v2's Q, K, V (needs torch and transformers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from tqdm.auto import tqdm

import sim

from .figures import Study, fmt, plt
from .harness import get_size, reference, study_params
from .inputs import real_available


def real_layer_head_study(size="small", *, name="accuracy/real_error_by_layer_head", progress=True) -> Study:
    """Error per layer and head of MiniLM's captured Q, K, V for the paper's configuration and the
    per-channel-V / quantized-normalizer variant, with each head's input statistics."""
    size = get_size(size)
    ok, reason = real_available()
    if not ok:
        raise RuntimeError(reason)
    from .capture import capture_minilm

    configs = {"paper": sim.QuantConfig.paper(),
               "paper, V per channel, l quantized": sim.QuantConfig.paper().replace(v_granularity="channel",
                                                                                     normalizer="quantized")}
    rows = []
    for layer in tqdm(capture_minilm(max_tokens=size.real_tokens), desc="real layers", disable=not progress,
                      leave=False):
        ref = reference(layer.q, layer.k, layer.v)
        s = np.einsum("bhnd,bhmd->bhnm", layer.q.astype(np.float64), layer.k.astype(np.float64)) / np.sqrt(
            layer.q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        for name_cfg, config in configs.items():
            out = sim.attention(layer.q, layer.k, layer.v, config=config)
            for h in range(layer.q.shape[1]):
                k_h, v_h = layer.k[0, h], layer.v[0, h]
                rows.append({"layer": layer.layer, "head": h, "config": name_cfg, "seq_len": layer.q.shape[2],
                             "k_channel_outlier_ratio": float(np.abs(k_h).max(0).max() / np.abs(k_h).max(0).mean()),
                             "v_channel_outlier_ratio": float(np.abs(v_h).max(0).max() / np.abs(v_h).max(0).mean()),
                             "mean_max_softmax": float(p[0, h].max(-1).mean()),
                             **sim.all_metrics(out[:, h:h + 1], ref[:, h:h + 1])})
    frame = pd.DataFrame(rows)
    paper = frame[frame["config"] == "paper"]
    worst = paper.loc[paper["rel_l2"].idxmax()]
    corr = {c: float(np.corrcoef(paper[c], paper["rel_l2"])[0, 1])
            for c in ("k_channel_outlier_ratio", "v_channel_outlier_ratio", "mean_max_softmax")}
    by_cfg = frame.groupby("config")["rel_l2"].median()
    findings = [(f"paper config: median rel. L2 over heads {fmt(paper['rel_l2'].median())}, range "
                 f"{fmt(paper['rel_l2'].min())}-{fmt(paper['rel_l2'].max())}; worst layer {int(worst['layer'])} head "
                 f"{int(worst['head'])}"),
                "correlation of the per-head error with: " + ", ".join(f"{c} {v:+.2f}" for c, v in corr.items()),
                (f"V per channel + quantized l: median {fmt(by_cfg['paper, V per channel, l quantized'])} "
                 f"({fmt(by_cfg['paper, V per channel, l quantized'] / by_cfg['paper'])}x the paper's)")]
    fig, axes = plt.subplots(1, len(configs), figsize=(6 * len(configs), 3.2), squeeze=False)
    vmax = frame["rel_l2"].max()
    for ax, name_cfg in zip(axes[0], configs):
        table = frame[frame["config"] == name_cfg].pivot(index="layer", columns="head", values="rel_l2")
        sns.heatmap(table, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=vmax, ax=ax, cbar=False,
                    annot_kws={"size": 7})
        ax.set_title(name_cfg)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
    fig.suptitle(f"MiniLM on real text: INT8 error varies {fmt(paper['rel_l2'].max() / paper['rel_l2'].min())}x "
                 f"across heads (rel. L2 vs float64)", y=1.04)
    caption = (f"Cells: relative L2 error of one head's output vs float64 on {int(paper['seq_len'].iloc[0])} tokens "
               "of English text; left the paper's configuration, right with V per channel and the normalizer fixed.")
    return Study(name, frame, fig, caption, findings, study_params(size))
