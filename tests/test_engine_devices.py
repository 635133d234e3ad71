"""Where a vLLM engine runs on GPU: the environment its processes start with (CPU tests), and the
GPU checks (device pinning, LoRA across sleep/wake) that need CUDA."""

from __future__ import annotations

import pytest

from agentr.engines.vllm_engine import engine_environment


def test_each_local_rank_gets_its_own_device_through_the_visible_list():
    environ = {"CUDA_VISIBLE_DEVICES": "4,5,6,7"}
    assert [engine_environment(k, 1, environ, 8)["CUDA_VISIBLE_DEVICES"] for k in range(4)] == \
        ["4", "5", "6", "7"]
    uuids = {"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}
    assert engine_environment(1, 1, uuids, 2)["CUDA_VISIBLE_DEVICES"] == "GPU-bb"


def test_without_a_visible_list_devices_are_physical_ids():
    assert engine_environment(3, 1, {}, 8)["CUDA_VISIBLE_DEVICES"] == "3"
    assert engine_environment(2, 2, {}, 4)["CUDA_VISIBLE_DEVICES"] == "2,3"  # tensor parallel


def test_an_engine_beyond_the_visible_devices_is_refused():
    with pytest.raises(ValueError, match=r"needs devices 1\.\.2 .* sees 2: 0,1"):
        engine_environment(1, 2, {"CUDA_VISIBLE_DEVICES": "0,1"}, 8)


def test_expandable_segments_are_dropped_and_other_allocator_options_kept():
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True,max_split_size_mb:512"}
    env = engine_environment(0, 1, environ, 1)
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    alone = engine_environment(0, 1, {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}, 1)
    assert alone["PYTORCH_ALLOC_CONF"] is None  # None: removed for the engine's start
    assert "PYTORCH_CUDA_ALLOC_CONF" not in engine_environment(0, 1, {}, 1)  # unset stays unset


def _cuda(vllm: bool = True):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if vllm:
        pytest.importorskip("vllm")
    return torch


@pytest.mark.gpu
def test_hf_engine_on_cuda_batches_seeded_requests_with_the_draws_of_each_alone(tiny_engine_model_dir):
    from test_engines import CONV, CONV2

    from agentr.engines import EngineConfig, SamplingConfig, make_engine

    _cuda(vllm=False)
    engine = make_engine(EngineConfig(kind="hf", max_model_len=512), tiny_engine_model_dir, seed=0)
    try:
        assert next(engine.model.parameters()).device.type == "cuda"
        sampling = SamplingConfig(n=2, temperature=1.0, max_tokens=8, request_seeds=(11, 12))
        together = engine.generate([CONV, CONV2], sampling)
        alone = engine.generate([CONV2], SamplingConfig(n=2, temperature=1.0, max_tokens=8,
                                                        request_seeds=(12,)))
        assert alone[0] == together[1]
    finally:
        engine.close()


@pytest.mark.gpu
def test_lora_outputs_are_the_same_before_and_after_sleep_and_wake(tiny_engine_model_dir, tmp_path):
    from test_engines import CONV, GREEDY, _make_adapter

    from agentr.engines.vllm_engine import VLLMEngine

    _cuda()
    adapter = _make_adapter(tiny_engine_model_dir, tmp_path / "adapter")
    engine = VLLMEngine(tiny_engine_model_dir, max_model_len=1024, gpu_memory_utilization=0.3,
                        merge_lora=False, enforce_eager=True)
    try:
        base = engine.generate([CONV], GREEDY)
        engine.load_adapter(adapter)
        with_adapter = engine.generate([CONV], GREEDY)
        assert with_adapter != base  # the adapter changes the greedy reply
        engine.sleep()
        engine.wake_up()
        assert engine.generate([CONV], GREEDY) == with_adapter
        engine.load_adapter(None)
        assert engine.generate([CONV], GREEDY) == base
    finally:
        engine.close()


@pytest.mark.gpu
def test_the_engine_runs_on_the_callers_device(tiny_engine_model_dir):
    """On the last visible device, the engine's memory is taken there, not on device 0."""
    torch = _cuda()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    from agentr.engines.vllm_engine import VLLMEngine

    last = torch.cuda.device_count() - 1
    torch.cuda.set_device(last)
    free_before = [torch.cuda.mem_get_info(d)[0] for d in (0, last)]
    engine = VLLMEngine(tiny_engine_model_dir, max_model_len=1024, gpu_memory_utilization=0.3,
                        enforce_eager=True)
    try:
        free_after = [torch.cuda.mem_get_info(d)[0] for d in (0, last)]
        total = torch.cuda.mem_get_info(last)[1]
        assert free_before[1] - free_after[1] > 0.2 * total  # ~0.3 of the device: vLLM's share
        assert free_before[0] - free_after[0] < 0.05 * total
    finally:
        engine.close()
        torch.cuda.set_device(0)
