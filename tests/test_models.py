import pytest

from agentr.engines.models import resolve_model


def test_resolve_offline_smollm2_has_weights_and_chat_template(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.num_hidden_layers == 30
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert "<|im_start|>user\nhi<|im_end|>" in text


def test_resolve_is_idempotent(smollm2_dir):
    assert resolve_model(smollm2_dir) == smollm2_dir


@pytest.mark.parametrize("bad", ["/no/such/dir", "./missing.gguf", "not-an-id"])
def test_resolve_rejects_missing_models(bad):
    with pytest.raises(FileNotFoundError):
        resolve_model(bad)


def test_resolve_rejects_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model(tmp_path)
