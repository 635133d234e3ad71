"""Phase II training throughput: agentr's LightningModule vs TRL's SFTTrainer with PEFT.

Same model (SmolLM2-135M-Instruct), same data, same LoRA settings (r=16, alpha=32, dropout 0.05,
all linear layers), same sequence limit (2048), same precision (bf16 autocast over bf16 base
weights, float32 adapters), same learning rate, AdamW, gradient clipping 1.0. The data is
TextCraft expert demonstrations rendered in the agent format, tokenised ONCE by agentr's
tokeniser (chat template + loss mask); TRL receives those `input_ids` and `labels` as a
pre-tokenised dataset, so both train on exactly the same tokens with the same mask.

Configurations, each in its own process (so that peak RSS is its own):

- `agentr-packed`: agentr's default: one padding-free row of at most `--tokens-per-batch` tokens
  per step, attention per conversation, logits only at trained positions.
- `agentr-padded`: agentr with `packing=False`: `--batch-size` conversations right-padded to the
  longest (the data layout TRL uses by default), still with logits only at trained positions.
- `trl`: `SFTTrainer` with `peft_config`, `per_device_train_batch_size=--batch-size`, padded.
- `trl-padding-free` (`--with-trl-padding-free`): TRL's own padding-free collator, with the
  same `--batch-size` conversations per step.

Measured over the steps after `--warmup` steps: tokens/s of real (non-padding) tokens, of trained
tokens (the loss targets) and of computed tokens (with padding), and the process's peak RSS.
Tokens per CPU-second (process CPU time) is reported too: on a machine shared with other jobs it
is far steadier than wall-clock rates (use `--threads 1` there, so CPU time is compute time).
Configurations run one after the other; `--rounds 2` repeats the sequence (in reverse order the
second time) and reports each configuration's median, which damps the drift of a shared machine.
Gradient checkpointing is set alike on both sides (`--gradient-checkpointing off|on|both`;
TRL's SFTConfig turns it on by default, agentr leaves it off); ratios compare equal settings.

    python bench/bench_training.py --steps 8 --warmup 2 --batch-size 2 --tokens-per-batch 2048 \
        --threads 1 --with-trl-padding-free --gradient-checkpointing both --out bench/results/training.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import load_average

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
CONFIGS = ("agentr-packed", "agentr-padded", "trl")


# ------------------------------------------------------------------------------------------------
# data shared by every configuration
# ------------------------------------------------------------------------------------------------
def make_data(path: Path, num: int, max_length: int) -> dict:
    """Tokenise `num` TextCraft expert demonstrations with agentr's loss mask into `path` (JSONL)."""
    from agentr.data.datamodule import TextCraftDataModule
    from agentr.data.tokenize import tokenize_all

    dm = TextCraftDataModule(model=MODEL, max_depth=2, seed=0)
    demos = dm.expert_trajectories(num)
    examples, stats = tokenize_all(dm.tokenizer, demos, max_length)
    with open(path, "w") as f:
        for e in examples:
            f.write(json.dumps({"id": e.id, "input_ids": e.input_ids, "labels": e.labels}) + "\n")
    return {"conversations": stats.kept, "tokens": stats.tokens, "trained_tokens": stats.trained_tokens}


def load_data(path: Path):
    from agentr.data.tokenize import TokenizedExample

    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [TokenizedExample(r["input_ids"], r["labels"], id=r["id"], kind="expert", task_id=r["id"]) for r in rows]


