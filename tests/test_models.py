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


def test_a_merged_adapter_computes_what_the_adapter_does(tiny_engine_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentr.engines.models import merge_adapter
    from test_engines import _make_adapter

    adapter = _make_adapter(tiny_engine_model_dir, tmp_path / "adapter")
    merged_dir = merge_adapter(tiny_engine_model_dir, adapter, tmp_path / "merged")
    ids = torch.tensor([[1, 50, 300, 7000, 12, 99]])

    def logits(model):
        with torch.no_grad():
            return model(ids).logits.float()

    base = AutoModelForCausalLM.from_pretrained(tiny_engine_model_dir, dtype=torch.float32)
    base_logits = logits(base)
    with_adapter = logits(PeftModel.from_pretrained(base, adapter))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert merged.dtype == torch.bfloat16  # the base model's dtype
    gap = (with_adapter - base_logits).abs().max()
    assert (logits(merged.float()) - with_adapter).abs().max() < 0.05 * gap
    assert (merged_dir / "tokenizer_config.json").is_file()


def test_a_conversion_parses_its_gguf_file_once_and_leaves_gguf_as_it_was(tmp_path):
    import numpy as np

    gguf = pytest.importorskip("gguf")
    from agentr.engines.models import _gguf_parsed_once

    path = str(tmp_path / "tiny.gguf")
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is first  # tokenizer, config and weights share one parse
        llama = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(llama, 2) is gguf.get_tensor_name_map(llama, 2)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert isinstance(first, reader) and "token_embd.weight" in [t.name for t in first.tensors]
    assert gguf.GGUFReader(path) is not first
