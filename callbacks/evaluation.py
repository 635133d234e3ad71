"""The evaluation callback: success rate and reward on held-out tasks after every iteration."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from agentr.callbacks.driven import check_driven
from agentr.engines.base import Engine
from agentr.errors import check_range
from agentr.provenance import changed_keys
from agentr.ranks import Ranks

log = logging.getLogger(__name__)


class EvaluationCallback(Callback):
    """Evaluates the policy of every finished stage (base model, warm start, each iteration).

    `AgentRIterations` calls `evaluate_stage` at the right moments; results are cached in the
    stage's directory (`eval.json`, `episodes.jsonl`) with the fingerprint of what made them
    (the weights' digests, environment, tasks and settings: `agentr.provenance`), so a resumed
    run redoes only the evaluations whose fingerprint changed. An evaluation where more than
    `max_error_rate` of the episodes ended in an environment error fails the fit (and is not
    cached).
    In a multi-GPU run every rank plays a share of the episodes with its own engine (the
    generation callback's, as in Phase I): a rank with room claims the next ones, and rank 0
    merges them into the files one process writes (`agentr.evaluation.evaluate` with `ranks`);
    the ranks wait for one another on marker files, so a rank that raises stops the others.
    Metrics go to every logger (`eval/success_rate` with `eval/success_rate_ci_low` and
    `_ci_high`, `eval/avg_reward`, `eval/loop_count`, `eval/revision_rate`, ...; the sampled
    evaluation's as `eval_sampled/...`) and a plot of success rate per stage with its 95%
    interval is written to `<run dir>/success_rate.png`.

    Args:
        split: the task split to evaluate on.
        num_tasks: evaluate on the first `num_tasks` tasks of the split (None: all).
        max_turns: turn limit per episode (the paper uses 100).
        temperature: 0 for greedy decoding, as in the paper.
        max_tokens: tokens per reply.
        episodes_per_task: sampled episodes per task, played beside the greedy ones, for
            narrower intervals where tasks are few (0: none).
        sample_temperature: temperature of the sampled episodes.
        seed: base of the sampled episodes' seeds (each derives from it, its task and index).
        max_error_rate: the largest share of episodes that may end in an environment error (a
            dead server); those are not scored.
        evaluate_base: also evaluate the untrained base model, before anything else. Off where
            its score is known and the time is short (the quickstart's model scores 0 there).
    """

    def __init__(
        self,
        split: str = "test",
        num_tasks: int | None = None,
        max_turns: int = 100,
        temperature: float = 0.0,
        max_tokens: int = 128,
        episodes_per_task: int = 0,
        sample_temperature: float = 1.0,
        seed: int = 0,
        max_error_rate: float = 0.1,
        evaluate_base: bool = True,
    ) -> None:
        check_range("EvaluationCallback.num_tasks", num_tasks, 1, optional=True)
        check_range("EvaluationCallback.max_turns", max_turns, 1)
        check_range("EvaluationCallback.temperature", temperature, 0)
        check_range("EvaluationCallback.max_tokens", max_tokens, 1)
        check_range("EvaluationCallback.episodes_per_task", episodes_per_task, 0)
        if episodes_per_task:
            check_range("EvaluationCallback.sample_temperature", sample_temperature, 0, low_open=True)
        check_range("EvaluationCallback.max_error_rate", max_error_rate, 0, 1)
        self.split = split
        self.num_tasks = num_tasks
        self.temperature = temperature
        self.episodes_per_task = episodes_per_task
        self.max_error_rate = max_error_rate
        self.evaluate_base = evaluate_base
        #: `evaluate`'s settings, and so those of the evaluation's fingerprint.
        self.settings = dict(max_turns=max_turns, temperature=temperature, max_tokens=max_tokens,
                             stop=(), seed=seed, success_threshold=1.0,
                             episodes_per_task=episodes_per_task,
                             sample_temperature=sample_temperature)
        self.history: dict[str, dict] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            check_driven(trainer, self)

    def evaluate_stage(
        self,
        trainer: pl.Trainer,
        name: str,
        index: int,
        policy: Callable[[], Engine],
        out_dir: Path,
        provenance: dict,
    ) -> dict:
        """Results of stage `name` (the `index`-th stage), computed once and cached in `out_dir`.

        `provenance` holds the digests of the weights `policy()` generates with
        (`GenerationCallback.provenance`); cached results made from anything else are redone.
        Every rank calls this at the same point; when the stage is evaluated again, every rank
        calls `policy()` and plays its share of the episodes.
        """
        from agentr.evaluation import evaluation_fingerprint

        results_path = Path(out_dir) / "eval.json"
        task_ids = trainer.datamodule.task_ids(self.split)[: self.num_tasks]
        provenance = {**provenance, "env": trainer.datamodule.env_description(), "split": self.split}
        expected = evaluation_fingerprint(provenance, task_ids, **self.settings)

        def stale() -> str | None:
            """What changed since the cached results ("" for none cached; None: still valid)."""
            cached = json.loads(results_path.read_text()) if results_path.exists() else None
            if cached is None:
                return ""
            if cached.get("fingerprint") != expected:
                return ", ".join(changed_keys(cached.get("fingerprint") or {}, expected))
            return None

        ranks = Ranks.current()
        changed = ranks.decide(stale)  # rank 0 looks, so that every rank takes the same path
        fresh = changed is not None
        if fresh:
            if changed and ranks.is_main:
                log.warning("%s: evaluating again, %s changed since %s was written", name, changed, results_path)
            # every rank plays its share; they wait for one another on markers in `out_dir`
            # (no collective timeout), starting once every rank is here, so that none is still
            # reading the old results
            self._run(trainer, policy(), Path(out_dir), task_ids, provenance, ranks)
        results = json.loads(results_path.read_text())
        if (fresh or name not in self.history) and trainer.is_global_zero:
            self.history[name] = results
            metrics = loggable_metrics(results["metrics"], "eval/")
            if "sampled" in results:
                metrics.update(loggable_metrics(results["sampled"]["metrics"], "eval_sampled/"))
            for logger in trainer.loggers:
                logger.log_metrics({**metrics, "stage": index}, step=trainer.global_step)
            log.info("%s: %s", name, ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
            self._plot(Path(trainer.default_root_dir) / "success_rate.png")
        return results

    def _run(self, trainer: pl.Trainer, engine: Engine, out_dir: Path, task_ids: list[str],
             provenance: dict, ranks: Ranks) -> None:
        from agentr.evaluation import evaluate

        evaluate(
            engine,
            trainer.datamodule.make_env,
            task_ids,
            out_dir=out_dir,
            max_error_rate=self.max_error_rate,
            provenance=provenance,
            ranks=ranks,
            **self.settings,
        )

    def _plot(self, path: Path) -> None:
        """Plot the success rate of every stage so far with its interval to `path`. The plot only
        pictures what eval.json holds, so a failure to draw or write it is a warning, never the
        end of the fit."""
        fig = None
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            names = list(self.history)
            fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3))
            series = [("greedy" if self.temperature == 0 else f"temperature {self.temperature}",
                       [self.history[n] for n in names])]
            if all("sampled" in self.history[n] for n in names) and names:
                series.append((f"{self.episodes_per_task} sampled per task",
                               [self.history[n]["sampled"] for n in names]))
            top = 1e-3
            for offset, (label, results) in zip((-0.05, 0.05), series):
                rates = [r["metrics"]["success_rate"] for r in results]
                cis = [r["metrics"].get("success_rate_ci") or [rate, rate]
                       for r, rate in zip(results, rates)]
                # never negative, even should a bound miss its rate by a rounding error
                errors = [[max(0.0, rate - lo) for rate, (lo, _) in zip(rates, cis)],
                          [max(0.0, hi - rate) for rate, (_, hi) in zip(rates, cis)]]
                x = [i + (offset if len(series) > 1 else 0) for i in range(len(names))]
                ax.errorbar(x, rates, yerr=errors, marker="o", capsize=3, label=label)
                top = max(top, *(hi for _, hi in cis))
            ax.set_xticks(range(len(names)), names)
            ax.set_ylabel(f"success rate ({self.split})")
            ax.set_ylim(0, min(1.0, top * 1.1) if top < 1 else 1.05)
            ax.set_title("95% intervals", fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
        except Exception as e:  # noqa: BLE001 - any failure: the results themselves are saved
            log.warning("could not plot the success rate per stage to %s (%s: %s); the fit goes on",
                        path, type(e).__name__, e)
        finally:
            if fig is not None:
                plt.close(fig)


def loggable_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """The scalars of `episode_metrics` for a logger: each interval as `_ci_low`/`_ci_high`;
    the per-length loop counts (in eval.json) and undefined rates (None) are left out."""
    out = {}
    for key, value in metrics.items():
        if key.endswith("_ci") and value is not None:
            out[f"{prefix}{key}_low"], out[f"{prefix}{key}_high"] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out
