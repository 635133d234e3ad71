"""Training's freed memory goes back to the system before a generation engine starts beside it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentr.memory import _malloc_trim

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim")

# In a fresh process: glibc made to serve blocks of up to 64 MB from its heap (as it does by itself
# once training has freed a few large tensors) and to leave the heap's top untrimmed, 1 GB of
# activation-sized tensors allocated between small ones that stay (so the freed gigabyte is holes,
# as after a training step) and freed, then the hand-over. The fake engine reads the resident size when it wakes.
SCRIPT = textwrap.dedent("""
    import ctypes, json
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    import torch
    from agentr.callbacks import GenerationCallback

    def resident_gb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e9

    class Engine:
        def wake_up(self):
            self.resident_at_wake = resident_gb()
        def load_adapter(self, path):
            pass
        def sleep(self):
            pass

    held, kept = [], []
    for _ in range(128):  # 128 x 8 MB, written, so resident
        held.append(torch.ones(2 << 20))
        kept.append(torch.ones(1024))
    del held
    freed = resident_gb()
    callback = GenerationCallback()
    callback._module_kwargs = {"model": "unused"}
    callback._engine = engine = Engine()
    callback.policy(None)
    print(json.dumps({"freed": freed, "at_wake": engine.resident_at_wake}))
""")


def test_the_engine_wakes_after_trainings_freed_heap_is_returned():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    resident = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    # the freed gigabyte was still resident before the hand-over, and is gone when the engine wakes
    assert resident["freed"] - resident["at_wake"] > 0.8, resident

