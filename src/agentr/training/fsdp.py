"""Multi-GPU training with Lightning's FSDP, set up for LoRA on a Hugging Face decoder.

`AgentRFSDPStrategy` is Lightning's `FSDPStrategy` with agentr's defaults:

- each decoder layer is its own FSDP unit (transformers' `GradientCheckpointingLayer`
  subclasses, plus any class the model lists in `_no_split_modules`), so only one layer's full
  weights exist at a time; embeddings, final norm and LM head live in the root unit;
- `use_orig_params=True`: a LoRA layer's flat parameter mixes frozen base weights and trainable
  adapters, which FSDP only allows with the original parameters exposed (and the optimizer then
  sees the adapters by name);
- the module loads the base in float32 under FSDP (`AgentRModule(dtype="auto")`), since one flat
  parameter must have one dtype; compute runs in bf16 with `precision="bf16-mixed"`;
- `state_dict_type="full"`: checkpoints are one file gathered on rank 0, which
  `AgentRModule.on_save_checkpoint` reduces to the adapter weights.

Use it from a config (see `configs/`):

    trainer:
      devices: 8
      precision: bf16-mixed
      strategy:
        class_path: agentr.training.fsdp.AgentRFSDPStrategy
        init_args: {activation_checkpointing: true}
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy


def is_decoder_layer(module: torch.nn.Module, extra_names: frozenset[str] = frozenset()) -> bool:
    """Whether `module` is a transformer decoder layer (one FSDP unit / checkpointing unit)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers
        GradientCheckpointingLayer = ()  # noqa: N806
    return isinstance(module, GradientCheckpointingLayer) or type(module).__name__ in extra_names


def decoder_layer_policy(extra_names: tuple[str, ...] = ()):
    """An FSDP auto-wrap policy that wraps every decoder layer (see `is_decoder_layer`)."""
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    return functools.partial(
        lambda_auto_wrap_policy,
        lambda_fn=functools.partial(is_decoder_layer, extra_names=frozenset(extra_names)),
    )


class AgentRFSDPStrategy(FSDPStrategy):
    """Lightning FSDP with decoder-layer wrapping and LoRA-safe defaults (see the module docstring).

    Args:
        sharding_strategy: "FULL_SHARD" (ZeRO-3), "SHARD_GRAD_OP" (ZeRO-2), "NO_SHARD" or
            "HYBRID_SHARD".
        activation_checkpointing: recompute each decoder layer's activations in the backward.
        layer_class_names: class names to wrap besides transformers' decoder layers (for
            models whose layers do not subclass `GradientCheckpointingLayer`).
        cpu_offload: keep parameters and gradients on the CPU between uses.
        **kwargs: further `FSDPStrategy` / `FullyShardedDataParallel` arguments.
    """

    strategy_name = "agentr_fsdp"

    def __init__(
        self,
        sharding_strategy: str = "FULL_SHARD",
        activation_checkpointing: bool = False,
        layer_class_names: list[str] | None = None,
        cpu_offload: bool = False,
        **kwargs: Any,
    ) -> None:
        policy = decoder_layer_policy(tuple(layer_class_names or ()))
        kwargs.setdefault("use_orig_params", True)
        kwargs.setdefault("state_dict_type", "full")
        super().__init__(
            auto_wrap_policy=policy,
            activation_checkpointing_policy=policy if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            cpu_offload=cpu_offload,
            **kwargs,
        )

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Lightning passes FSDP no device on CPU, which torch refuses; name the CPU explicitly there."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self.root_device.type != "cpu" or any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)
        from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing

        model = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return model

    # On CPU, FSDP's full state dict with offload_to_cpu=True (Lightning's setting) frees the
    # gathered tensors it hands out, and the clone that follows segfaults. Gather without offload.
    def lightning_module_state_dict(self) -> dict[str, Any]:
        with self._cpu_safe_full_state_dict():
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer) -> dict[str, Any]:
        with self._cpu_safe_full_state_dict():
            return super().optimizer_state(optimizer)

    @contextlib.contextmanager
    def _cpu_safe_full_state_dict(self) -> Iterator[None]:
        if self.root_device.type != "cpu":
            yield
            return
        import lightning.pytorch.strategies.fsdp as lightning_fsdp
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.api import FullOptimStateDictConfig

        def context(module, world_size, rank0_only=True):
            return FSDP.state_dict_type(
                module, StateDictType.FULL_STATE_DICT,
                FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
            )

        original = lightning_fsdp._get_full_state_dict_context
        lightning_fsdp._get_full_state_dict_context = context
        try:
            yield
        finally:
            lightning_fsdp._get_full_state_dict_context = original
