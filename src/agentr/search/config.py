"""Settings of Phase I: tree search, pairing, critique and what the dataset keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentr.errors import check_range
from agentr.old_spellings import check_search_mode

MODES = ("agent_r", "optimal")
TRANSITIONS = ("model", "end", "oracle")
VERDICT_POLICIES = ("parsed", "parsed_then_forced", "forced")


@dataclass
class SearchConfig:
    """How Phase I searches each task and which trajectories it keeps.

    Attributes:
        num_simulations: descents from the root per tree (the official code's ITERA). Each
            descent expands every node it reaches until it stands on a node whose children are
            all terminal; the search stops early when the root itself becomes terminal.
        n_expand: candidate replies sampled per expansion, drawn in one request (n=n_expand).
            Replies whose text duplicates a sibling's are dropped.
        c_uct: exploration constant c of UCT, `W/N + c * sqrt(ln N_parent / N)`.
        max_depth: a child at this depth (assistant turns from the root) is terminal.
        temperature: sampling temperature of expansions (the verifier is always greedy).
        max_tokens: new tokens per sampled reply.
        beta: a (good, bad) pair needs `r(good) - r(bad) > beta`. The other threshold of the
            pairing rule, alpha (a good path's reward), rises from iteration to iteration, so it
            is a schedule of the iteration loop (`AgentRIterations.alpha`), or `--alpha` of
            `agentr collect`; both reach `agentr.search.pairing` together.
        max_pairs_per_task: revision trajectories kept per task, after a seeded shuffle of all
            qualifying pairs (0 keeps none).
        include_good: also write every good path (`r >= alpha`) as a "good" trajectory with all
            assistant turns trained. Mode "optimal" always writes them.
        max_good_per_task: good trajectories kept per task, the shortest first (None: all).
            Sampled successes can carry redundant repeated actions, and many of them teach a
            small model dead loops (the README's quickstart results).
        mode: "agent_r": revision trajectories (t' chosen by `transition`), plus good ones where
            `include_good`; "optimal": good paths only, and only perfect ones (reward 1,
            whatever alpha says: the paper's optimal baseline), no revision trajectories. (The
            Direct-Revision baseline, formerly mode "direct_revision", is `transition: end`.)
        transition: where the transition point t' of a bad path comes from. "model": the first
            step the policy itself judges Bad, else the end of the bad path (Agent-R);
            "end": the end of the bad path (the paper's Direct-Revision baseline); "oracle":
            the first step after the divergence that the environment labels a mistake
            (`Environment.label_mistakes`; an upper bound for a perfect critic), else the end.
        verdict: how the policy's verdicts are obtained under `transition: model`. "parsed":
            reasons, then a `Judgment:` line parsed from the reply (none counts as Uncertain);
            "parsed_then_forced": the same, and a reply without a verdict is continued with
            `Judgment:` and the model's most likely verdict taken; "forced": the verdict alone,
            by the model's log-probabilities, without reasons (the cheapest).
        calibrate_verdicts: a forced verdict is Bad when the log-probability of Bad rose more
            above its value for a step with no content (task, action and observation all
            "N/A") than that of Good-or-Uncertain did, not when Bad is simply the most likely.
            A small model puts most of its mass on one verdict word whatever the step; the
            content-free baseline divides that prior out (contextual calibration, Zhao et al.,
            2021). False: the most likely verdict. Parsed verdicts are never changed.
        critique_max_tokens: new tokens per verifier answer (reasons first, then the judgment;
            unused under `verdict: forced`).
        max_concurrent_trees: trees searched together; bounds the engine batch and so the KV
            cache it needs. Each batched engine call carries at most this many conversations.
    """

    num_simulations: int = 8
    n_expand: int = 4
    c_uct: float = 0.25
    max_depth: int = 20
    temperature: float = 1.0
    max_tokens: int = 128
    beta: float = 0.2
    max_pairs_per_task: int = 4
    include_good: bool = True
    max_good_per_task: int | None = None
    mode: Literal["agent_r", "optimal"] = "agent_r"
    transition: Literal["model", "end", "oracle"] = "model"
    verdict: Literal["parsed", "parsed_then_forced", "forced"] = "parsed_then_forced"
    calibrate_verdicts: bool = True
    critique_max_tokens: int = 256
    max_concurrent_trees: int = 32

    def __post_init__(self) -> None:
        check_search_mode(self.mode)
        if self.mode not in MODES:
            raise ValueError(f"unknown search mode {self.mode!r}; expected one of {MODES}")
        if self.transition not in TRANSITIONS:
            raise ValueError(f"SearchConfig.transition must be one of {TRANSITIONS}, got {self.transition!r}")
        if self.verdict not in VERDICT_POLICIES:
            raise ValueError(f"SearchConfig.verdict must be one of {VERDICT_POLICIES}, got {self.verdict!r}")
        for name in ("num_simulations", "n_expand", "max_depth", "max_tokens",
                     "critique_max_tokens", "max_concurrent_trees"):
            check_range(f"search.{name}", getattr(self, name), 1)
        check_range("search.max_good_per_task", self.max_good_per_task, 0, optional=True)
        check_range("search.max_pairs_per_task", self.max_pairs_per_task, 0)
        check_range("search.c_uct", self.c_uct, 0)
        check_range("search.temperature", self.temperature, 0)
        check_range("search.beta", self.beta, 0, 1, high_open=True)


def output_settings(settings: dict) -> dict:
    """The entries of a `SearchConfig` (as `dataclasses.asdict` gives it) that can change
    Phase I's output: the concurrency bound never does, the critique's settings only where the
    policy's own critique places t' (mode "agent_r", transition "model"), `calibrate_verdicts`
    only where verdicts may be forced, the pairing only in mode "agent_r", and the good-path cap
    only where good paths are written. A resumed Phase I compares these alone."""
    out = {k: v for k, v in settings.items() if k != "max_concurrent_trees"}
    agent_r = out.get("mode", "agent_r") == "agent_r"
    if not agent_r or out.get("transition", "model") != "model":
        for key in ("verdict", "calibrate_verdicts", "critique_max_tokens"):
            out.pop(key, None)
    elif out.get("verdict") == "parsed":
        out.pop("calibrate_verdicts", None)
    elif out.get("verdict") == "forced":
        out.pop("critique_max_tokens", None)  # the verdict alone, without reasons
    if not agent_r:  # good paths only, always written
        for key in ("beta", "max_pairs_per_task", "include_good"):
            out.pop(key, None)
    elif not out.get("include_good", True):
        out.pop("max_good_per_task", None)
    return out
