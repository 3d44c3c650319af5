"""The run lock (``msakit.core.files.RunLock``): a kernel lock, never two holders, never stale.

The race test starts several processes that take and give back one folder's lock hundreds of
times as fast as they can; inside the lock each creates a marker file with ``O_EXCL`` and
removes it, so two holders at one moment would make a create fail. The rounds are counted, not
timed: the test holds however slow or loaded the machine is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from msakit.core.errors import MsakitError
from msakit.core.files import LOCK_FILE, RunLock

SRC = Path(__file__).resolve().parents[1] / "src"

RACER = r"""
import os, sys
from msakit.core.errors import MsakitError
from msakit.core.files import RunLock
folder, rounds = sys.argv[1], int(sys.argv[2])
marker = os.path.join(folder, "inside")
taken = refused = clashes = 0
while taken < rounds:
    lock = RunLock(folder)
    try:
        lock.acquire()
    except MsakitError:
        refused += 1
        continue
    try:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            clashes += 1
        else:
            os.close(fd)
            os.unlink(marker)
        taken += 1
    finally:
        lock.release()
print(taken, refused, clashes)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def test_racing_processes_never_hold_the_lock_together(tmp_path):
    folder = tmp_path / "run"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(folder), "150"], env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=900)
        assert racer.returncode == 0, err
        results.append([int(x) for x in out.split()])
    assert all(taken == 150 for taken, _, _ in results)
    assert sum(clashes for _, _, clashes in results) == 0, results
    assert not (folder / LOCK_FILE).exists()  # the last holder removed it


def test_a_second_holder_is_refused_with_the_holders_pid(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held
        with pytest.raises(MsakitError, match=f"being written by process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    RunLock(tmp_path).acquire()  # free again


def test_a_killed_holder_leaves_no_lock(tmp_path):
    code = ("import sys; from msakit.core.files import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(MsakitError, match=f"process {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays, the lock does not
    with RunLock(tmp_path):
        pass


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"12 " + b"h" * 10_000])
def test_a_foreign_lock_file_is_no_obstacle(tmp_path, content):
    (tmp_path / LOCK_FILE).write_bytes(content)
    with RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().split()[0] == str(os.getpid())


def test_a_lock_path_that_is_not_a_regular_file_is_one_error(tmp_path):
    os.mkfifo(tmp_path / LOCK_FILE)
    with pytest.raises(MsakitError, match="not a regular file"):
        RunLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).unlink()
    (tmp_path / LOCK_FILE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(MsakitError, match="cannot lock"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / "elsewhere").exists()
