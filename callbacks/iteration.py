"""The Agent-R iteration loop over Lightning epochs.

An iteration regenerates the training data with the current policy (Phase I), then trains on
it for its epochs (Phase II). An optional warm start (iteration 0) first trains on expert
demonstrations. Each epoch's data is prepared inside the DataModule's `train_dataloader()`
(Lightning reloads it every epoch), which runs *after* the previous epoch's checkpoint is
saved and *after* a resumed run has restored `current_epoch`: a run killed during Phase I or
training restarts at the right iteration, and Phase I itself resumes task by task.

Run directory layout (`trainer.default_root_dir`):

    base_model.json                the base model the run is made from (a fit of another is refused)
    base/eval.json                 the untrained model, evaluated before anything else
                                   (unless EvaluationCallback.evaluate_base is off)
    iteration_0/                   warm start: data.jsonl, adapter/, eval.json
    iteration_1/phase1/            Phase I output: dataset, trees, stats (resumable)
    iteration_1/adapter/           the LoRA adapter after this iteration (PEFT format)
    iteration_1/eval.json
    iteration_1/training.json      wall time of the iteration's training epochs (seconds)
    checkpoints/last.ckpt          Lightning checkpoint (trainable weights, training's random state)
    ranks/                         multi-GPU: the markers ranks wait on (see `agentr.ranks`)
    report.html                    the run's report (`agentr.report`), written at the end

At the end of the fit the report is written, logged to W&B as an artifact of type "report"
when a `WandbLogger` is on, and the summary table is printed.

One fit at a time writes a run directory: a second is refused at setup (`agentr.run_lock`).

Multi-GPU: the run directory must be shared by all ranks (checked at setup); every decision
taken from a file's existence is rank 0's, broadcast, so ranks never take different paths; long
waits (expert data, evaluation, Phase I) are on marker files, not collective barriers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger

from agentr.callbacks.driven import Driver
from agentr.callbacks.evaluation import EvaluationCallback
from agentr.callbacks.generation import GenerationCallback
from agentr.errors import (
    DirectoryInUseError,
    NoTrainingData,
    ProvenanceError,
    SettingError,
    check_range,
)
from agentr.jsonfiles import write_json
from agentr.provenance import claim_run_base_model
from agentr.ranks import Ranks, main_rank_does, shared_token
from agentr.run_lock import DirectoryLock
from agentr.training.rng import rng_state, set_rng_state
from agentr.trajectory import read_jsonl, write_jsonl_atomic

log = logging.getLogger(__name__)


@dataclass
class WarmStart:
    """Supervised fine-tuning on expert demonstrations before the first Agent-R iteration.

    Small models cannot act zero-shot and give MCTS no successful paths to splice; keep the
    warm start small enough that the model still fails often, since Agent-R learns from failures.

    Attributes:
        num_demos: expert demonstrations (one per train task, in split order).
        epochs: training epochs on them.
    """

    num_demos: int = 100
    epochs: int = 2

    def __post_init__(self) -> None:
        check_range("warm_start.num_demos", self.num_demos, 1)
        check_range("warm_start.epochs", self.epochs, 1)


def remove_empty_log_dir(log_dir: Path) -> None:
    """Remove a logger's version directory and the folder of versions above it, where empty.

    Lightning makes the logger's new version directory (e.g. `logs/version_3`) before callbacks
    set up, so a refused fit would leave it behind, empty. A directory with anything in it stays.
    """
    for d in (log_dir, log_dir.parent):
        try:
            d.rmdir()
        except OSError:  # not empty, or not there
            return


@dataclass(frozen=True)
class PlannedEpoch:
    """What one training epoch belongs to."""

    iteration: int  # 0: warm start; 1..: Agent-R iterations
    epoch: int  # epoch within the iteration, from 0
    epochs: int  # epochs of the iteration

    @property
    def is_last_epoch(self) -> bool:
        return self.epoch == self.epochs - 1


def per_iteration(values: list, iterations: int, name: str = "values") -> list:
    """`values` stretched to `iterations` entries by repeating the last one."""
    if not values:
        raise SettingError(f"{name}=[] is out of range: needs at least one value")
    return [values[min(i, len(values) - 1)] for i in range(iterations)]


def epoch_plan(iterations: int, epochs: list[int], warm_start_epochs: int = 0) -> list[PlannedEpoch]:
    """What every training epoch of the fit belongs to, in order."""
    check_range("AgentRIterations.iterations", iterations, 1)
    for count in epochs:
        check_range("AgentRIterations.epochs", count, 1)  # each iteration's
    counts = ([warm_start_epochs] if warm_start_epochs else []) + per_iteration(
        epochs, iterations, "AgentRIterations.epochs")
    first = 0 if warm_start_epochs else 1
    plan = []
    for iteration, count in enumerate(counts, start=first):
        plan.extend(PlannedEpoch(iteration, e, count) for e in range(count))
    return plan


def numeric_items(stats: dict, prefix: str) -> dict[str, float]:
    """The numbers of a nested stats dict as flat logger metrics, keys joined with "/"
    (`{"verdicts": {"Bad": 3}}` -> `{"<prefix>/verdicts/Bad": 3}`); None and text are left out."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(numeric_items(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def iteration_steps(epochs: int, batches: int, world_size: int = 1, accumulate: int = 1) -> int:
    """Optimizer steps of an iteration: `batches` (all ranks) are sharded, then accumulated."""
    per_rank = math.ceil(batches / world_size)  # the distributed sampler pads the last rank
    return epochs * math.ceil(per_rank / accumulate)  # Lightning steps on an epoch's remainder


