"""Content digests of models and adapters: the same weights anywhere, other weights told apart."""

from __future__ import annotations

import os
import shutil

import pytest

from agentr.provenance import changed_keys, weights_digest


def test_digest_follows_the_content_not_the_place_or_time(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    os.utime(copy / "model.safetensors", (0, 0))
    assert weights_digest(copy) == weights_digest(tiny_model_dir)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-3] ^= 1  # one weight of the same shape
    (copy / "model.safetensors").write_bytes(bytes(data))
    assert weights_digest(copy) != weights_digest(tiny_model_dir)
    config = (copy / "config.json").read_text()
    shutil.copy(tiny_model_dir + "/model.safetensors", copy / "model.safetensors")
    (copy / "config.json").write_text(config.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert weights_digest(copy) != weights_digest(tiny_model_dir)
    assert weights_digest(None) is None
    with pytest.raises(FileNotFoundError):
        weights_digest(tmp_path / "missing")


def test_changed_keys_are_dotted():
    assert changed_keys({"model": "a", "env": {"name": "x", "options": {"d": 1}}},
                        {"model": "a", "env": {"name": "x", "options": {"d": 2}}, "split": "test"}) == [
        "env.options.d", "split"]
