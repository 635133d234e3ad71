"""Multi-GPU training with Lightning's FSDP, set up for LoRA on a Hugging Face decoder.

`AgentRFSDPStrategy` is Lightning's `FSDPStrategy` with agentr's defaults:

- each decoder layer is its own FSDP unit (transformers' `GradientCheckpointingLayer`
  subclasses, plus any class the model lists in `_no_split_modules`), so only one layer's full
  weights exist at a time; embeddings, final norm and LM head live in the root unit;
- every module whose own weights are trainable (a LoRA `lora_A`/`lora_B` linear) is an FSDP unit
  of its own, so frozen and trainable weights never share a flat parameter: gradients and
  optimizer state exist for the adapters only, the frozen base can stay in bf16 while the
  adapters are float32 (one dtype per flat parameter), and saving an adapter gathers the
  adapter units alone (`AgentRModule.save_adapter`);
- `use_orig_params=True`, so the optimizer sees the adapters by name;
- LoRA layers keep their input's dtype (`keep_input_dtype`), so activation checkpointing
  recomputes exactly what the forward computed;
- buffers stay float32 under `precision="bf16-mixed"` (Lightning casts them to bf16 by default,
  rotary `inv_freq` included, and bf16 positions disagree with vLLM's on long trajectories);
- gradient clipping by norm goes through FSDP's own `clip_grad_norm_`, which reduces the norm
  over the shards (`AgentRModule.configure_gradient_clipping`; Lightning's FSDP precision plugin
  refuses norm clipping through its default hook);
- checkpoints are one file written by rank 0: with a frozen base, they hold the trainable
  units alone, gathered one unit at a time (the frozen base is never gathered; it is reloaded
  from the model on resume); with full fine-tuning, the full state dict (`state_dict_type="full"`).

Activation checkpointing has one switch: `AgentRModule(gradient_checkpointing=True)` (works
with every strategy), or this strategy's `activation_checkpointing`; the module refuses both.

Use it from a config (see `configs/`):

    trainer:
      devices: 8
      precision: bf16-mixed
      strategy:
        class_path: agentr.training.fsdp.AgentRFSDPStrategy
        init_args:
          sharding_strategy: FULL_SHARD

(`strategy` given as a bare class path is not a class to Lightning: it reads any string as a
registered strategy name.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy

#: Prefixes that FSDP and activation checkpointing add to parameter names.
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def is_decoder_layer(module: torch.nn.Module, extra_names: frozenset[str] = frozenset()) -> bool:
    """Whether `module` is a transformer decoder layer (one FSDP unit / checkpointing unit)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # older transformers
        GradientCheckpointingLayer = ()  # noqa: N806
    return isinstance(module, GradientCheckpointingLayer) or type(module).__name__ in extra_names


def has_trainable_weights(module: torch.nn.Module) -> bool:
    """Whether `module` holds parameters of its own and all of them train (a LoRA A/B linear)."""
    own = list(module.parameters(recurse=False))
    return bool(own) and all(p.requires_grad for p in own)


def _is_unit(module: torch.nn.Module, extra_names: frozenset[str], split_trainable: bool) -> bool:
    return is_decoder_layer(module, extra_names) or (split_trainable and has_trainable_weights(module))


def unit_policy(extra_names: tuple[str, ...] = (), split_trainable: bool = False):
    """An auto-wrap policy that picks every decoder layer (see `is_decoder_layer`) and, with
    `split_trainable` (FSDP units of a model with frozen weights), every module inside whose own
    weights all train, so that frozen and trainable weights never share a flat parameter.
    Without it: the activation-checkpointing units."""
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    return functools.partial(
        lambda_auto_wrap_policy,
        lambda_fn=functools.partial(_is_unit, extra_names=frozenset(extra_names),
                                    split_trainable=split_trainable),
    )


def checkpoints_activations(strategy: Any) -> bool:
    """Whether `strategy` (a Lightning FSDP strategy) applies activation checkpointing itself."""
    return bool(getattr(strategy, "_activation_checkpointing_kwargs", None))


