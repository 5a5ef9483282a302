import json

import pytest
import torch

from lab.errors import LabError
from lab.models import check_model_spec, describe, load_model


@pytest.mark.parametrize("preset,mtype", [("tiny-random", "llama"), ("tiny-random-qwen2", "qwen2"),
                                          ("tiny-random-gpt2", "gpt2")])
def test_tiny_presets_load_with_smollm2_tokenizer(preset, mtype):
    lm = load_model(preset)
    assert lm.model.config.model_type == mtype
    assert len(lm.tokenizer) == lm.model.config.vocab_size == 49152
    assert describe(lm.model)["params"] < 5_000_000
    ids = lm.tokenizer("2 + 3 = 5", return_tensors="pt")["input_ids"]
    assert lm.model(ids).logits.shape == (1, ids.shape[1], 49152)


def test_tiny_preset_is_deterministic():
    a, b = load_model("tiny-random", seed=0).model, load_model("tiny-random", seed=0).model
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_smollm2_preset_is_cached_safetensors():
    lm = load_model("smollm2-135m")
    assert describe(lm.model)["params"] == 134_515_008
    ids = lm.tokenizer("The answer is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_id = lm.model(ids).logits[0, -1].argmax().item()
    assert lm.tokenizer.decode([next_id]).strip() != ""


def test_saved_folder_loads_and_matches(tmp_path):
    lm = load_model("tiny-random")
    lm.model.save_pretrained(tmp_path, safe_serialization=True)
    lm.tokenizer.save_pretrained(tmp_path)
    assert "llama" in check_model_spec(str(tmp_path))
    again = load_model(str(tmp_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(lm.model(ids).logits, again.model(ids).logits, atol=1e-6)


def test_bad_model_specs_give_clear_errors(tmp_path):
    with pytest.raises(LabError, match="does not exist"):
        check_model_spec(str(tmp_path / "nope"))
    with pytest.raises(LabError, match="no config.json"):
        check_model_spec(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(LabError, match="no weights"):
        check_model_spec(str(tmp_path))
    with pytest.raises(LabError, match="Unknown model"):
        check_model_spec("no-such-org/no-such-model-xyz")
    with pytest.raises(LabError, match="No model"):
        check_model_spec("  ")


def test_non_causal_model_is_rejected(tmp_path):
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, vocab_size=100)).save_pretrained(tmp_path)
    with pytest.raises(LabError, match="not a causal language model"):
        check_model_spec(str(tmp_path))


def test_run_checkpoint_spec_without_checkpoint(tmp_path):
    with pytest.raises(LabError, match="no saved checkpoint"):
        check_model_spec("run:20990101-000000-abcd", data_dir=tmp_path)
