"""Padding-free packing: bins, collation, padding accounting, and that packing changes no loss."""

from __future__ import annotations

import random

import pytest
import torch

from agentr.data.packing import BatchDataset, collate_packed, collate_padded, pack_bins
from agentr.data.tokenize import IGNORE_INDEX, TokenizedExample, tokenize_messages


def test_pack_bins_keeps_every_item_once_within_budget():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(200)]
    bins = pack_bins(lengths, 256)
    flat = sorted(i for b in bins for i in b)
    assert flat == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 256 for b in bins)
    # First-fit decreasing is within 11/9 OPT + 1 of the lower bound.
    lower = -(-sum(lengths) // 256)
    assert len(bins) <= 11 / 9 * lower + 1


def test_pack_bins_exact_fill():
    # 6 and 4 fill one bin, 5 + 3 + 2 the other.
    assert sorted(map(sorted, pack_bins([3, 5, 2, 6, 4], 10))) == [[0, 1, 2], [3, 4]]


def example(ids, trained_from):
    return TokenizedExample(list(ids), [IGNORE_INDEX] * trained_from + list(ids[trained_from:]))


def test_collate_packed_restarts_positions_per_conversation():
    batch = collate_packed([example([5, 6, 7], 1), example([8, 9], 1)])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    assert batch["doc_lens"] == [3, 2]


def test_collate_padded_right_pads_with_untrained_tokens():
    batch = collate_padded([example([5, 6, 7], 1), example([8, 9], 1)], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 9, IGNORE_INDEX]]
    assert batch["num_real_tokens"] == 5


def test_padding_fraction_packed_vs_padded():
    examples = [example(range(n), 1) for n in (10, 30, 20, 40)]
    packed = BatchDataset(examples, packing=True, tokens_per_batch=60)
    assert packed.stats().padding_fraction == 0.0
    assert sum(batch["input_ids"].shape[1] for batch in packed) == 100
    padded = BatchDataset(examples, packing=False, batch_size=4)
    stats = padded.stats()
    assert (stats.real_tokens, stats.computed_tokens) == (100, 160)
    assert stats.padding_fraction == pytest.approx(0.375)
    assert stats.trained_tokens == 96
    assert "padding 37.5%" in str(stats)


def conversations(tokenizer, count, seed=0):
    rng = random.Random(seed)
    out = []
    for k in range(count):
        messages = [{"role": "system", "content": "You are an agent."},
                    {"role": "user", "content": f"Task {k}: craft item {rng.randint(0, 99)}."}]
        for turn in range(rng.randint(1, 4)):
            messages.append({"role": "assistant", "train": turn > 0 or k % 2 == 0,
                             "content": f"Thought: step {turn}\nAction: get {rng.randint(1, 9)} thing {k}"})
            messages.append({"role": "user", "content": "Got it. " * rng.randint(1, 6)})
        ids, labels = tokenize_messages(tokenizer, messages)
        if any(label != IGNORE_INDEX for label in labels):
            out.append(TokenizedExample(ids, labels))
    return out


@pytest.fixture(scope="module")
def fp32_module(tiny_model_dir):
    from agentr.training.module import AgentRModule

    torch.manual_seed(0)
    module = AgentRModule(tiny_model_dir, dtype="float32", lora_dropout=0.0)
    module.configure_model()
    # Non-zero LoRA B so that the adapter takes part in the forward and gets gradients.
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return module


@pytest.mark.parametrize("attn", ["auto", "sdpa"])
def test_packing_changes_no_loss_or_gradient(tiny_model_dir, fp32_module, attn):
    """Same tokens, same loss: one packed row == padded rows == each conversation alone."""
    module = fp32_module
    if attn == "sdpa":  # transformers' own block-diagonal mask from restarting position_ids
        module.hparams.attn_implementation = "sdpa"
        module.causal_lm.set_attn_implementation("sdpa")
    try:
        check_packing_invariance(module, tiny_model_dir)
    finally:
        module.hparams.attn_implementation = "auto"
        module.causal_lm.set_attn_implementation("agentr_varlen")


def check_packing_invariance(module, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = conversations(tokenizer, 6)

    def nll_and_grads(batches):
        module.zero_grad()
        total, count = 0.0, 0
        for batch in batches:
            _, targets, nll = module.forward_trained(batch)
            nll.backward()
            total, count = total + nll.item(), count + targets.numel()
        grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.requires_grad}
        return total, count, grads

    packed = nll_and_grads([collate_packed(examples)])
    padded = nll_and_grads([collate_padded(examples, tokenizer.pad_token_id)])
    alone = nll_and_grads([collate_packed([e]) for e in examples])
    assert packed[1] == padded[1] == alone[1] == sum(e.num_trained for e in examples)
    for other in (padded, alone):
        assert packed[0] == pytest.approx(other[0], rel=1e-5)
        for name, grad in packed[2].items():
            torch.testing.assert_close(grad, other[2][name], rtol=1e-4, atol=1e-6)
    # A wrong mask (attention across conversations) would change the loss: check the test can fail.
    leaky = collate_packed(examples)
    leaky["position_ids"] = torch.arange(leaky["input_ids"].shape[1])[None]
    leaky.pop("doc_lens")
    with torch.no_grad():
        _, _, nll = module.forward_trained(leaky)
    assert nll.item() != pytest.approx(packed[0], rel=1e-4)
