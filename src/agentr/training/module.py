"""`AgentRModule`: supervised fine-tuning of a causal LM on the trained turns of agent trajectories.

The model is a Hugging Face causal LM (resolved like the engines resolve it) wrapped with a PEFT
LoRA adapter, or fully fine-tuned with `full_finetune=True`. The loss is the cross-entropy on
exactly the tokens whose label is not -100 (see `agentr.data.tokenize`), averaged over those
tokens in the batch. Logits are computed only at the positions that predict a trained token:
the hidden states are sliced before the LM head (`logits_to_keep`), which on an agent
trajectory skips most of the vocabulary projection and its memory.

Batches come from `agentr.data.packing`: one packed row with `position_ids` restarting per
conversation and `doc_lens` (attention stays within each conversation), or right-padded rows.

Checkpoints: Lightning checkpoints hold the trainable weights only (the LoRA adapter, not the
frozen base model, which is reloaded from `model` on resume) and the digest of the base model's
weights (`agentr.provenance`): a run resumed on other base weights, even of the same shape, is
refused. `save_adapter(path)` writes a PEFT adapter directory that `peft` and vLLM load.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, Metric

from agentr.data.tokenize import IGNORE_INDEX
from agentr.engines.models import SMOLLM2_ID
from agentr.errors import ProvenanceError, check_range
from agentr.training.adapter import base_name, save_weights
from agentr.training.fsdp import clean_name
from agentr.training.optim import param_groups, warmup_cosine

log = logging.getLogger(__name__)

class Perplexity(Metric):
    """exp(mean negative log-likelihood per token), from summed NLL and token counts."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("nll", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_sum: torch.Tensor, tokens: torch.Tensor | int) -> None:
        self.nll += nll_sum.detach().to(torch.float64)
        self.tokens += int(tokens)

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll / self.tokens.clamp(min=1))


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct names (last path component) of the linear layers of `model`, LM head excluded.

    This is what PEFT's "all-linear" means; agentr writes the names out so that adapter configs
    list plain module names ("q_proj", ...), which vLLM's LoRA loader matches.
    """
    head = model.get_output_embeddings()
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and module is not head}
    return sorted(names)


def _bf16_supported() -> bool:
    """bf16 matmuls in hardware: a CUDA GPU that has them, or a CPU with AVX512-BF16 or AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class AgentRModule(pl.LightningModule):
    """LoRA (or full) supervised fine-tuning on the trained assistant turns of trajectories.

    Args:
        model: the base model: a Hugging Face id, a local directory or a `.gguf` file
            (resolved by `agentr.engines.models.resolve_model`, like the engines).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r).
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: modules that get adapters: "all-linear" (every linear layer but
            the LM head), or a list of module names such as ["q_proj", "v_proj"].
        full_finetune: train every weight instead of a LoRA adapter.
        learning_rate: peak AdamW learning rate (LoRA typically 1e-4..3e-4; full fine-tuning ~2e-5).
        weight_decay: AdamW weight decay on matrices (not on biases and norms).
        warmup_ratio: fraction of the schedule spent warming up linearly.
        min_lr_ratio: the cosine ends at learning_rate * min_lr_ratio.
        gradient_checkpointing: recompute each layer's activations in the backward pass (far less
            memory for long packed rows, one more forward of compute). The one switch for it:
            a strategy that checkpoints activations too is refused.
        trust_remote_code: allow model code from the Hub.
        dtype: dtype of the loaded weights: "auto" is bfloat16 for a frozen LoRA base where
            bf16 is fast (adapters stay float32, in FSDP units of their own under
            `AgentRFSDPStrategy`; train with precision "bf16-mixed"), float32 for full
            fine-tuning; or "bfloat16", "float16", "float32".
        attn_implementation: "auto" is agentr's per-conversation SDPA for packed rows
            (`agentr.training.attention`); or any transformers name ("sdpa", "eager",
            "flash_attention_2").
    """

    def __init__(
        self,
        model: str = SMOLLM2_ID,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        lora_target_modules: str | list[str] = "all-linear",
        full_finetune: bool = False,
        learning_rate: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        dtype: str = "auto",
        attn_implementation: str = "auto",
    ) -> None:
        super().__init__()
        check_range("model.lora_r", lora_r, 1)
        check_range("model.lora_alpha", lora_alpha, 0, low_open=True)
        check_range("model.lora_dropout", lora_dropout, 0, 1, high_open=True)
        check_range("model.learning_rate", learning_rate, 0, low_open=True)
        check_range("model.weight_decay", weight_decay, 0)
        check_range("model.warmup_ratio", warmup_ratio, 0, 1)
        check_range("model.min_lr_ratio", min_lr_ratio, 0, 1)
        self.save_hyperparameters()
        self.model: torch.nn.Module | None = None  # built in configure_model
        self._base_digest: str | None = None
        # Checkpoints hold the trainable weights only; on_load_checkpoint checks them instead.
        self.strict_loading = False
        # The learning-rate schedule: `total` optimizer steps from scheduler step `start`;
        # `restarted` once restart_schedule() set it, otherwise it is re-estimated at every fit.
        self.schedule = {"start": 0, "total": None, "restarted": False}
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.train_acc, self.val_acc = MeanMetric(), MeanMetric()
        self.train_ppl, self.val_ppl = Perplexity(), Perplexity()

    # ---- the model -------------------------------------------------------------------------
    def _load_dtype(self) -> torch.dtype:
        name = self.hparams.dtype
        if name == "auto":
            if self.hparams.full_finetune or not _bf16_supported():
                return torch.float32
            return torch.bfloat16
        return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]

    def configure_model(self) -> None:
        """Load the base model and wrap it with LoRA (idempotent; Lightning calls it in fit/validate)."""
        if self.model is not None:
            return
        self._check_one_checkpointing_switch()
        from transformers import AutoModelForCausalLM

        from agentr.engines.models import resolve_model
        from agentr.training.attention import register

        path = resolve_model(self.hparams.model)
        attn = self.hparams.attn_implementation
        if attn == "auto":
            attn = register()
        kwargs = {"dtype": self._load_dtype(), "trust_remote_code": self.hparams.trust_remote_code}
        try:
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, **kwargs)
        except ValueError as e:  # an architecture without the attention-backend interface
            if self.hparams.attn_implementation != "auto":
                raise
            log.warning("%s: agentr's packed attention unavailable (%s); using sdpa", path, e)
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", **kwargs)
        model.config.use_cache = False
        model.train()  # from_pretrained returns eval mode; Lightning switches modes per loop from here
        if self.hparams.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not self.hparams.full_finetune:
            from peft import LoraConfig, get_peft_model

            targets = self.hparams.lora_target_modules
            if targets == "all-linear":
                targets = linear_module_names(model)
            config = LoraConfig(
                r=self.hparams.lora_r,
                lora_alpha=self.hparams.lora_alpha,
                lora_dropout=self.hparams.lora_dropout,
                target_modules=targets,
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
            # Adapters name their base by what the user asked for (a Hub id stays a Hub id).
            model.peft_config["default"].base_model_name_or_path = base_name(self.hparams.model, path)
        self.model = model

    def _check_one_checkpointing_switch(self) -> None:
        from agentr.training.fsdp import checkpoints_activations

        if self.hparams.gradient_checkpointing and self._trainer is not None and \
                checkpoints_activations(self._trainer.strategy):
            raise ValueError(
                "activation checkpointing is switched on twice: model.gradient_checkpointing is "
                "true and the FSDP strategy checkpoints activations too (activation_checkpointing); "
                "each layer would be recomputed twice. Keep one: set "
                "trainer.strategy.init_args.activation_checkpointing: false (or "
                "model.gradient_checkpointing: false)")

    @property
    def causal_lm(self) -> torch.nn.Module:
        """The transformers model (with LoRA layers injected when training an adapter)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    # ---- the loss --------------------------------------------------------------------------
    def forward_trained(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(logits, targets, nll_sum)` at the trained positions of `batch` only."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        targets = labels[:, 1:]
        trained = targets != IGNORE_INDEX  # (B, T-1): position t predicts token t+1
        # Positions needed by any row; a packed batch has one row, so this is exact there.
        keep = trained.any(dim=0).nonzero().squeeze(-1)
        kwargs = {}
        if batch.get("doc_lens") is not None and self.hparams.attn_implementation == "auto":
            kwargs["doc_lens"] = list(batch["doc_lens"])
        out = self.model(
            input_ids=input_ids,
            position_ids=batch.get("position_ids"),
            use_cache=False,  # with a cache, transformers ignores packed position_ids
            logits_to_keep=keep,
            **kwargs,
        )
        logits = out.logits[trained[:, keep]].float()  # (N, V)
        target_ids = targets[:, keep][trained[:, keep]]
        nll_sum = F.cross_entropy(logits, target_ids, reduction="sum")
        return logits, target_ids, nll_sum

    def _step(self, batch: dict, loss_metric: Metric, acc_metric: Metric, ppl_metric: Metric, stage: str):
        logits, targets, nll_sum = self.forward_trained(batch)
        count = targets.numel()
        if count == 0:
            raise ValueError("a batch without trained tokens reached the model")
        loss = nll_sum / count
        with torch.no_grad():
            correct = (logits.argmax(-1) == targets).float().mean()
        loss_metric.update(loss.detach(), weight=count)
        acc_metric.update(correct, weight=count)
        ppl_metric.update(nll_sum, count)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=count)
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, batch_size=count)
        self.log(f"{stage}/ppl", ppl_metric, on_step=False, on_epoch=True, batch_size=count)
        if on_step:
            self.log("train/step_loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=count)
            # the rate this step's update uses: each iteration's restarted schedule is visible
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False,
                     batch_size=1)
        return loss

    def on_train_epoch_start(self) -> None:
        # Fresh metric states in the grad mode of the loop that updates them: a `validate()` (run
        # under inference mode) before `fit()` otherwise leaves inference tensors behind, which
        # fit's loops (no_grad) cannot update in place.
        for metric in (self.train_loss, self.train_acc, self.train_ppl):
            metric.reset()

    def on_validation_epoch_start(self) -> None:
        for metric in (self.val_loss, self.val_acc, self.val_ppl):
            metric.reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_loss, self.train_acc, self.train_ppl, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.val_loss, self.val_acc, self.val_ppl, "val")

    # ---- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            param_groups(self.named_parameters(), self.hparams.weight_decay), lr=self.hparams.learning_rate
        )
        # The estimate loads the train dataloader when Lightning has not yet: AgentRIterations
        # restarts the schedule there, for the first iteration's own steps, and that one stays.
        estimated = self._estimated_steps()
        if not self.schedule["restarted"]:  # a resumed run with a longer max_epochs stretches it
            self.schedule = {"start": 0, "total": estimated, "restarted": False}
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _estimated_steps(self) -> int:
        steps = self.trainer.estimated_stepping_batches if self._trainer is not None else float("inf")
        if not math.isfinite(steps):
            log.warning("the number of training steps is unknown; the cosine decay starts when "
                        "restart_schedule(num_steps) is called")
            return 10**9
        return int(steps)

    def _lr_factor(self, step: int) -> float:
        return warmup_cosine(step - self.schedule["start"], self.schedule["total"],
                             self.hparams.warmup_ratio, self.hparams.min_lr_ratio)

    def restart_schedule(self, num_steps: int) -> None:
        """Start a fresh warmup + cosine of `num_steps` optimizer steps from the next step.

        Until this is called, the schedule spans `trainer.estimated_stepping_batches` (max_epochs
        times the first epoch's batches, or max_steps), estimated again when a run resumes.
        Agent-R regenerates its data every iteration, so the number of batches changes:
        `AgentRIterations` calls this at each iteration's first epoch with that iteration's
        optimizer steps (`iteration_steps`), and each iteration warms up and decays like a
        separate fine-tuning run, as in the paper. Without a restart, steps past the estimate
        run at `learning_rate * min_lr_ratio`.
        """
        scheduler = self.lr_schedulers() if self._trainer is not None else None
        start = scheduler.last_epoch if scheduler is not None else 0
        self.schedule = {"start": int(start), "total": max(1, int(num_steps)), "restarted": True}
        self._apply_schedule()

    def _apply_schedule(self) -> None:
        """Set the optimizer's learning rate for the next step from the current schedule."""
        scheduler = self.lr_schedulers() if self._trainer is not None else None
        if scheduler is not None:
            for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base_lr * self._lr_factor(scheduler.last_epoch)

    def on_train_start(self) -> None:
        # A restored optimizer carries the learning rate of the run that saved it; a resumed run
        # whose schedule was estimated again (longer max_epochs) needs the new one from step one.
        self._apply_schedule()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip by norm through FSDP's `clip_grad_norm_` under FSDP (logged as `train/grad_norm`).

        Each rank holds a shard of the gradients, so the norm has to be reduced over ranks, which
        FSDP's method does; Lightning's FSDP precision plugin refuses norm clipping through its
        default hook for that reason. Other strategies and value clipping: Lightning's default.
        """
        from torch.distributed.fsdp import FullyShardedDataParallel

        model = self._trainer.strategy.model if self._trainer is not None else None
        if (not gradient_clip_val or not isinstance(model, FullyShardedDataParallel)
                or (gradient_clip_algorithm or "norm") != "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norm = model.clip_grad_norm_(gradient_clip_val)  # before clipping, over all shards
        self.log("train/grad_norm", norm.float(), on_step=True, on_epoch=False, batch_size=1)

    # ---- checkpoints -----------------------------------------------------------------------
    def _trainable_names(self) -> set[str]:
        return {clean_name(n) for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights: the frozen base is reloaded from `model` on resume."""
        if not self.hparams.full_finetune:
            keep = self._trainable_names()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if clean_name(k) in keep}
        checkpoint["agentr_schedule"] = dict(self.schedule)
        checkpoint["agentr_base_model"] = self.base_model_digest()

    def base_model_digest(self) -> str:
        """The content digest of the base model's weights (`agentr.provenance.weights_digest`)."""
        if self._base_digest is None:
            from agentr.engines.models import resolve_model
            from agentr.provenance import weights_digest

            self._base_digest = weights_digest(resolve_model(self.hparams.model))
        return self._base_digest

    def _check_base_model(self, checkpoint: dict) -> None:
        saved = checkpoint.get("agentr_base_model")
        if saved is None or saved == self.base_model_digest():
            return
        from agentr.provenance import other_weights_refusal

        run_dir = self._trainer.default_root_dir if self._trainer is not None else None
        raise ProvenanceError(other_weights_refusal(
            "the checkpoint was trained on another base model ", saved, self.hparams.model,
            self.base_model_digest(), run_dir))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Check that the checkpoint was made from this base model and holds exactly the
        trainable weights (loading is non-strict)."""
        self._check_base_model(checkpoint)
        saved_schedule = checkpoint.get("agentr_schedule", {})
        if saved_schedule.get("restarted"):  # an estimated schedule is estimated again (configure_optimizers)
            self.schedule = dict(saved_schedule)
        if "state_dict" not in checkpoint:  # FSDP loads the weights itself and drops them from the dict
            return
        self.configure_model()
        saved = {clean_name(k) for k in checkpoint["state_dict"]}
        missing = self._trainable_names() - saved
        unknown = saved - {clean_name(k) for k in self.state_dict()}
        if missing or unknown:
            raise RuntimeError(
                f"checkpoint does not match this model: {len(missing)} trainable weights missing "
                f"(e.g. {sorted(missing)[:3]}), {len(unknown)} unknown (e.g. {sorted(unknown)[:3]}); "
                "was it written with other LoRA settings or another base model?"
            )

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Write the weights in Hugging Face format to directory `path` and return it
        (`agentr.training.adapter.save_weights`: every rank calls it, rank 0 writes)."""
        return save_weights(self, path, self._trainable_names())

