"""Phase II training: the LoRA SFT LightningModule, packed attention and the FSDP strategy."""

from agentr.training.fsdp import AgentRFSDPStrategy
from agentr.training.module import AgentRModule, default_precision

__all__ = ["AgentRFSDPStrategy", "AgentRModule", "default_precision"]
