"""The trained weights in Hugging Face format: a PEFT adapter directory (LoRA) or a whole model."""

from __future__ import annotations

from pathlib import Path

from agentr.training.fsdp import clean_name


def _adapter_key(name: str, adapter_name: str = "default") -> str:
    """`model.base_model.model.<module>.lora_A.default.weight` -> PEFT's file key (no adapter name)."""
    name = clean_name(name).removeprefix("model.")
    return name.replace(f".{adapter_name}.", ".")


def _base_name(requested: str, resolved: str) -> str:
    """What adapters record as their base: the Hub id the user gave, else the resolved directory."""
    requested = str(requested)
    is_hub_id = requested.count("/") == 1 and not Path(requested).expanduser().exists() and not requested.endswith(".gguf")
    return requested if is_hub_id else str(Path(resolved).resolve())