def restore_frozen_parameters(model: torch.nn.Module) -> None:
    """Register the original parameters of frozen unsharded FSDP units again after a backward.

    Under `NO_SHARD` (which torch picks for any sharding strategy at world size 1) with
    `use_orig_params=True`, the backward turns a unit's parameters into plain tensors, and only
    the unit's post-backward hook turns them back. A unit with no trainable weight (the frozen
    base next to LoRA units) gets no gradient, so the hook never fires; the next forward then
    takes the tensors for the parameters and fails on tied weights (`as_params=True
    type(prim_param)=Tensor`). Sharded units are put back by FSDP itself.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    for unit in FullyShardedDataParallel.fsdp_modules(model):
        handle = unit._handle
        if (handle is not None and handle._use_orig_params and not handle.uses_sharded_strategy
                and not handle.flat_param.requires_grad):
            handle._use_sharded_views()  # NO_SHARD: the unsharded views, as parameters


def clean_name(name: str) -> str:
    """A parameter's name without the prefixes that FSDP and activation checkpointing add."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def gather_trainable(root: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable weights of an FSDP-wrapped model with a frozen base, by clean name, on CPU
    (None: `root` is no such model).

    `AgentRFSDPStrategy` gives every module whose weights all train a unit of its own, so this
    gathers those units one at a time and never the frozen base. Every rank must call it.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if not isinstance(root, FSDP) or all(p.requires_grad for p in root.parameters()):
        return None
    units = [(name, unit) for name, unit in root.named_modules()
             if isinstance(unit, FSDP) and unit is not root
             and all(p.requires_grad for p in unit.parameters())]
    gathered = {}
    for name, unit in units:  # the same order on every rank: one collective per unit
        with FSDP.summon_full_params(unit, writeback=False):
            for param_name, param in unit.named_parameters():
                gathered[clean_name(f"{name}.{param_name}")] = param.detach().clone().cpu()
    return gathered


def keep_input_dtype(model: torch.nn.Module) -> None:
    """Stop PEFT's LoRA layers from casting their input to the adapter weights' dtype.

    Under FSDP that dtype depends on when it is read: float32 (the sharded master weights) in
    the forward, bfloat16 (the unsharded compute copy) when activation checkpointing recomputes
    the layer in the backward. LoRA dropout then saves tensors of two dtypes and the recompute
    is refused ("Recomputed values ... have different metadata"). The adapter units cast their
    inputs to the compute dtype themselves (`cast_forward_inputs`), so PEFT's cast is not needed.
    """
    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False


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
        self.layer_class_names = tuple(layer_class_names or ())
        names = self.layer_class_names
        kwargs.setdefault("use_orig_params", True)
        kwargs.setdefault("state_dict_type", "full")
        super().__init__(
            auto_wrap_policy=unit_policy(names),  # chosen per model in _setup_model
            activation_checkpointing_policy=unit_policy(names) if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            cpu_offload=cpu_offload,
            **kwargs,
        )

    @property
    def mixed_precision_config(self):
        """Lightning's mixed precision for the Trainer's `precision`, with float32 buffers, and
        each unit's floating inputs cast to the compute dtype.

        The cast matters where Lightning's autocast does not run (it autocasts on CUDA only): a
        LoRA layer hands its float32 input to an adapter unit whose weights FSDP cast to bf16.
        A `mixed_precision` given to the strategy is used as it is.
        """
        config = super().mixed_precision_config
        if self.mixed_precision or config is None:
            return config
        return dataclasses.replace(config, buffer_dtype=torch.float32,
                                   cast_forward_inputs=config.param_dtype != torch.float32)

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap with the policy this model needs (trainable units apart when some weights are
        frozen). Lightning passes FSDP no device on CPU, which torch refuses; name the CPU there."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        if "auto_wrap_policy" in self.kwargs:
            frozen = any(not p.requires_grad for p in model.parameters())
            self.kwargs["auto_wrap_policy"] = unit_policy(self.layer_class_names, split_trainable=frozen)
        mixed = self.mixed_precision_config
        if mixed is not None and mixed.cast_forward_inputs:
            keep_input_dtype(model)
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

    def post_backward(self, closure_loss: torch.Tensor) -> None:
        super().post_backward(closure_loss)
        restore_frozen_parameters(self.model)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The weights a checkpoint keeps: with a frozen base (LoRA), the trainable units alone,
        gathered unit by unit (`gather_trainable`), so no rank ever holds the whole model; else
        the full state dict, gathered on rank 0."""
        trainable = gather_trainable(self.model)
        if trainable is not None:
            return trainable
        with self._cpu_safe_full_state_dict():
            return super().lightning_module_state_dict()

    # On CPU, FSDP's full state dict with offload_to_cpu=True (Lightning's setting) frees the
    # gathered tensors it hands out, and the clone that follows segfaults. Gather without offload.
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
