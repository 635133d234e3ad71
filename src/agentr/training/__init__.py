"""Phase II training: the LoRA SFT LightningModule, packed attention and the FSDP strategy."""

from agentr.training.fsdp import AgentRFSDPStrategy
from agentr.training.module import AgentRModule

__all__ = ["AgentRFSDPStrategy", "AgentRModule"]
