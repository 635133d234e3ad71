"""ScienceWorld (Wang et al. 2022), wrapping the `scienceworld` package (optional extra).

    pip install 'agentr[sciworld]'     # and Java (17 recommended) on PATH or in JAVA_HOME

See `ScienceWorldEnv` for task ids, splits, rewards and the JVM's settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from typing import Any, ClassVar

from agentr.envs.base import Environment, UnknownTaskError

#: task name -> (task code, variations, end of train, end of dev): ScienceWorld's own splits
#: (train = [0, train_end), dev = [train_end, dev_end), test = [dev_end, variations)), as the
#: jar of scienceworld 1.2 reports them; a test checks them against the jar.
TASKS: dict[str, tuple[str, int, int, int]] = {
    "boil": ("1-1", 30, 14, 21),
    "melt": ("1-2", 30, 14, 21),
    "freeze": ("1-3", 30, 14, 21),
    "change-the-state-of-matter-of": ("1-4", 30, 14, 21),
    "use-thermometer": ("2-1", 540, 270, 405),
    "measure-melting-point-known-substance": ("2-2", 436, 218, 327),
    "measure-melting-point-unknown-substance": ("2-3", 300, 150, 225),
    "power-component": ("3-1", 20, 10, 15),
    "power-component-renewable-vs-nonrenewable-energy": ("3-2", 20, 10, 15),
    "test-conductivity": ("3-3", 900, 450, 675),
    "test-conductivity-of-unknown-substances": ("3-4", 600, 300, 450),
    "find-living-thing": ("4-1", 300, 150, 225),
    "find-non-living-thing": ("4-2", 300, 150, 225),
    "find-plant": ("4-3", 300, 150, 225),
    "find-animal": ("4-4", 300, 150, 225),
    "grow-plant": ("5-1", 126, 62, 93),
    "grow-fruit": ("5-2", 126, 62, 93),
    "chemistry-mix": ("6-1", 32, 16, 24),
    "chemistry-mix-paint-secondary-color": ("6-2", 36, 18, 27),
    "chemistry-mix-paint-tertiary-color": ("6-3", 36, 18, 27),
    "lifespan-longest-lived": ("7-1", 125, 62, 93),
    "lifespan-shortest-lived": ("7-2", 125, 62, 93),
    "lifespan-longest-lived-then-shortest-lived": ("7-3", 125, 62, 93),
    "identify-life-stages-1": ("8-1", 14, 6, 9),
    "identify-life-stages-2": ("8-2", 10, 4, 6),
    "inclined-plane-determine-angle": ("9-1", 168, 84, 126),
    "inclined-plane-friction-named-surfaces": ("9-2", 1386, 692, 1038),
    "inclined-plane-friction-unnamed-surfaces": ("9-3", 162, 80, 120),
    "mendelian-genetics-known-plant": ("10-1", 120, 60, 90),
    "mendelian-genetics-unknown-plant": ("10-2", 480, 240, 360),
}
CODES = {code: name for name, (code, *_rest) in TASKS.items()}

INSTRUCTION = (
    "You are an agent in ScienceWorld, a text simulation of a house and its garden. Do the task "
    "in the first observation. Useful commands: look around, look at OBJ, look in OBJ, "
    "go to LOC, open/close OBJ, pick up OBJ, put down OBJ, move OBJ to OBJ, pour OBJ into OBJ, "
    "activate/deactivate OBJ, use OBJ on OBJ, connect OBJ to OBJ, mix OBJ, read OBJ, "
    "focus on OBJ (commits to a task object: focusing on a wrong one fails the task), "
    "wait1 (one tick), wait (ten ticks), inventory, task.\n"
    "Example: go to kitchen / pick up thermometer / focus on water"
)

JAVA_HELP = (
    "ScienceWorld runs on Java (17 recommended), and no `java` was found on PATH or in "
    "$JAVA_HOME/bin. Install one, e.g. `sudo apt-get install -y openjdk-17-jre-headless` "
    "(Debian/Ubuntu), `brew install openjdk@17` (macOS) or `conda install -c conda-forge "
    "openjdk=17`, then check `java -version`."
)

#: What a step after done answers (ScienceWorld itself would play on).
EPISODE_OVER = "The task is finished: the episode is over."

_LAUNCH_LOCK = threading.Lock()


class JavaNotFoundError(RuntimeError):
    """ScienceWorld needs Java and there is none."""


def find_java() -> str | None:
    """The `java` executable on PATH, else in $JAVA_HOME/bin, else None."""
    java = shutil.which("java")
    if java:
        return java
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = os.path.join(home, "bin", "java")
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def _jvm_options(java: str, options: list[str]):
    """Make the `scienceworld` package start its JVM with `java` and extra `options`.

    The package calls py4j's `launch_gateway` without JVM options; this wraps that function in
    the package's module for the duration of one start.
    """
    import scienceworld.scienceworld as package

    original = package.launch_gateway

    def launch(*args: Any, **kwargs: Any):
        kwargs["javaopts"] = [*options, *kwargs.get("javaopts", [])]
        kwargs["java_path"] = java
        return original(*args, **kwargs)

    with _LAUNCH_LOCK:
        package.launch_gateway = launch
        try:
            yield
        finally:
            package.launch_gateway = original


def parse_task_id(task_id: str) -> tuple[str, int]:
    """ "boil:3", "1-1:3" or "task-1-boil:3" -> ("boil", 3); UnknownTaskError otherwise."""
    text = str(task_id).strip()
    name, sep, variation = text.rpartition(":")
    if not sep:
        raise UnknownTaskError(
            f"unknown ScienceWorld task id {task_id!r}: write '<task>:<variation>', e.g. 'boil:3' "
            "or '1-1:3' (see ScienceWorldEnv.task_ids('train'|'test'))"
        )
    name = CODES.get(name, name)
    if name not in TASKS:
        try:
            from scienceworld.utils import infer_task

            name = infer_task(name)
        except ImportError:
            pass
    if name not in TASKS:
        raise UnknownTaskError(
            f"unknown ScienceWorld task {name!r} in task id {task_id!r}; tasks: "
            + ", ".join(f"{code} {n}" for n, (code, *_r) in TASKS.items())
        )
    total = TASKS[name][1]
    if not variation.isdigit() or int(variation) >= total:
        raise UnknownTaskError(
            f"unknown variation {variation!r} in ScienceWorld task id {task_id!r}: {name} has "
            f"variations 0 to {total - 1}"
        )
    return name, int(variation)


def _spread(start: int, stop: int, cap: int | None) -> list[int]:
    """`cap` evenly spaced values of range(start, stop) (all of them when cap is None)."""
    n = stop - start
    if cap is None or cap >= n:
        return list(range(start, stop))
    return [start + (i * n) // cap for i in range(cap)]


class ScienceWorldEnv(Environment):
    """ScienceWorld's 30 tasks and their variations.

    **Task ids** are ``"<task name>:<variation>"``, e.g. ``"boil:3"``; ``reset`` also takes the
    task code (``"1-1:3"``). **Splits** come from ScienceWorld's own variation splits: `train`
    is every train variation of every task (3,592, or `train_per_task` evenly spaced ones per
    task); `test` is `test_per_task` evenly spaced variations of each task's test variations
    (default 5: 149 tasks; None: all 1,819). The dev variations are in neither.

    **Observations**: the first one is the task description, a newline, then ``look around``'s
    answer (AgentGym's format). **Reward** is the task score / 100 after each step, in [0, 1];
    done when the task is completed, or failed: a negative score (e.g. focusing on a wrong
    object) ends the episode with reward 0. With `step_limit`, done also after that many moves.
    `raw_score` is ScienceWorld's own score after the last step, -100 (failed) to 100, which
    AgentGym's server answers as `score`. A step after done plays nothing: it answers
    `EPISODE_OVER` with the final reward, done (as TextCraft does).

    **The JVM**: each instance starts its own on the first `reset` (about a second), with the
    heap capped by `max_heap` (default "1g"); `close()` stops it. Java must be installed
    (`JavaNotFoundError` says how otherwise). `clone()` is reset-and-replay on a new instance
    (a new JVM): re-use instances where you can.

    **Expert**: `expert_actions(task_id)` is ScienceWorld's gold action path (generating it can
    take seconds on some tasks; cached). The task may complete before its last action (paths
    often end with "wait1" or "look around"): stop at done. If an episode is in progress on this
    instance, it is restored afterwards by replay.

    **Determinism**: the simulator is not fully deterministic across a JVM's history (e.g. in
    "power-component" the same actions complete the task one "wait1" earlier or later depending
    on what the JVM ran before), so a replayed clone can, rarely, differ from its original.

    Args:
        test_per_task: cap on test variations per task (None: all).
        train_per_task: cap on train variations per task (None: all).
        tasks: only these tasks (names or codes); default all 30.
        simplifications: ScienceWorld's simplification string, e.g. "easy".
        step_limit: end an episode after this many moves (None: no limit here; the agent's
            turn limit applies).
        max_heap: the JVM's -Xmx.
    """

    name: ClassVar[str] = "sciworld"
    cheap_clone: ClassVar[bool] = False

    def __init__(
        self,
        test_per_task: int | None = 5,
        train_per_task: int | None = None,
        tasks: list[str] | None = None,
        simplifications: str = "",
        step_limit: int | None = None,
        max_heap: str = "1g",
    ) -> None:
        super().__init__()
        self.test_per_task = test_per_task
        self.train_per_task = train_per_task
        if tasks is not None:
            tasks = [CODES.get(t, t) for t in tasks]
            unknown = [t for t in tasks if t not in TASKS]
            if unknown:
                raise ValueError(f"unknown ScienceWorld tasks {unknown}; tasks: {', '.join(TASKS)}")
        self.tasks = list(tasks) if tasks is not None else list(TASKS)
        self.simplifications = simplifications
        self.step_limit = step_limit
        self.max_heap = max_heap
        self._sim: Any = None  # scienceworld.ScienceWorldEnv, started on first use
        self._gold: dict[str, list[str]] = {}
        self.task_description = ""
        self.raw_score = 0
        self._final: float | None = None  # the reward that ended the episode

    # ---- Environment API ---------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        return INSTRUCTION

    def task_ids(self, split: str) -> list[str]:
        self.check_split(split)
        ids = []
        for name in self.tasks:
            _code, total, train_end, dev_end = TASKS[name]
            if split == "train":
                variations = _spread(0, train_end, self.train_per_task)
            else:
                variations = _spread(dev_end, total, self.test_per_task)
            ids += [f"{name}:{v}" for v in variations]
        return ids

    def spawn(self) -> ScienceWorldEnv:
        return ScienceWorldEnv(
            self.test_per_task,
            self.train_per_task,
            self.tasks,
            self.simplifications,
            self.step_limit,
            self.max_heap,
        )

    def _reset(self, task_id: str) -> str:
        name, variation = parse_task_id(task_id)
        sim = self.simulator()
        sim.load(name, variation, self.simplifications, generateGoldPath=False)
        self.task_description = str(sim.server.getTaskDescription())
        look = str(sim.server.step("look around"))
        self.raw_score, self._final = 0, None
        return f"{self.task_description}\n{look}"

    def _step(self, action: str) -> tuple[str, float, bool]:
        if self._final is not None:
            return EPISODE_OVER, self._final, True
        server = self.simulator().server
        observation = str(server.step(str(action)))
        self.raw_score = int(round(100 * server.getScore()))
        reward = min(max(self.raw_score, 0), 100) / 100.0
        done = self.raw_score < 0 or bool(server.getCompleted())
        if self.step_limit is not None and server.getNumMoves() > self.step_limit:
            done = True
        if done:
            self._final = reward
        return observation, reward, done

    def reset(self, task_id: str) -> str:
        observation = super().reset(task_id)
        name, variation = parse_task_id(task_id)
        self.task_id = f"{name}:{variation}"
        return observation

    def expert_actions(self, task_id: str) -> list[str]:
        name, variation = parse_task_id(task_id)
        key = f"{name}:{variation}"
        if key not in self._gold:
            sim = self.simulator()
            sim.load(name, variation, self.simplifications, generateGoldPath=True)
            self._gold[key] = [str(a) for a in sim.get_gold_action_sequence()]
            if self.task_id is not None:  # put the interrupted episode back
                current, actions, done = self.task_id, list(self.actions), self.done
                self._reset(current)
                for action in actions:
                    self._step(action)
                self.actions, self.done = actions, done
        return list(self._gold[key])

    def close(self) -> None:
        sim, self._sim = self._sim, None
        if sim is not None:
            with contextlib.suppress(Exception):
                sim.close()

    # ---- the simulator -----------------------------------------------------------------------
    def simulator(self) -> Any:
        """The `scienceworld.ScienceWorldEnv`, started (JVM and all) on first use."""
        if self._sim is None:
            java = find_java()
            if java is None:
                raise JavaNotFoundError(JAVA_HELP)
            try:
                import scienceworld
            except ImportError:
                raise ImportError(
                    "ScienceWorldEnv needs the `scienceworld` package: "
                    "pip install 'agentr[sciworld]'"
                ) from None
            try:
                with _jvm_options(java, [f"-Xmx{self.max_heap}"]):
                    self._sim = scienceworld.ScienceWorldEnv("", envStepLimit=10**9)
            except Exception as error:
                raise RuntimeError(
                    f"could not start ScienceWorld's JVM with {java} (-Xmx{self.max_heap}): "
                    f"{error}. Check that `{java} -version` works (Java 17 recommended)."
                ) from error
        return self._sim

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
