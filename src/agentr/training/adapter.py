"""The trained weights in Hugging Face format: a PEFT adapter directory (LoRA) or a whole model.

The adapter is written here rather than by `PeftModel.save_pretrained`, which finds adapter
weights by module name and so finds none in an FSDP-wrapped model: the trainable entries of the
state dict (gathered unit by unit under FSDP, `agentr.training.fsdp.gather_trainable`) are
written as PEFT would write them.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl

from agentr.training.fsdp import clean_name, gather_trainable


def save_weights(module: pl.LightningModule, path: str | os.PathLike, trainable: set[str]) -> Path:
    """Write `module`'s weights in Hugging Face format to directory `path` and return it.

    LoRA: a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`) that
    `PeftModel.from_pretrained` and vLLM's LoRA loader read; its `base_model_name_or_path`
    is the `model` given (a Hub id stays an id); `trainable` names its weights. Full
    fine-tuning: the whole model and its tokenizer. Under a distributed strategy every rank must
    call this (the weights are gathered); rank 0 writes.
    """
    path = Path(path)
    trainer = module._trainer
    if trainer is not None:
        state_dict = gather_trainable(trainer.strategy.model) if not module.hparams.full_finetune else None
        if state_dict is None:
            state_dict = trainer.strategy.lightning_module_state_dict()
        is_writer = trainer.is_global_zero
    else:
        state_dict, is_writer = module.state_dict(), True
    if is_writer:
        path.mkdir(parents=True, exist_ok=True)
        if module.hparams.full_finetune:
            from transformers import AutoTokenizer

            from agentr.engines.models import resolve_model

            inner = {k[len("model."):]: v for k, v in state_dict.items() if k.startswith("model.")}
            module.model.save_pretrained(path, state_dict=inner, safe_serialization=True)
            AutoTokenizer.from_pretrained(resolve_model(module.hparams.model)).save_pretrained(path)
        else:
            _write_adapter(path, state_dict, trainable, module.model.peft_config["default"])
    if trainer is not None:
        trainer.strategy.barrier("agentr_save_adapter")
    return path


def _write_adapter(path: Path, state_dict: dict, trainable: set[str], config) -> None:
    """The `trainable` entries of a full state dict, written as PEFT would write them, with the
    adapter's PEFT `config`."""
    from safetensors.torch import save_file

    adapter = {_adapter_key(k): v.detach().contiguous().cpu() for k, v in state_dict.items()
               if clean_name(k) in trainable}
    if not adapter:
        raise RuntimeError("no adapter weights in the model's state dict")
    save_file(adapter, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(path))


def _adapter_key(name: str, adapter_name: str = "default") -> str:
    """`model.base_model.model.<module>.lora_A.default.weight` -> PEFT's file key (no adapter name)."""
    name = clean_name(name).removeprefix("model.")
    return name.replace(f".{adapter_name}.", ".")


def base_name(requested: str, resolved: str) -> str:
    """What adapters record as their base: the Hub id the user gave, else the resolved directory."""
    requested = str(requested)
    is_hub_id = requested.count("/") == 1 and not Path(requested).expanduser().exists() and not requested.endswith(".gguf")
    return requested if is_hub_id else str(Path(resolved).resolve())