class AgentRIterations(Driver):
    """Runs Agent-R: per iteration, Phase I with the current policy, then its training epochs.

    Args:
        iterations: Agent-R iterations (the paper uses 3).
        epochs: training epochs per iteration; the last value repeats (paper: 3, then 1).
        alpha: the good-trajectory threshold per iteration; the last value repeats
            (paper: 0.5, 0.7, 1.0).
        warm_start: optional SFT on expert demonstrations before iteration 1.
        stop_after: end the fit once this iteration is trained, saved and evaluated (0: right
            after the warm start), e.g. to start several runs from one warm start; the same
            command without it continues from there.
    """

    def __init__(
        self,
        iterations: int = 3,
        epochs: list[int] = [3, 1],  # noqa: B006 (jsonargparse shows list defaults in --help)
        alpha: list[float] = [0.5, 0.7, 1.0],  # noqa: B006
        warm_start: WarmStart | None = None,
        stop_after: int | None = None,
    ) -> None:
        first = 0 if warm_start else 1
        if stop_after is not None and not first <= stop_after <= iterations:
            raise SettingError(f"AgentRIterations.stop_after={stop_after} is out of range: must be "
                               f"an iteration of the run, in [{first}, {iterations}]")
        self.stop_after = stop_after
        self.plan = epoch_plan(iterations, list(epochs), warm_start.epochs if warm_start else 0)
        for value in alpha:
            check_range("AgentRIterations.alpha", value, 0, 1, low_open=True)
        self.iterations = iterations
        self.alpha = per_iteration(list(alpha), iterations, "AgentRIterations.alpha")
        self.warm_start = warm_start
        self._loaded: int | None = None  # iteration whose data the DataModule holds
        self._rng: dict | None = None  # the random state where training last stopped
        self._restore_rng = False
        self.run_dir = Path(".")
        self._lock: DirectoryLock | None = None

    # ---- Lightning hooks --------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.max_epochs != len(self.plan):
            log.info("max_epochs set to %d: the epochs of the Agent-R plan", len(self.plan))
            trainer.fit_loop.max_epochs = len(self.plan)
        # Each epoch's data comes from train_dataloader(), so Lightning must call it every epoch.
        trainer.reload_dataloaders_every_n_epochs = 1
        self.run_dir = Path(trainer.default_root_dir)
        shared_token(Ranks.current(), self.run_dir)  # fails fast unless every node sees it
        _find_callback(trainer, AgentRIterations)  # exactly one
        self.generation = _find_callback(trainer, GenerationCallback)
        self.evaluation = _find_callback(trainer, EvaluationCallback, required=False)
        if self.evaluation is None:
            log.warning("no EvaluationCallback in trainer.callbacks: no stage of this fit is evaluated")
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "set_iteration_hook"):
            raise TypeError(
                f"AgentRIterations needs an agentr.data.AgentRDataModule, got {type(datamodule).__name__}"
            )
        self._lock_run_dir(trainer)
        self._claim_run_dir(pl_module)
        datamodule.set_iteration_hook(lambda: self.begin_iteration(trainer))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._release_lock()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._release_lock()  # Lightning calls no teardown after an exception

    def _lock_run_dir(self, trainer: pl.Trainer) -> None:
        """One fit per run directory: rank 0 holds its lock, and every rank stops when refused."""
        self._release_lock()  # of an earlier setup
        self._lock = DirectoryLock(self.run_dir)
        refusal = Ranks.current().decide(self._lock.try_acquire)
        if refusal is not None:
            if trainer.is_global_zero and trainer.logger is not None and trainer.log_dir:
                remove_empty_log_dir(Path(trainer.log_dir))
            raise DirectoryInUseError(refusal)

    def _claim_run_dir(self, pl_module: pl.LightningModule) -> None:
        """Refuse, before any stage runs, a run directory begun from another base model."""
        model, digest = pl_module.hparams.model, pl_module.base_model_digest()
        refusal = Ranks.current().decide(lambda: claim_run_base_model(self.run_dir, model, digest))
        if refusal is not None:
            raise ProvenanceError(refusal)

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()
        self._restore_rng = self._rng is not None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch,
                             batch_idx: int) -> None:
        # An epoch's training draws (dropout) go on from where the last epoch's stopped, whatever
        # drew in between (Phase I, evaluation, a resumed run's model loading, the loader): a run
        # resumed from a checkpoint trains exactly as the uninterrupted run did.
        if self._restore_rng:
            set_rng_state(self._rng)
            self._restore_rng = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        self._rng = rng_state()

    # Kept beside the module's entries rather than as callback state (state_dict), which would
    # make Lightning refuse two of these callbacks before setup can name the mistake.
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        checkpoint["agentr_rng"] = self._rng

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict) -> None:
        self._rng = checkpoint.get("agentr_rng")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        planned = self.plan[trainer.current_epoch]
        if trainer.is_global_zero:
            self._record_training_time(planned, time.perf_counter() - self._epoch_started)
        if planned.iteration == self.stop_after and planned.is_last_epoch:
            trainer.should_stop = True  # the checkpoint of this epoch is still written

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The last finished iteration: the plan's, or an earlier one where the fit was stopped.
        finished = self.plan[:trainer.current_epoch]
        last = max((s.iteration for s in finished if s.is_last_epoch), default=-1)
        self._save_adapter(trainer, last)
        self._evaluate_finished(trainer, upto=last)
        if trainer.is_global_zero:
            self._report(trainer)

    def _record_training_time(self, planned: PlannedEpoch, seconds: float) -> None:
        """Add an epoch's wall time to `iteration_<k>/training.json` (a resumed epoch replaces
        the entry of its interrupted run)."""
        path = self.iteration_dir(planned.iteration) / "training.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        epochs = (record.get("epoch_seconds") or []) + [None] * planned.epochs
        epochs = epochs[: planned.epochs]
        epochs[planned.epoch] = round(seconds, 3)
        record = {"seconds": round(sum(e for e in epochs if e is not None), 3), "epoch_seconds": epochs}
        write_json(path, record, indent=2)

    def _report(self, trainer: pl.Trainer) -> None:
        """Write the run's report, log it to W&B, print the summary."""
        from agentr.report import format_summary, write_report

        path, run = write_report(self.run_dir)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                artifact = wandb.Artifact(f"report-{logger.experiment.id}", type="report")
                artifact.add_file(str(path), name=path.name)
                logger.experiment.log_artifact(artifact)
        print("\n" + format_summary(run, path), flush=True)

    # ---- the loop ---------------------------------------------------------------------------
    def begin_iteration(self, trainer: pl.Trainer) -> None:
        """The iteration's sequence. Called by the DataModule's `train_dataloader()`, which
        Lightning calls before every epoch; it acts on an iteration's first epoch (or the first
        epoch of a resumed run):

        1. save the weights the previous iteration ended with as its adapter;
        2. evaluate every finished stage without results (the base model first, unless
           `EvaluationCallback.evaluate_base` is off);
        3. the iteration's data: expert demonstrations (the warm start, iteration 0) or Phase I,
           the search with the previous iteration's adapter;
        4. refuse an iteration without training data (Lightning would end the fit silently);
        5. log what is trained (`data/...` metrics);
        6. restart the learning-rate schedule for the iteration's steps.

        Lightning then runs the iteration's training epochs (Phase II); `on_fit_end` saves and
        evaluates the last iteration and writes the report.
        """
        planned = self.plan[trainer.current_epoch]
        if planned.iteration == self._loaded:
            return
        previous = planned.iteration - 1
        self._save_adapter(trainer, previous)
        # Evaluation and Phase I of the same adapter share one engine; training gets the
        # accelerator (on CPU, the memory) back only once both are done.
        try:
            self._evaluate_finished(trainer, upto=previous)
            if planned.iteration == 0:
                trainer.datamodule.set_trajectories(self._expert_data(trainer))
            else:
                dataset = self._phase1(trainer, planned.iteration)
                self._check_training_data(trainer, planned.iteration, dataset)
        finally:
            self.generation.release()
        self._log_data(trainer, planned.iteration)
        if planned.epoch == 0:
            self._restart_schedule(trainer, planned)
        self._loaded = planned.iteration

    def _phase1(self, trainer: pl.Trainer, iteration: int) -> Path:
        """Search with the previous iteration's adapter; the DataModule then holds the data."""
        out_dir = self.iteration_dir(iteration) / "phase1"
        engine = self.generation.policy(self.adapter_dir(iteration - 1))
        dataset = trainer.datamodule.regenerate(engine, iteration, self.alpha[iteration - 1], out_dir)
        self._log_phase1(trainer, iteration, dataset)
        return dataset

    def _check_training_data(self, trainer: pl.Trainer, iteration: int, dataset: Path) -> None:
        if not trainer.datamodule.train_examples:
            raise NoTrainingData(
                f"Phase I of iteration {iteration} kept no training trajectory "
                f"(no path reached reward >= alpha={self.alpha[iteration - 1]}; see "
                f"{Path(dataset).parent / 'stats.json'}). Agent-R learns from the policy's own "
                "successes: warm-start the model (warm_start), use easier tasks, or search more "
                "(search.num_simulations, search.n_expand)."
            )

    def _restart_schedule(self, trainer: pl.Trainer, planned: PlannedEpoch) -> None:
        # Each iteration warms up and decays like its own fine-tuning run (a resumed run past an
        # iteration's first epoch keeps the schedule its checkpoint restored).
        trainer.lightning_module.restart_schedule(iteration_steps(
            planned.epochs, trainer.datamodule.num_train_batches, trainer.world_size,
            trainer.accumulate_grad_batches))

    def _save_adapter(self, trainer: pl.Trainer, iteration: int) -> None:
        """Save the current weights as iteration `iteration`'s adapter, unless already saved."""
        path = self.adapter_dir(iteration)
        if path is None or Ranks.current().decide(path.exists):
            return
        # Every rank takes part (sharded weights are gathered); written aside, then renamed, so
        # a crash never leaves a half-written adapter that a resumed run would trust.
        partial = path.with_name(path.name + ".partial")
        trainer.lightning_module.save_adapter(partial)
        if trainer.is_global_zero:
            partial.rename(path)
        trainer.strategy.barrier()

    def _expert_data(self, trainer: pl.Trainer) -> list:
        path = self.iteration_dir(0) / "data.jsonl"
        ranks = Ranks.current()
        if not ranks.decide(path.exists):
            main_rank_does(lambda: write_jsonl_atomic(
                path, trainer.datamodule.expert_trajectories(self.warm_start.num_demos)),
                ranks, self.run_dir / "ranks")
        return list(read_jsonl(path))

    def _evaluate_finished(self, trainer: pl.Trainer, upto: int) -> None:
        """Evaluate every finished stage up to iteration `upto` that has no results yet."""
        if self.evaluation is None:
            return
        first = 0 if self.warm_start else 1
        names = ["base"] + [f"iteration_{k}" for k in range(first, upto + 1)]
        for index, name in enumerate(names):  # the index is the stage's, base skipped or not
            if name == "base" and not self.evaluation.evaluate_base:
                continue
            adapter = None if name == "base" else self.run_dir / name / "adapter"
            self.evaluation.evaluate_stage(
                trainer, name, index, lambda a=adapter: self.generation.policy(a), self.run_dir / name,
                self.generation.provenance(adapter),
            )

    def _log_data(self, trainer: pl.Trainer, iteration: int) -> None:
        """What the iteration trains on (`data/...` metrics): conversations trained per kind,
        validated, trimmed and dropped (the DataModule's `data_stats`)."""
        stats = trainer.datamodule.data_stats
        if not trainer.is_global_zero or "trained" not in stats:
            return
        numbers = {f"data/{k}": stats[k] for k in ("trajectories", "trained", "validated", "trimmed")}
        numbers.update({f"data/dropped_{k}": v for k, v in stats["dropped"].items()})
        numbers.update({f"data/trained_{k}": v for k, v in stats["train_kinds"].items()})
        for logger in trainer.loggers:
            logger.log_metrics({**numbers, "iteration": iteration}, step=trainer.global_step)

    def _log_phase1(self, trainer: pl.Trainer, iteration: int, dataset: Path) -> None:
        stats_path = Path(dataset).parent / "stats.json"
        if stats_path.exists() and trainer.is_global_zero:
            numbers = numeric_items(json.loads(stats_path.read_text()), "phase1")
            for logger in trainer.loggers:
                logger.log_metrics({**numbers, "iteration": iteration}, step=trainer.global_step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                rows = [
                    [t.task_id, t.kind, "\n\n".join(f"[{m['role']}{'*' if m.get('train') else ''}] {m['content']}" for m in t.messages)]
                    for _, t in zip(range(8), read_jsonl(dataset))
                ]
                logger.log_table(key=f"phase1/iteration_{iteration}_samples", columns=["task", "kind", "conversation"], data=rows)

    # ---- paths ------------------------------------------------------------------------------
    def iteration_dir(self, iteration: int) -> Path:
        return self.run_dir / f"iteration_{iteration}"

    def adapter_dir(self, iteration: int) -> Path | None:
        """The adapter that iteration `iteration` ended with (None: the base model)."""
        if iteration < 0 or (iteration == 0 and self.warm_start is None):
            return None
        return self.iteration_dir(iteration) / "adapter"


def _find_callback(trainer: pl.Trainer, cls: type, required: bool = True):
    """The one `cls` in trainer.callbacks (None if absent and not `required`)."""
    found = [c for c in trainer.callbacks if isinstance(c, cls)]
    if len(found) > 1:
        raise SettingError(f"trainer.callbacks holds {len(found)} {cls.__name__} callbacks; an Agent-R fit takes one")
    if not found and required:
        raise SettingError(f"AgentRIterations needs a {cls.__name__} in trainer.callbacks "
                           "(see configs/quickstart.yaml)")
    return found[0] if found else None

