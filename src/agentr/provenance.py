"""Fingerprints of what determines a result, recorded with every stage's output.

Phase I's `collect.json`, an evaluation's `eval.json` and a fit's checkpoint record what made
them: the digest of the base model's weights and of the adapter's, the environment and its
options, the split and tasks, and the stage's settings. A run that finds an output made from
something else refuses to mix with it (Phase I, a fit's checkpoint) or redoes it (a fit's
evaluations), instead of silently putting the results of two models side by side.

Digests are of the files' contents, not of their names or times, and cheap for any model size:
configuration files whole, and of each weight file its size and its first and last MiB (a
safetensors file starts with its tensor index, so shapes and dtypes are covered; the sampled
bytes tell two models of one shape apart).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from agentr.jsonfiles import write_json

#: Files of a model or adapter directory that the digest covers (weights sampled, configs whole).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
_CONFIG_FILES = ("config.json", "adapter_config.json", "generation_config.json")
_SAMPLE_BYTES = 1 << 20


def _file_digest(path: Path, h) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}\0{size}\0".encode())
    with open(path, "rb") as f:
        if size <= 2 * _SAMPLE_BYTES:
            h.update(f.read())
        else:
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))


def weights_digest(path: str | os.PathLike | None) -> str | None:
    """A content digest of a model or adapter (a directory, or one weight file); None for None."""
    if path is None:
        return None
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        _file_digest(path, h)
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and (
            p.name in _CONFIG_FILES or p.name.endswith(_WEIGHT_SUFFIXES)))
        if not files:
            raise FileNotFoundError(f"{path} holds no model or adapter files")
        for p in files:
            _file_digest(p, h)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return h.hexdigest()[:16]


def policy_provenance(engine) -> dict:
    """The digests of what `engine` generates with: its model's weights and its adapter's
    (engines without files, such as test doubles, give None)."""
    return {"model": weights_digest(getattr(engine, "model_path", None)),
            "adapter": weights_digest(getattr(engine, "adapter_path", None))}


def task_digest(task_ids: Sequence) -> dict:
    """The tasks, as their count and a digest of their ids in order."""
    ids = "\0".join(str(t) for t in task_ids)
    return {"count": len(task_ids), "digest": hashlib.sha256(ids.encode()).hexdigest()[:16]}


def env_description(name: str, options: dict | None) -> dict:
    """An environment as a command names it: its registered name and its options, as its class
    records them (`Environment.recorded_options`: a file's content rather than its path)."""
    from agentr.envs.registry import env_class

    return {"name": name, "options": env_class(name).recorded_options(options or {})}


def describe_env(env: dict | None) -> str:
    """`env_description`'s dict as text, its URL first where it has one (e.g. `http at http://...`)."""
    if not env:
        return "(unnamed)"
    options = env.get("options") or {}
    url = options.get("url")
    return f"{env.get('name')}" + (f" at {url}" if url else "") + (
        f" {options}" if options and not url else "")


def changed_keys(previous: dict, current: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two fingerprints."""
    out = []
    for key in sorted(set(previous) | set(current), key=str):
        a, b = previous.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


#: The file of a fit's run directory that names the base model all its stages are made from.
RUN_BASE_MODEL_FILE = "base_model.json"


def claim_run_base_model(run_dir: str | os.PathLike, model: str, digest: str) -> str | None:
    """Record in `run_dir` that its fit starts from `model` (weights digest `digest`), or say
    why not: the refusal when the directory was begun from other weights (None: it was not).

    Called before any stage runs, so that a fit given another model stops before it evaluates
    or searches anything in a directory made from the first. A directory written before this
    file existed is judged by its base evaluation's fingerprint.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_BASE_MODEL_FILE
    base_eval = run_dir / "base" / "eval.json"
    saved = {"model": None, "digest": None}
    if path.exists():
        saved = json.loads(path.read_text())
    elif base_eval.exists():
        saved["digest"] = (json.loads(base_eval.read_text()).get("fingerprint") or {}).get("model")
    if saved["digest"] not in (None, digest):
        made_from = f"{saved['model']!r} " if saved["model"] else ""
        return other_weights_refusal(f"{run_dir} was begun from another base model {made_from}",
                                     saved["digest"], model, digest, run_dir)
    if not path.exists():
        write_json(path, {"model": model, "digest": digest}, indent=2)
    return None


def other_weights_refusal(what: str, saved: str, model: str, digest: str,
                          run_dir: str | os.PathLike | None) -> str:
    """Why a run made from weights digest `saved` cannot go on with `model` (digest `digest`);
    `what` says what was made from them ("the checkpoint was trained on another base model ")."""
    where = (f"{run_dir} or choose another trainer.default_root_dir" if run_dir is not None
             else "the run directory")
    return (f"{what}(weights digest {saved}) than model.model={model!r} (digest {digest}): a run "
            f"cannot continue on other weights. Start afresh: delete {where}")
