"""The evaluation callback: success rate and reward on held-out tasks after every iteration."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from agentr.engines.base import Engine

log = logging.getLogger(__name__)


class EvaluationCallback(Callback):
    """Evaluates the policy of every finished stage (base model, warm start, each iteration).

    `AgentRIterations` calls `evaluate_stage` at the right moments; results are cached in the
    stage's directory (`eval.json`, `trajectories.jsonl`), so a resumed run does not redo them.
    Metrics go to every logger (`eval/success_rate`, `eval/avg_reward`, `eval/loop_count`) and
    a plot of success rate per stage is written to `<run dir>/success_rate.png`.

    Args:
        split: the task split to evaluate on.
        num_tasks: evaluate on the first `num_tasks` tasks of the split (None: all).
        max_turns: turn limit per episode (the paper uses 100).
        temperature: 0 for greedy decoding, as in the paper.
        max_tokens: tokens per reply.
    """

    def __init__(
        self,
        split: str = "test",
        num_tasks: int | None = None,
        max_turns: int = 100,
        temperature: float = 0.0,
        max_tokens: int = 128,
    ) -> None:
        self.split = split
        self.num_tasks = num_tasks
        self.max_turns = max_turns
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.history: dict[str, dict] = {}

    def evaluate_stage(
        self,
        trainer: pl.Trainer,
        name: str,
        index: int,
        policy: Callable[[], Engine],
        out_dir: Path,
    ) -> dict:
        """Results of stage `name` (the `index`-th stage), computed once and cached in `out_dir`."""
        results_path = Path(out_dir) / "eval.json"
        if not results_path.exists():
            if trainer.is_global_zero:
                self._run(trainer, policy(), Path(out_dir))
            trainer.strategy.barrier()
        results = json.loads(results_path.read_text())
        if name not in self.history and trainer.is_global_zero:
            self.history[name] = results
            metrics = {f"eval/{k}": v for k, v in results["metrics"].items()}
            for logger in trainer.loggers:
                logger.log_metrics({**metrics, "stage": index}, step=trainer.global_step)
            log.info("%s: %s", name, ", ".join(f"{k}={v:.3f}" for k, v in results["metrics"].items()))
            self._plot(Path(trainer.default_root_dir) / "success_rate.png")
        return results

    def _run(self, trainer: pl.Trainer, engine: Engine, out_dir: Path) -> None:
        from agentr.evaluation import evaluate

        datamodule = trainer.datamodule
        task_ids = datamodule.task_ids(self.split)[: self.num_tasks]
        evaluate(
            engine,
            datamodule.make_env,
            task_ids,
            out_dir=out_dir,
            max_turns=self.max_turns,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(self.history)
        rates = [self.history[n]["metrics"]["success_rate"] for n in names]
        fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3))
        ax.plot(names, rates, marker="o")
        ax.set_ylabel(f"success rate ({self.split})")
        ax.set_ylim(0, max(1e-3, max(rates)) * 1.15)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
