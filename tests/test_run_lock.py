"""One writer per output directory: a second `agentr collect`/`evaluate` is refused in one line
naming the holder, and the lock of a process that died never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentr.cli import main
from agentr.run_lock import LOCK_FILE, DirectoryLock

HOLD = "import sys; from agentr.run_lock import DirectoryLock; DirectoryLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); sys.stdin.read()"


def hold_lock(directory: Path) -> subprocess.Popen:
    """Another process holding `directory`'s lock until its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert holder.stdout.readline() == "held\n"
    return holder


def assert_refused_while_held(directory: Path, args: list[str], capsys) -> None:
    """`agentr ARGS` while another process holds `directory`'s lock: one line naming it."""
    holder = hold_lock(directory)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
    finally:
        holder.communicate("")
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"agentr: error: {directory} is being written by another agentr "
                            f"process (pid {holder.pid}")


@pytest.mark.parametrize("command", ["collect", "evaluate"])
def test_a_second_writer_of_an_out_dir_is_refused_naming_the_holder(tmp_path, command, capsys):
    out_dir = tmp_path / "out"
    assert_refused_while_held(out_dir, [command, "--model", str(tmp_path / "no-model"),
                                        "--env_options", '{"max_depth": 1}', "--num_tasks", "1",
                                        "--out_dir", str(out_dir)], capsys)
    assert sorted(p.name for p in out_dir.iterdir()) == [LOCK_FILE]  # nothing else written


def test_the_lock_of_a_dead_process_does_not_block(tmp_path):
    holder = hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)  # its file is left
    with DirectoryLock(tmp_path) as lock:
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert DirectoryLock(tmp_path).try_acquire().startswith(f"{tmp_path} is being written")
    assert lock.try_acquire() is None  # released: anyone may take it again
    lock.release()
