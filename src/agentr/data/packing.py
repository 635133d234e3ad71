"""Batching without padding: pack whole conversations into one row per batch.

Packed mode (the default) concatenates tokenised conversations into a single row of at most
`tokens_per_batch` tokens. `position_ids` restart at 0 for each conversation, and the row
carries `doc_lens`, the conversation lengths, so that attention stays inside each conversation
(see `agentr.training.attention`; transformers also derives a block-diagonal mask or flash-attn
varlen boundaries from the restarting `position_ids`). No token is padding, and the loss over a
packed row equals the loss over the same conversations run one by one.

Padded mode (`packing=False`, the baseline) batches `batch_size` conversations and right-pads
them to the longest; with right padding and a causal mask no real token attends to padding, so
no attention mask is needed, but every padding token still costs a full forward and backward.

Bins are filled first-fit-decreasing, so little of each row's budget stays unused; the order of
the bins is shuffled by the DataLoader each epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, Sampler

from agentr.data.tokenize import IGNORE_INDEX, TokenizedExample


def pack_bins(lengths: Sequence[int], tokens_per_batch: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `tokens_per_batch` tokens (first-fit decreasing).

    A single item longer than the budget gets a bin of its own (callers drop such items first).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(tokens_per_batch - lengths[i])
    return bins


def fixed_size_batches(num: int, batch_size: int, seed: int) -> list[list[int]]:
    """`num` indices in a seeded random order, cut into batches of `batch_size` (the last may be short)."""
    order = list(range(num))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, num, batch_size)]


def collate_packed(examples: Sequence[TokenizedExample]) -> dict:
    """One row holding all `examples` back to back, with per-conversation `position_ids`."""
    input_ids = [t for e in examples for t in e.input_ids]
    labels = [t for e in examples for t in e.labels]
    position_ids = [p for e in examples for p in range(len(e))]
    return {
        "input_ids": torch.tensor([input_ids], dtype=torch.long),
        "labels": torch.tensor([labels], dtype=torch.long),
        "position_ids": torch.tensor([position_ids], dtype=torch.long),
        "doc_lens": [len(e) for e in examples],
    }


def collate_padded(examples: Sequence[TokenizedExample], pad_token_id: int) -> dict:
    """`examples` as rows right-padded to the longest; padding has label -100."""
    width = max(len(e) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        input_ids[row, : len(e)] = torch.tensor(e.input_ids)
        labels[row, : len(e)] = torch.tensor(e.labels)
    return {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": torch.arange(width).expand(len(examples), width).clone(),
        "num_real_tokens": sum(len(e) for e in examples),
    }


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation of `range(num)` each epoch, fixed by `(seed, epoch)` alone.

    Lightning calls `set_epoch` at every epoch start, so a run resumed from a checkpoint sees
    the same batch order as the uninterrupted run (a `RandomSampler` draws from global RNG state
    that checkpoints do not keep). Under DDP/FSDP Lightning wraps it in its distributed sampler.
    """

    def __init__(self, num: int, seed: int = 0, epoch: int = 0) -> None:
        self.num, self.seed, self.epoch = num, seed, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num


@dataclass
class BatchStats:
    """Token accounting of one epoch's batches."""

    batches: int
    real_tokens: int
    trained_tokens: int
    computed_tokens: int  # real + padding

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0

    def __str__(self) -> str:
        return (f"{self.batches} batches, {self.real_tokens} tokens ({self.trained_tokens} trained), "
                f"padding {100 * self.padding_fraction:.1f}%")


class BatchDataset(Dataset):
    """A map-style dataset whose items are whole batches (use with `DataLoader(batch_size=None)`).

    Args:
        examples: the tokenised conversations.
        packing: one packed row per batch (True) or right-padded rows (False).
        tokens_per_batch: packed mode: the most tokens in a row.
        batch_size: padded mode: conversations per batch.
        pad_token_id: padded mode: the id padding uses (it is never trained).
        seed: padded mode: the seed of the conversation order.
    """

    def __init__(
        self,
        examples: Sequence[TokenizedExample],
        *,
        packing: bool = True,
        tokens_per_batch: int = 8192,
        batch_size: int = 1,
        pad_token_id: int = 0,
        seed: int = 0,
    ) -> None:
        self.examples = list(examples)
        self.packing = packing
        self.pad_token_id = pad_token_id
        if packing:
            self.batches = pack_bins([len(e) for e in self.examples], tokens_per_batch)
        else:
            self.batches = fixed_size_batches(len(self.examples), batch_size, seed)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        examples = [self.examples[i] for i in self.batches[index]]
        if self.packing:
            return collate_packed(examples)
        return collate_padded(examples, self.pad_token_id)

    def stats(self) -> BatchStats:
        real = sum(len(e) for e in self.examples)
        trained = sum(e.num_trained for e in self.examples)
        if self.packing:
            computed = real
        else:
            computed = sum(len(b) * max(len(self.examples[i]) for i in b) for b in self.batches)
        return BatchStats(len(self.batches), real, trained, computed)