# ------------------------------------------------------------------------------------------------
# one configuration per process
# ------------------------------------------------------------------------------------------------
class Meter:
    """Token counts and wall time of the steps after the warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = None
        self.cpu_start = self.cpu_end = None
        self.real = self.trained = self.computed = 0

    def step_start(self, step: int) -> None:
        if step == self.warmup:
            self.start = time.perf_counter()
            self.cpu_start = time.process_time()

    def step_end(self, step: int, real: int, trained: int, computed: int) -> None:
        if step >= self.warmup:
            self.real += real
            self.trained += trained
            self.computed += computed
            self.end = time.perf_counter()
            self.cpu_end = time.process_time()

    def result(self) -> dict:
        seconds, cpu_seconds = self.end - self.start, self.cpu_end - self.cpu_start
        return {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "tokens_per_cpu_s": self.real / cpu_seconds,
            "trained_tokens_per_cpu_s": self.trained / cpu_seconds,
            "steps": None,
            "real_tokens": self.real,
            "trained_tokens": self.trained,
            "computed_tokens": self.computed,
            "tokens_per_s": self.real / seconds,
            "trained_tokens_per_s": self.trained / seconds,
            "computed_tokens_per_s": self.computed / seconds,
            "padding_fraction": 1 - self.real / self.computed,
        }


def batch_counts(batch: dict) -> tuple[int, int, int]:
    """(real, trained, computed) tokens of a batch; trained = targets of the shifted loss."""
    ids, labels = batch["input_ids"], batch["labels"]
    computed = ids.numel()
    if "attention_mask" in batch:
        real = int(batch["attention_mask"].sum())
    else:
        real = int(batch.get("num_real_tokens", computed))
    return real, int((labels[:, 1:] != -100).sum()), computed


def run_agentr(args, data_path: Path, packing: bool) -> dict:
    import lightning.pytorch as pl

    from agentr.data.base import AgentRDataModule
    from agentr.training.module import AgentRModule

    meter = Meter(args.warmup)

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            meter.step_start(trainer.global_step)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            meter.step_end(trainer.global_step - 1, *batch_counts(batch))

    pl.seed_everything(0)
    module = AgentRModule(MODEL, lora_r=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
                          learning_rate=args.lr, warmup_ratio=0.03, gradient_checkpointing=args.gc)
    data = AgentRDataModule(model=MODEL, max_length=args.max_length, tokens_per_batch=args.tokens_per_batch,
                            packing=packing, batch_size=args.batch_size, val_fraction=0.0)
    data.set_examples(load_data(data_path))
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_steps=args.warmup + args.steps,
                         gradient_clip_val=1.0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[Timer()], default_root_dir=tempfile.mkdtemp())
    trainer.fit(module, data)
    out = meter.result()
    out["steps"] = trainer.global_step - args.warmup
    return out


def run_trl(args, data_path: Path, padding_free: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from agentr.engines.models import resolve_model

    path = resolve_model(MODEL)
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in load_data(data_path)]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    meter = Meter(args.warmup)
    batches: list[tuple[int, int, int]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, _args, state, control, **kwargs):
            meter.step_start(state.global_step)

        def on_step_end(self, _args, state, control, **kwargs):
            step = state.global_step - 1
            meter.step_end(step, *batches[step])

    config = SFTConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
        learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=0.03, max_grad_norm=1.0, bf16=True,
        # padding-free TRL refuses a max_length without packing; the data is already within it
        max_length=None if padding_free else args.max_length, padding_free=padding_free, logging_steps=1,
        report_to="none",
        save_strategy="no", dataloader_num_workers=0, seed=0, use_cpu=True,
        gradient_checkpointing=args.gc,  # TRL's default is True; both sides use the same setting here
    )
    peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[Timer()])
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        batches.append(batch_counts(batch))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    out = meter.result()
    out["steps"] = trainer.state.global_step - args.warmup
    return out


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    data_path = Path(args.data)
    if args.worker.startswith("agentr"):
        result = run_agentr(args, data_path, packing=args.worker == "agentr-packed")
    else:
        result = run_trl(args, data_path, padding_free=args.worker == "trl-padding-free")
    result["gc"] = args.gc
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["config"] = args.worker
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
def run_config(name: str, gc: bool, args, data_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--data", str(data_path)] + (["--gc"] if gc else [])
    for key in ("steps", "warmup", "batch_size", "tokens_per_batch", "max_length", "lr", "threads"):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{name} failed (exit {proc.returncode})")
    result = json.loads(lines[-1][len("RESULT "):])
    result["load_average"] = load_average()
    print(f"  {label(name, gc)}: {result['tokens_per_s']:.0f} tok/s, {result['trained_tokens_per_s']:.0f} trained tok/s, "
          f"{result['tokens_per_cpu_s']:.0f} tok/CPU-s, "
          f"padding {100 * result['padding_fraction']:.1f}%, peak RSS {result['peak_rss_mb']:.0f} MB "
          f"({time.perf_counter() - started:.0f} s with start-up), load average {result['load_average']}",
          flush=True)
    return result


def median_result(results: list[dict]) -> dict:
    out = dict(results[0])
    for key in ("tokens_per_s", "trained_tokens_per_s", "computed_tokens_per_s", "peak_rss_mb",
                "tokens_per_cpu_s", "trained_tokens_per_cpu_s"):
        out[key] = statistics.median(r[key] for r in results)
    return out


def label(name: str, gc: bool) -> str:
    return name + (" +gc" if gc else "")


def table(results: dict[str, dict]) -> str:
    """Rows by configuration; ratios against TRL with the same gradient-checkpointing setting."""
    lines = [
        "| configuration | grad. ckpt | tokens/s | trained tokens/s | CPU share | tokens/CPU-s | trained tokens/CPU-s "
        "| padding | vs TRL: tokens/s | vs TRL: tokens/CPU-s | peak RSS (MB) | vs TRL: RSS | load avg after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results.values():
        base = results.get(label("trl", r["gc"]))
        ratio = (lambda key: f"{r[key] / base[key]:.2f}x") if base else (lambda key: "")
        lines.append(
            f"| {r['config']} | {'on' if r['gc'] else 'off'} | {r['tokens_per_s']:.0f} | {r['trained_tokens_per_s']:.0f} "
            f"| {r['tokens_per_s'] / r['tokens_per_cpu_s']:.2f} | {r['tokens_per_cpu_s']:.0f} | {r['trained_tokens_per_cpu_s']:.0f} | {100 * r['padding_fraction']:.1f}% "
            f"| {ratio('tokens_per_s')} | {ratio('tokens_per_cpu_s')} | {r['peak_rss_mb']:.0f} | {ratio('peak_rss_mb')} "
            f"| {r['load_average']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    parser.add_argument("--batch-size", type=int, default=4, help="conversations per step (padded configurations)")
    parser.add_argument("--tokens-per-batch", type=int, default=4096, help="token budget per step (agentr-packed)")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=1, help="repeat all configurations (reverse order on even rounds)")
    parser.add_argument("--with-trl-padding-free", action="store_true")
    parser.add_argument("--configs", nargs="+", default=None, choices=CONFIGS + ("trl-padding-free",),
                        help="run only these configurations (the ratios need trl among them)")
    parser.add_argument("--out", type=Path, default=None, help="write a Markdown report here")
    parser.add_argument("--gradient-checkpointing", choices=("off", "on", "both"), default="off",
                        help="the same setting on both sides (TRL's own default is on, agentr's off)")
    parser.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    configs = args.configs or list(CONFIGS) + (["trl-padding-free"] if args.with_trl_padding_free else [])
    data_path = Path(tempfile.mkdtemp()) / "data.jsonl"
    # Enough conversations that no configuration runs out within one epoch.
    data = make_data(data_path, num=(args.warmup + args.steps) * max(args.batch_size, 8), max_length=args.max_length)
    print(f"data: {data['conversations']} TextCraft expert conversations, {data['tokens']} tokens "
          f"({data['trained_tokens']} trained, {100 * data['trained_tokens'] / data['tokens']:.0f}%)", flush=True)
    load_before = os.getloadavg()
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
    plan = [(name, gc) for gc in settings for name in configs]
    runs: dict[str, list[dict]] = {label(name, gc): [] for name, gc in plan}
    for round_ in range(args.rounds):
        order = plan if round_ % 2 == 0 else plan[::-1]
        print(f"round {round_ + 1}: {', '.join(label(*p) for p in order)}", flush=True)
        for name, gc in order:
            runs[label(name, gc)].append(run_config(name, gc, args, data_path))
    load_after = os.getloadavg()
    results = {name: median_result(rs) for name, rs in runs.items()}
    report = table(results)
    print(report)
    print(f"load average (1/5/15 min) before: {' '.join(f'{x:.1f}' for x in load_before)}, "
          f"after: {' '.join(f'{x:.1f}' for x in load_after)}")
    if args.out:
        import torch
        import transformers
        import trl

        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python bench/bench_training.py " + " ".join(a for a in sys.argv[1:])
        header = (
            f"# Training throughput: agentr vs TRL SFTTrainer (PEFT LoRA)\n\n"
            f"`{command}`\n\n"
            f"Model {MODEL}; LoRA r={LORA['r']}, alpha={LORA['lora_alpha']}, dropout={LORA['lora_dropout']}, all "
            f"linear layers; bf16 autocast, bf16 base weights, fp32 adapters; max length {args.max_length}; "
            f"lr {args.lr}; {args.steps} measured steps after {args.warmup} warm-up steps; padded configurations "
            f"{args.batch_size} conversations per step, agentr-packed up to {args.tokens_per_batch} tokens per step; "
            f"gradient checkpointing as in the table, the same on both sides (TRL's SFTConfig defaults it to "
            f"on); median of {args.rounds} round(s).\n\n"
            f"Data: {data['conversations']} TextCraft expert conversations (agent format), {data['tokens']} tokens, "
            f"{data['trained_tokens']} trained ({100 * data['trained_tokens'] / data['tokens']:.0f}%), tokenised "
            f"once by agentr and given to TRL as input_ids + labels.\n\n"
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, {args.threads} "
            f"used by torch; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; torch "
            f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}. CPU share = "
            f"CPU-seconds per wall second of a configuration's measured steps: below 1 (with one thread) means "
            f"other processes took the rest, and wall-clock rates are then not comparable.\n\n"
        )
        per_round = "\n".join(
            f"- {name}: " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in rs) + " tokens/s" for name, rs in runs.items()
        )
        args.out.write_text(header + report + "\n\nPer round:\n\n" + per_round + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
