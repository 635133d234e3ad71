"""The sharded path: LoRA under Lightning FSDP with one and two CPU processes (gloo).

One process matters on its own: torch turns every sharding strategy into NO_SHARD there, whose
backward leaves frozen units' parameters unregistered (`restore_frozen_parameters`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from agentr.data.datamodule import TextCraftDataModule
    from agentr.training.fsdp import AgentRFSDPStrategy
    from agentr.training.module import AgentRModule

    model_dir, out, devices, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    resume = sys.argv[5] if len(sys.argv) > 5 else None
    CLIP = 1e-3  # far below the gradients' norm: every step clips

    class Probe(AgentRModule):
        """Records the gradients' norm over both ranks after each clipping."""
        clipped = []

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            local = sum(float(p.grad.float().pow(2).sum()) for p in self.parameters() if p.grad is not None)
            total = torch.tensor(local, dtype=torch.float64)
            torch.distributed.all_reduce(total)
            self.clipped.append(float(total.sqrt()))

    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    full_state_dicts = []  # calls of the wrapped model's state_dict: each gathers every weight
    _state_dict = FSDP.state_dict

    def counted_state_dict(self, *args, **kwargs):
        full_state_dicts.append(type(self).__name__)
        return _state_dict(self, *args, **kwargs)

    FSDP.state_dict = counted_state_dict
    pl.seed_everything(0)
    dm = TextCraftDataModule(model=model_dir, max_depth=2, val_fraction=0.25, tokens_per_batch=2048)
    dm.set_trajectories(dm.expert_trajectories(12))
    # as the shipped configs train: LoRA dropout under activation checkpointing
    module = Probe(model_dir, lora_dropout=0.05, gradient_checkpointing=True, learning_rate=1e-2,
                   dtype="bfloat16")
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=AgentRFSDPStrategy(), max_steps=max_steps,
                         precision="bf16-mixed", gradient_clip_val=CLIP,
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=1, val_check_interval=1, check_val_every_n_epoch=None,
                         callbacks=[ModelCheckpoint(dirpath=out, save_last=True)], default_root_dir=out)
    trainer.fit(module, dm, ckpt_path=resume)
    module.save_adapter(os.path.join(out, "adapter"))
    if trainer.is_global_zero:
        shards = [type(m).__name__ for m in trainer.strategy.model.modules()
                  if type(m).__name__ == "FullyShardedDataParallel"]
        dtypes = lambda params: sorted({str(p.dtype) for p in params})
        report = {"global_step": trainer.global_step, "fsdp_units": len(shards),
                  "world_size": trainer.world_size, "clip": CLIP,
                  "full_state_dicts": len(full_state_dicts), "clipped_norms": module.clipped,
                  "frozen_dtypes": dtypes(p for p in module.parameters() if not p.requires_grad),
                  "trainable_dtypes": dtypes(p for p in module.parameters() if p.requires_grad),
                  "inv_freq_dtypes": dtypes(b for n, b in module.named_buffers() if "inv_freq" in n),
                  "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
        with open(os.path.join(out, "report.json"), "w") as f:
            json.dump(report, f)
''')


def run_script(tmp_path, *args):
    script = tmp_path / "fsdp_fit.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((tmp_path / args[1] / "report.json").read_text())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("devices", [1, 2])
def test_lora_fsdp_on_cpu_processes_trains_checkpoints_and_resumes(tiny_model_dir, tmp_path, devices):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    report = run_script(tmp_path, tiny_model_dir, "run", devices, 2)
    assert report["world_size"] == devices and report["global_step"] == 2
    # the root, one unit per decoder layer, and one per LoRA A/B linear (14 modules x 2)
    assert report["fsdp_units"] == 1 + 2 + 28
    # frozen and trainable weights in separate flat parameters, so each keeps its dtype
    assert report["frozen_dtypes"] == ["torch.bfloat16"] and report["trainable_dtypes"] == ["torch.float32"]
    assert report["inv_freq_dtypes"] == ["torch.float32"]  # bf16-mixed leaves buffers in fp32
    assert {"train/loss", "val/loss", "val/acc", "val/ppl", "train/grad_norm"} <= set(report["metrics"])
    # clipping by norm under FSDP: the norm before clipping was above the limit, after it at it
    assert report["metrics"]["train/grad_norm"] > report["clip"]
    assert len(report["clipped_norms"]) == 2
    assert report["clipped_norms"] == pytest.approx([report["clip"]] * 2, rel=1e-3)

    ckpt = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert len(keys) == 28 and all("lora_" in k for k in keys)  # adapters only, no base weights
    assert ckpt["optimizer_states"][0]["state"]  # with the optimizer's state
    assert report["full_state_dicts"] == 0  # gathered unit by unit, the frozen base never

    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == 28
    for key, value in adapter.items():  # the adapter file holds the checkpoint's weights
        source = "model." + key.replace(".weight", ".default.weight")
        torch.testing.assert_close(value, ckpt["state_dict"][source])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    PeftModel.from_pretrained(base, tmp_path / "run" / "adapter")

    resumed = run_script(tmp_path, tiny_model_dir, "resumed", devices, 4, tmp_path / "run" / "last.ckpt")
    assert resumed["global_step"] == 4
    after = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(after[k], adapter[k]) for k in adapter)


def test_activation_checkpointing_has_one_switch(tiny_model_dir):
    from types import SimpleNamespace

    from agentr.training.fsdp import AgentRFSDPStrategy
    from agentr.training.module import AgentRModule

    module = AgentRModule(tiny_model_dir, gradient_checkpointing=True)
    module._trainer = SimpleNamespace(strategy=AgentRFSDPStrategy(activation_checkpointing=True))
    with pytest.raises(ValueError, match="activation checkpointing is switched on twice"):
        module.configure_model()
    module._trainer = SimpleNamespace(strategy=AgentRFSDPStrategy())  # one switch: fine
    module.configure_model()
    assert module.causal_lm.is_gradient_checkpointing
