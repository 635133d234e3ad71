"""What the vLLM and Hugging Face engines share: prompt rendering, errors and adapter checks."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from agentr.engines.base import Choice, Conversation

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine cannot generate any more (its process died, or it was closed)."""


class ContextLengthError(ValueError):
    """A prompt does not fit the engine's `max_model_len`."""


def render_prompt_ids(tokenizer, conversation: Conversation) -> list[int]:
    """Token ids of `conversation` rendered with the model's chat template plus the generation
    prompt: the exact text every engine generates from and the trainer trains on."""
    ids = tokenizer.apply_chat_template(
        list(conversation), add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # older/newer transformers
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def continuation_ids(tokenizer, conversation: Conversation, prefix: str,
                     choices: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The token ids that `Engine.choose` scores: a context and one continuation per choice.

    The context is `conversation` rendered for generation followed by the tokens that every
    `prefix + choice` shares; each choice's ids are the rest of its `prefix + choice`. Splitting
    the texts after tokenizing them whole keeps each scored sequence the exact tokens the model
    would read (a tokenizer may merge the prefix's last characters with the choice's first).

    Raises:
        ValueError: fewer than two choices, or one whose tokens add nothing to the shared part.
    """
    if len(choices) < 2:
        raise ValueError(f"choose() needs at least two choices, got {list(choices)}")
    encoded = [tokenizer.encode(prefix + c, add_special_tokens=False) for c in choices]
    shared = 0
    while all(len(e) > shared for e in encoded) and len({e[shared] for e in encoded}) == 1:
        shared += 1
    tails = [e[shared:] for e in encoded]
    if not all(tails):
        raise ValueError(f"the choices {list(choices)} are not distinguishable after {prefix!r}: "
                         "one of them tokenizes to a prefix of the others")
    return render_prompt_ids(tokenizer, conversation) + encoded[0][:shared], tails


def best_choice(choices: Sequence[str], logprobs: Sequence[float]) -> Choice:
    """The `Choice` of the highest log-probability (the first one on a tie)."""
    index = max(range(len(choices)), key=lambda i: (logprobs[i], -i))
    return Choice(choices[index], index, tuple(float(x) for x in logprobs))


def check_prompt_length(num_prompt_tokens: int, max_model_len: int) -> None:
    """Raise `ContextLengthError` for a prompt that leaves no room for a single new token."""
    if num_prompt_tokens >= max_model_len:
        raise ContextLengthError(
            f"a prompt of {num_prompt_tokens} tokens does not fit max_model_len={max_model_len} "
            "(truncate the history with agentr.agent.truncate_history, or raise max_model_len)"
        )


def fit_model_len(config, requested: int) -> int:
    """`requested`, capped (with a warning) at the model config's `max_position_embeddings`."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and requested > limit:
        log.warning("max_model_len=%d exceeds the model's %d positions; using %d",
                    requested, limit, limit)
        return int(limit)
    return int(requested)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to (not including) the earliest of the `stop` strings."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def derive_seed(*parts: object) -> int:
    """A seed determined by `parts` alone; a hash, so that near parts give unrelated seeds."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` of a batch drawn with base seed `seed`.

    A hash, not `seed + index`: vLLM seeds the n samples of one request with consecutive
    numbers, so consecutive request seeds would make request i's second sample equal request
    i+1's first.
    """
    return derive_seed(seed, index)


# ---- LoRA adapters -------------------------------------------------------------------------
_ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
_BASE_PREFIX = "base_model.model."


def _safetensors_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the files' headers only (no weights are loaded)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _base_weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    return sorted(model_dir.glob("*.safetensors"))


def check_adapter(adapter_dir: str | Path, base_model_dir: str | Path,
                  max_rank: int | None = None) -> dict:
    """Validate a PEFT LoRA adapter directory against the base model; return its config.

    Checks that `adapter_config.json` exists and describes a LoRA adapter, that its rank fits
    `max_rank`, and that every LoRA matrix matches a weight of the base model in shape (read from
    the safetensors headers, so it is cheap). This is what catches an adapter trained for another
    base model: its target weights are missing or have other shapes.

    Raises:
        FileNotFoundError: the directory or its `adapter_config.json` does not exist.
        ValueError: not a LoRA adapter, rank too large, or made for another base model.
    """
    adapter_dir, base_model_dir = Path(adapter_dir).expanduser(), Path(base_model_dir)
    config_file = adapter_dir / "adapter_config.json"
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"adapter directory {adapter_dir} does not exist")
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} has no adapter_config.json; expected a PEFT LoRA adapter directory"
        )
    config = json.loads(config_file.read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"{adapter_dir} holds a {config.get('peft_type')} adapter; only LoRA is supported")
    ranks = [int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())]
    if max_rank is not None and max(ranks) > max_rank:
        raise ValueError(
            f"adapter {adapter_dir} has LoRA rank {max(ranks)} > max_lora_rank={max_rank}; "
            "start the engine with a larger max_lora_rank"
        )
    weights = [adapter_dir / n for n in _ADAPTER_WEIGHTS if (adapter_dir / n).is_file()]
    base_files = _base_weight_files(base_model_dir)
    if not weights or not base_files:
        log.warning("cannot compare shapes of adapter %s with %s (no safetensors weights)",
                    adapter_dir, base_model_dir)
        return config
    base = _safetensors_shapes(base_files)
    claimed = config.get("base_model_name_or_path")
    hint = f" (the adapter says its base model is {claimed!r})" if claimed else ""
    for name, shape in _safetensors_shapes(weights).items():
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not name.endswith(part):
                continue
            target = name.removeprefix(_BASE_PREFIX)[: -len(part)] + ".weight"
            if target not in base and target.endswith("lm_head.weight"):
                target = target.replace("lm_head.weight", "model.embed_tokens.weight")  # tied
            if target not in base:
                raise ValueError(
                    f"adapter {adapter_dir} was made for another base model{hint}: it adapts "
                    f"{target}, which {base_model_dir} does not have"
                )
            # lora_A is (r, in_features), lora_B is (out_features, r); the base weight (out, in).
            expected = base[target][dim]
            if len(shape) != 2 or shape[dim] != expected:
                raise ValueError(
                    f"adapter {adapter_dir} was made for another base model{hint}: {name} has "
                    f"shape {list(shape)}, but {target} of {base_model_dir} is {list(base[target])}"
                )
    return config
