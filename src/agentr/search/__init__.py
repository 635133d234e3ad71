"""Phase I of Agent-R: MCTS with the current policy, path pairing, model-guided critique and
splicing of revision trajectories."""

from agentr.search.config import SearchConfig
from agentr.search.critique import parse_judgment
from agentr.search.mcts import Node, SearchTree, backup, select_child
from agentr.search.pairing import Pair, leaf_paths, make_pairs
from agentr.search.splicing import REVISION_SIGNALS, good_conversation, splice

__all__ = [
    "REVISION_SIGNALS",
    "Node",
    "Pair",
    "SearchConfig",
    "SearchTree",
    "backup",
    "good_conversation",
    "leaf_paths",
    "make_pairs",
    "parse_judgment",
    "select_child",
    "splice",
]
