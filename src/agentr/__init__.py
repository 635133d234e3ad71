"""agentr: Agent-R (iterative self-training on MCTS revision trajectories) on Lightning."""

__version__ = "0.1.0"
