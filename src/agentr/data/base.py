"""`AgentRDataModule`: Agent-R training data generated on the fly, tokenised, packed and served.

Bring a new environment by subclassing `AgentRDataModule` and overriding **one** method,
`make_env()`, which returns a fresh `agentr.envs.Environment`; optionally override
`task_ids(split)` to choose the tasks. (What is the environment's own, such as the thoughts of
its expert's demonstrations, the environment says: `Environment.expert_thought`.) Then point a
config's `data.class_path` at the subclass:

    class MazeDataModule(AgentRDataModule):
        def __init__(self, size: int = 5, **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def make_env(self) -> Environment:
            return MazeEnv(self.size)

How the data flows (the iteration callback drives it; without it, pass `data_files`):

1. `regenerate(engine, iteration, alpha, out_dir)` runs Phase I (`agentr.search.collect`) on the
   train tasks with the current policy and hands the dataset to `set_trajectories`.
   `expert_trajectories(num)` builds warm-start demonstrations from the environment's expert
   (`agentr.data.expert`).
2. `set_trajectories(trajectories)` tokenises them with the model's chat template and loss mask,
   trims over-long ones (their oldest untrained turns; what still does not fit is dropped, both
   counted), holds out a `val_fraction` of the expert demonstrations' tasks for validation
   (Phase I data is always trained whole, as in the paper), mixes in chat data at
   `chat_ratio`, and keeps the result for the next `train_dataloader()` / `val_dataloader()`.
   `data_stats` and the log line say how many were trained, validated, trimmed and dropped.
3. With `Trainer(reload_dataloaders_every_n_epochs=1)` Lightning asks for the dataloaders every
   epoch, so an epoch trains on what was set before it started.

Multi-GPU: in `regenerate` the ranks share Phase I's tasks, each claiming the next one when it
has room (`agentr.search.sharded`), and every rank then reads the one merged
`out_dir/dataset.jsonl`, so all ranks hold the same data set. `out_dir` must therefore be on a
filesystem all ranks share (any single machine; checked). The batches of an epoch are then split
over the ranks by Lightning's distributed sampler (`use_distributed_sampler=True`, the default).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from agentr.data.chat_mix import chat_count, load_chat, sample_chat
from agentr.data.expert import expert_trajectories
from agentr.errors import SettingError, check_range
from agentr.data.packing import BatchDataset, EpochShuffleSampler
from agentr.data.tokenize import TokenizedExample, tokenize_all, tokenize_trajectory
from agentr.engines.models import SMOLLM2_ID
from agentr.old_spellings import check_datamodule_class
from agentr.search.config import SearchConfig
from agentr.trajectory import Trajectory, read_jsonl

if TYPE_CHECKING:
    from agentr.engines.base import Engine
    from agentr.envs.base import Environment

log = logging.getLogger(__name__)


def _stable_fraction(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by (seed, key): the same in every process and Python version."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class AgentRDataModule(pl.LightningDataModule):
    """Agent-R's training data for one environment: generated, tokenised, packed, served.

    Subclasses implement `make_env()` (see the module docstring).

    Args:
        model: the model whose tokenizer and chat template render the data (the trained model).
        search: Phase I settings (MCTS, pairing, critique) used by `regenerate`.
        max_length: longest conversation in tokens; longer ones lose their oldest untrained
            turns, and those that still do not fit are dropped (both counted).
        tokens_per_batch: the token budget of one packed batch (at least `max_length`).
        packing: pack conversations into one padding-free row per batch; False: right-padded
            batches of `batch_size` conversations (the baseline; it computes on padding).
        batch_size: conversations per batch when `packing` is False.
        num_tasks: use this many train tasks (a seeded sample, in the environment's order);
            None: all of them.
        val_fraction: fraction of the expert demonstrations' tasks held out for validation (at
            least one task when there are two or more; 0 disables validation). Phase I data is
            never held out: every revision and good trajectory is trained.
        data_files: JSONL trajectory files to train on when no iteration callback regenerates
            data (e.g. a saved Phase I dataset or expert demonstrations).
        chat_data: optional JSONL of general chat conversations to mix in (see
            `agentr.data.chat_mix` for the formats).
        chat_ratio: fraction of training conversations drawn from `chat_data` (a sampling ratio;
            the paper's eta is a loss weight instead, see `agentr.data.chat_mix`).
        num_workers: DataLoader worker processes.
        seed: seed of task sampling, the validation split, chat sampling and Phase I.
    """

    def __init__(
        self,
        model: str = SMOLLM2_ID,
        search: SearchConfig | None = None,
        max_length: int = 2048,
        tokens_per_batch: int = 8192,
        packing: bool = True,
        batch_size: int = 4,
        num_tasks: int | None = None,
        val_fraction: float = 0.1,
        data_files: list[str] | None = None,
        chat_data: str | None = None,
        chat_ratio: float = 0.0,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_range("data.max_length", max_length, 1)
        if tokens_per_batch < max_length:
            raise SettingError(f"data.tokens_per_batch={tokens_per_batch} is out of range: must be "
                               f">= data.max_length ({max_length})")
        check_range("data.batch_size", batch_size, 1)
        check_range("data.num_tasks", num_tasks, 1, optional=True)
        check_range("data.val_fraction", val_fraction, 0, 1, high_open=True)
        check_range("data.chat_ratio", chat_ratio, 0, 1, high_open=True)
        check_range("data.num_workers", num_workers, 0)
        self.model = model
        self.search = search if search is not None else SearchConfig()
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.packing = packing
        self.batch_size = batch_size
        self.num_tasks = num_tasks
        self.val_fraction = val_fraction
        self.data_files = list(data_files or [])
        self.chat_data = chat_data
        self.chat_ratio = chat_ratio
        self.num_workers = num_workers
        self.seed = seed
        self._tokenizer = None
        self._chat_pool: list[Trajectory] | None = None
        self.train_examples: list[TokenizedExample] | None = None
        self.val_examples: list[TokenizedExample] = []
        self._train_set: BatchDataset | None = None
        self._val_set: BatchDataset | None = None
        #: Counters of the last `set_trajectories` call (what was kept, dropped, mixed).
        self.data_stats: dict = {}
        #: Bumped by every `set_trajectories`/`set_examples`: seeds the data's shuffle, numbers it in the log.
        self.data_version = 0
        self._iteration_hook: Callable[[], None] | None = None
        self._base_attributes = set(vars(self))  # what env_description leaves out

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        check_datamodule_class(cls)

    # ---- what a subclass provides --------------------------------------------------------------
    def make_env(self) -> Environment:
        """A fresh environment instance (called once per task in flight, and for task ids)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement make_env(); "
            "use TextCraftDataModule, ScienceWorldDataModule or HTTPDataModule, or subclass"
        )

    def task_ids(self, split: str) -> list[str]:
        """The tasks of `split` to use: the environment's, a seeded sample of `num_tasks` for train."""
        env = self.make_env()
        try:
            ids = [str(t) for t in env.task_ids(split)]
        finally:
            env.close()
        if split == "train" and self.num_tasks is not None and self.num_tasks < len(ids):
            keep = set(random.Random(self.seed).sample(range(len(ids)), self.num_tasks))
            ids = [t for i, t in enumerate(ids) if i in keep]
        return ids

    def env_description(self) -> dict:
        """The environment as Phase I's provenance records it (`agentr.provenance`): this
        DataModule's class and the options its subclass adds (its public attributes beyond
        `AgentRDataModule`'s own). Override if the environment depends on anything else."""
        options = {k: v for k, v in vars(self).items()
                   if not k.startswith("_") and k not in self._base_attributes}
        return {"name": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": json.loads(json.dumps(options, default=str))}

    # ---- the tokenizer -----------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from agentr.engines.models import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.model))
        return self._tokenizer

    # ---- data generation ---------------------------------------------------------------------
    def regenerate(self, engine: Engine, iteration: int, alpha: float, out_dir: str | Path) -> Path:
        """Run Phase I with `engine` on the train tasks, set the result as the data; return the dataset path.

        Under a multi-GPU run every rank calls this with its own engine: the ranks share the
        tasks (`agentr.search.sharded`) and all of them get the merged dataset.
        """
        from agentr.ranks import Ranks
        from agentr.search.sharded import collect_sharded

        ranks = Ranks.current()
        result = collect_sharded(engine, self.make_env, self.task_ids("train"), self.search, out_dir, ranks,
                                 iteration=iteration, alpha=alpha, seed=self.seed + iteration,
                                 provenance={"env": self.env_description(), "split": "train"},
                                 progress=ranks.is_main)
        self.set_trajectories(read_jsonl(result.dataset))
        return result.dataset

    def expert_trajectories(self, num: int) -> list[Trajectory]:
        """Up to `num` warm-start demonstrations from the environment's expert, on train tasks,
        those that Phase I does not search first (`agentr.data.expert`)."""
        return expert_trajectories(self.make_env, set(self.task_ids("train")), num, self.seed)

    # ---- data the loaders serve --------------------------------------------------------------
    def set_trajectories(self, trajectories: Iterable[Trajectory]) -> None:
        """Tokenise `trajectories`, split validation, mix chat data; the next dataloaders serve them."""
        trajectories = list(trajectories)
        val_tasks = self._val_tasks(trajectories)
        held_out = lambda t: t.kind == "expert" and (t.env, t.task_id) in val_tasks  # noqa: E731
        train, train_stats = tokenize_all(self.tokenizer, [t for t in trajectories if not held_out(t)],
                                          self.max_length)
        val, val_stats = tokenize_all(self.tokenizer, [t for t in trajectories if held_out(t)],
                                      self.max_length)
        chat = self._chat_examples(len(train))
        self.set_examples(train + chat, val)
        dropped = {"too_long": train_stats.too_long + val_stats.too_long,
                   "untrained": train_stats.untrained + val_stats.untrained}
        self.data_stats.update({
            "trajectories": len(trajectories),
            "trained": train_stats.kept,
            "validated": val_stats.kept,
            "trimmed": train_stats.trimmed + val_stats.trimmed,
            "dropped": dropped,
            "train": asdict(train_stats),
            "val": asdict(val_stats),
            "val_tasks": len(val_tasks),
            "chat": len(chat),
        })
        log.info("data v%d: %d trajectories: %d trained (%s), %d validated (expert demos of %d tasks), "
                 "%d trimmed to %d tokens; dropped %d too long, %d without a trained turn; %s",
                 self.data_version, len(trajectories), train_stats.kept, self.data_stats["train_kinds"],
                 val_stats.kept, len(val_tasks), self.data_stats["trimmed"], self.max_length,
                 dropped["too_long"], dropped["untrained"], self.data_stats["train_batches"])

    def set_examples(self, train: Iterable[TokenizedExample], val: Iterable[TokenizedExample] = ()) -> None:
        """Serve these tokenised conversations from the next dataloaders on (batched here, once)."""
        self.data_version += 1
        self.train_examples = list(train)
        random.Random(self._data_seed()).shuffle(self.train_examples)
        self.val_examples = list(val)
        self._train_set = self._dataset(self.train_examples)
        self._val_set = self._dataset(self.val_examples)
        kinds: dict[str, int] = {}
        for e in self.train_examples:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        self.data_stats = {"train_kinds": kinds, "train_batches": str(self._train_set.stats())}

    @property
    def num_train_batches(self) -> int:
        """Batches in one epoch of the current training data (all ranks together)."""
        return len(self._train_set) if self._train_set is not None else 0

    def _data_seed(self) -> int:
        return self.seed * 100003 + self.data_version

    def _val_tasks(self, trajectories: Sequence[Trajectory]) -> set[tuple[str, str]]:
        """The expert demonstrations' tasks held out for validation (Phase I data never is)."""
        tasks = sorted({(t.env, t.task_id) for t in trajectories if t.kind == "expert"})
        if self.val_fraction == 0 or len(tasks) < 2:
            return set()
        count = max(1, math.floor(self.val_fraction * len(tasks)))
        ranked = sorted(tasks, key=lambda k: _stable_fraction(self.seed, f"{k[0]}/{k[1]}"))
        return set(ranked[:count])

    def _chat_examples(self, num_agent: int) -> list[TokenizedExample]:
        if not self.chat_data or self.chat_ratio == 0:
            return []
        if self._chat_pool is None:
            self._chat_pool = load_chat(self.chat_data)
        count = chat_count(num_agent, self.chat_ratio)
        chat = sample_chat(self._chat_pool, count, lambda t: tokenize_trajectory(self.tokenizer, t),
                           self.max_length, random.Random(f"chat:{self._data_seed()}"))
        if len(chat) < count:
            log.warning("chat data: %d usable conversations of the %d asked for", len(chat), count)
        return chat

    def setup(self, stage: str) -> None:
        if stage == "fit":  # refuse settings the environment cannot serve before any work
            from agentr.search.critique import check_transition_source

            check_transition_source(self.search, self.make_env)
        if self.train_examples is None and self.data_files:
            self.set_trajectories(t for path in self.data_files for t in read_jsonl(path))

    def _dataset(self, examples: list[TokenizedExample]) -> BatchDataset:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id or 0
        return BatchDataset(examples, packing=self.packing, tokens_per_batch=self.tokens_per_batch,
                            batch_size=self.batch_size, pad_token_id=pad, seed=self._data_seed())

    def _loader(self, dataset: BatchDataset, shuffle: bool) -> DataLoader:
        sampler = None
        if shuffle:  # a loader made mid-run starts at the current epoch (Lightning then calls set_epoch)
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            sampler = EpochShuffleSampler(len(dataset), self._data_seed(), epoch)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)

    def set_iteration_hook(self, hook: Callable[[], None] | None) -> None:
        """Have `train_dataloader()` call `hook` first.

        The iteration callback runs the iteration's sequence there: Lightning builds the train
        loader after the previous epoch's checkpoint is saved and after a resumed run restored
        `current_epoch`, so Phase I runs at the one moment that loses no work on a crash.
        """
        self._iteration_hook = hook

    def train_dataloader(self) -> DataLoader:
        if self._iteration_hook is not None:
            self._iteration_hook()
        if self.train_examples is None:
            raise RuntimeError(
                "no training data: run with agentr's iteration callback (it calls regenerate), "
                "call set_trajectories(...), or pass data_files"
            )
        if not self.train_examples:
            log.warning("no training data for epoch %s (Phase I kept no trajectory): it trains nothing",
                        self.trainer.current_epoch if self.trainer is not None else "?")
        return self._loader(self._train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_examples:
            # An iteration without validation data is the rule (Phase I data all trains):
            # Lightning's warning about the empty loader says nothing to act on.
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
            return []
        return self._loader(self._val_set, shuffle=False)

