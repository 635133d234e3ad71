"""Old spellings refused with their new one named: an old config or subclass would otherwise
fail obscurely (a mode) or be ignored silently (an override). Both go at agentr 0.2.0."""

from __future__ import annotations


def check_search_mode(mode: str) -> None:
    """Refuse `SearchConfig.mode` "direct_revision", which is `transition: end` now."""
    if mode == "direct_revision":
        raise ValueError(
            "SearchConfig.mode 'direct_revision' was replaced by transition: 'end' "
            "(Direct-Revision: t' = the end of the bad path); set mode: agent_r, transition: end")


def check_datamodule_class(cls: type) -> None:
    """Refuse an `expert_thought` defined on a DataModule subclass: the expert's thoughts are the
    environment's now, so the override would be ignored."""
    if "expert_thought" in vars(cls):
        raise TypeError(
            f"{cls.__qualname__}.expert_thought: the expert's thoughts are the environment's "
            "now; define `expert_thought(actions, step)` on your Environment subclass instead "
            "(see agentr.envs.base.Environment.expert_thought)")
