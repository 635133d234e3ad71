"""Config overlays that change callbacks: `agentr fit --config base.yaml --config overlay.yaml`.

LightningCLI applies config files in order, and a later file's list replaces an earlier one
whole: an overlay that lists only `AgentRIterations: {alpha: [...]}` would drop the other
callbacks and reset every setting of AgentRIterations it does not name. agentr merges the
`trainer.callbacks` lists of the config files by class instead: an overlay's entry updates the
earlier entry of its class (its `init_args` merged key by key, nested groups too, as
LightningCLI merges every other setting), and an entry of a class not yet listed is added.
The merged list reaches the parser in place of the last list given, so the command line still
overrides it.
"""

from __future__ import annotations

import json

from agentr.errors import SettingError


def merge_settings(earlier: dict, later: dict) -> dict:
    """`later` over `earlier`, nested dicts merged key by key (a dict naming another
    `class_path` replaces the earlier one whole: its settings belong to another class)."""
    if "class_path" in earlier and "class_path" in later and _class_name(earlier) != _class_name(later):
        return dict(later)
    out = dict(earlier)
    for key, value in later.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def _class_name(callback: dict) -> str:
    return str(callback.get("class_path", "")).rsplit(".", 1)[-1]


def merge_callbacks(earlier: list[dict], later: list[dict], where: str) -> list[dict]:
    """The callbacks of `earlier` updated by those of `later` (an overlay, `where`), by class."""
    merged = list(earlier)
    for callback in later:
        matches = [i for i, c in enumerate(merged) if _class_name(c) == _class_name(callback)]
        if len(matches) > 1:
            raise SettingError(
                f"{where}: trainer.callbacks lists {_class_name(callback)}, which the earlier "
                f"configs list {len(matches)} times; an overlay cannot tell which one it changes")
        if matches:
            merged[matches[0]] = merge_settings(merged[matches[0]], callback)
        else:
            merged.append(callback)
    return merged


def with_merged_callbacks(argv: list[str], documents: list[tuple[int, str, object]]) -> list[str]:
    """`argv` with the `trainer.callbacks` of its config files merged (see the module doc).

    `documents`: the config files as (index in `argv` of their `--config` argument, path,
    contents). Unchanged unless two or more of them list callbacks."""
    listed = [(index, path, document["trainer"]["callbacks"]) for index, path, document in documents
              if isinstance(document, dict) and isinstance(document.get("trainer"), dict)
              and isinstance(document["trainer"].get("callbacks"), list)
              and all(isinstance(c, dict) for c in document["trainer"]["callbacks"])]
    if len(listed) < 2:
        return argv
    merged = listed[0][2]
    for _, path, callbacks in listed[1:]:
        merged = merge_callbacks(merged, callbacks, path)
    last = listed[-1][0]
    after = last + (1 if argv[last].startswith("--config=") else 2)
    return argv[:after] + ["--trainer.callbacks=" + json.dumps(merged)] + argv[after:]
