"""Signals end every command as Ctrl-C does (issue 19, must-have 6).

SIGTERM (what ``timeout``, a batch scheduler and ``docker stop`` send) and SIGHUP (a closed
terminal) end a command with one ``error:`` line and their own status (143, 129): temporary
files removed, the run lock released, the running Optuna trial marked FAIL, extract's workers
ended. The commands run as real processes (``python -m msakit``, a session of their own); each
test waits until a file shows the command is working, then sends the signal; waits are bounded
by generous timeouts that only fail a test, never by sleeps that synchronise.

Also here: a first run that failed before its first epoch does not block the same command.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_signals, held_locks, run_cli

SRC = Path(__file__).resolve().parents[1] / "src"
STATUS = {signal.SIGTERM: 143, signal.SIGHUP: 129}
LINE = {signal.SIGTERM: "terminated (SIGTERM)", signal.SIGHUP: "terminated (SIGHUP"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def _train_argv(data: Path, bert: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(bert), "--seeds", "1", "--epochs", "1", "--batch", "8",
            "--out", str(out), "--quiet", *extra]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "msakit", *argv],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=default_signals)


def _wait_for(proc: subprocess.Popen, folder: Path, pattern: str) -> None:
    """Until a file matching ``pattern`` appears under ``folder`` (the process ending first, or
    10 minutes passing, fails the test with its stderr)."""
    deadline = time.monotonic() + 600
    while not any(folder.glob(pattern)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not any(folder.glob(pattern)):
        _end(proc)
        pytest.fail(f"{pattern} never appeared:\n{proc.communicate(timeout=60)[1]}")


def _signal_and_wait(proc: subprocess.Popen, signum: int) -> str:
    """Send ``signum`` to the command's process alone (as ``timeout`` does); its stderr."""
    try:
        os.kill(proc.pid, signum)
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # -X faulthandler prints where it hung
            pytest.fail(f"still running 300 s after the signal:\n{proc.communicate(timeout=60)[1]}")
    finally:
        _end(proc)
    return err


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert all(line.startswith(("error:", "warning:", "note:")) for line in lines), err
    return errors[0]


def _check_ended(proc: subprocess.Popen, err: str, signum: int) -> None:
    assert "Traceback" not in err, err
    assert proc.returncode == STATUS[signum], (proc.returncode, err)
    assert LINE[signum] in one_error(err)


# --------------------------------------------------------------------------- in this process
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signal_is_one_line_with_its_status(capsys, signum):
    from msakit.core.guard import run_guarded

    previous = signal.signal(signum, signal.SIG_DFL)  # also under nohup
    cleaned = []

    def command() -> int:
        try:
            signal.raise_signal(signum)
            return 0
        finally:
            cleaned.append(True)  # the paths that clean up after Ctrl-C run

    try:
        assert run_guarded(command) == STATUS[signum]
        assert signal.getsignal(signum) is signal.SIG_DFL
    finally:
        signal.signal(signum, previous)
    assert cleaned == [True]
    assert LINE[signum] in one_error(capsys.readouterr().err)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_sighup_stays_ignored(capsys):
    """Under ``nohup`` SIGHUP is ignored: msakit leaves it so."""
    from msakit.core.guard import run_guarded

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        def command() -> int:
            signal.raise_signal(signal.SIGHUP)
            return 0

        assert run_guarded(command) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert capsys.readouterr().err == ""


def test_a_signal_right_after_a_temporary_file_is_made_leaves_none(tmp_path, monkeypatch):
    """The atomic writer names its temporary file before creating it: a signal landing just
    after the file exists (here: in the ``os.close`` that follows) still removes it."""
    from msakit.core.files import write_text_atomic

    real_close = os.close

    def interrupted(fd: int) -> None:
        real_close(fd)
        monkeypatch.setattr(os, "close", real_close)
        raise KeyboardInterrupt

    (tmp_path / "a.txt").write_text("before\n")
    monkeypatch.setattr(os, "close", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(tmp_path / "a.txt", "after\n")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "before\n"


# --------------------------------------------------------------------------- real processes
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signal_ends_train_cleanly(small_mosi_npz, tiny_bert, tmp_path, signum):
    """``timeout -s TERM 20 msakit train ...`` then ``ls -a`` the run folder: status 143, one
    line, no temporary file, the lock released, the last finished epoch's last.pt kept."""
    out = tmp_path / "run"
    argv = _train_argv(small_mosi_npz, tiny_bert, out, "--set", "early_stop=100000")
    argv[argv.index("--epochs") + 1] = "100000"
    proc = _start(argv)
    _wait_for(proc, tmp_path, "run/seed-1/last.pt")
    err = _signal_and_wait(proc, signum)
    _check_ended(proc, err, signum)
    assert not held_locks(out), err
    # ls -a; a lock file whose removal the signal cut short holds no lock (the kernel dropped it)
    names = {p.name for p in out.iterdir()} - {".msakit.lock"}
    assert {"config.yaml", "seed-1"} <= names <= {"config.yaml", "seed-1", "tensorboard",
                                                  "train.log"}, (
        names, err)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], (list(out.rglob("*")), err)
    assert (out / "seed-1" / "last.pt").is_file()


def test_sigterm_marks_the_running_tune_trial_failed(small_mosi_npz, tiny_bert, tmp_path):
    sweep = tmp_path / "sweep"
    proc = _start(["tune", "--model", "clgsi", "--dataset", "mosi", "--data",
                   str(small_mosi_npz), "--text-encoder", str(tiny_bert), "--trials", "100000",
                   "--epochs", "100000", "--set", "early_stop=100000", "--out", str(sweep),
                   "--quiet"])
    _wait_for(proc, tmp_path, "sweep/*/trial-0/config.yaml")  # OUT/STUDY/trial-K
    err = _signal_and_wait(proc, signal.SIGTERM)
    _check_ended(proc, err, signal.SIGTERM)
    with sqlite3.connect(sweep / "optuna.db") as db:
        states = [row[0] for row in db.execute("SELECT state FROM trials ORDER BY number")]
    assert states and "RUNNING" not in states and states[-1] == "FAIL", states
    assert not [p for p in sweep.rglob("*") if p.name.endswith(".tmp")]
    assert not held_locks(sweep)


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``, each with its start time (a pid may be reused)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and int(stat[1]) == pid:
                found[int(entry.name)] = stat[19]
    return found


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...), or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[19] == started and stat[0] not in ("Z", "X")


def _wait_gone(children: dict[int, str], seconds: float = 120) -> list[int]:
    """The children still alive once all are gone or ``seconds`` passed (a backstop)."""
    deadline = time.monotonic() + seconds
    while any(_alive(p, s) for p, s in children.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p, s in children.items() if _alive(p, s)]


def _extract_with_workers(tmp_path: Path) -> subprocess.Popen:
    for module in ("av", "cv2", "opensmile", "skimage"):
        pytest.importorskip(module)
    from video_clips import make_clip, moving

    make_clip(tmp_path / "clip.mp4", moving(12, (4, 4), (1, 0)))
    rows = "".join(f"c{i},clip.mp4,words {i},1.0\n" for i in range(100000))
    (tmp_path / "clips.csv").write_text("id,video,text,label\n" + rows)
    proc = _start(["extract", str(tmp_path / "clips.csv"), "--out", str(tmp_path / "x.npz"),
                   "--quiet", "--workers", "2"])
    _wait_for(proc, tmp_path, "x.npz.cache/*.npz")
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signal_ends_extract_and_its_workers(tmp_path, signum):
    """No worker outlives ``extract`` (seen: orphaned workers holding ~1 GB two minutes after a
    SIGTERM); no temporary file is left in the clip cache."""
    proc = _extract_with_workers(tmp_path)
    children = _children(proc.pid)
    assert len(children) >= 2, children  # the workers (and multiprocessing's tracker)
    err = _signal_and_wait(proc, signum)
    _check_ended(proc, err, signum)
    assert _wait_gone(children) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG, /proc")
def test_extract_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL runs no cleanup: the workers end because their parent did (PR_SET_PDEATHSIG)."""
    proc = _extract_with_workers(tmp_path)
    children = _children(proc.pid)
    assert len(children) >= 2, children
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=300)
    try:
        assert _wait_gone(children) == []
    finally:
        for pid, started in children.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- a failed first run
def test_a_first_run_that_failed_before_its_first_epoch_does_not_block(
    small_mosi_npz, tiny_bert, tmp_path, monkeypatch, capsys
):
    """A disk that was full during the first epoch: the same command, run again once there is
    room, trains (it was refused with "already holds a run")."""
    import torch

    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    from msakit.training import pretrained

    real_write = pretrained.write_atomic

    def full_write(path, write):  # the best weights (safetensors) meet the full disk too
        return real_write(path, lambda f: full(None, f))

    out = tmp_path / "run"
    argv = _train_argv(small_mosi_npz, tiny_bert, out)
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(pretrained, "write_atomic", full_write)
    assert run_cli(argv) == 2
    assert "no space left on the device" in one_error(capsys.readouterr().err)
    assert (out / "config.yaml").is_file() and not list(out.rglob("*.pt"))
    assert not list(out.rglob("*.safetensors"))
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(pretrained, "write_atomic", real_write)
    assert run_cli(argv) == 0, capsys.readouterr().err
    assert (out / "results.csv").is_file()
    # a finished run still refuses it, and a config.yaml msakit did not write is never replaced
    assert run_cli(argv) == 2
    assert "already holds a run" in one_error(capsys.readouterr().err)
    other = tmp_path / "project"
    other.mkdir()
    (other / "config.yaml").write_text("name: my project\n")
    assert run_cli(_train_argv(small_mosi_npz, tiny_bert, other)) == 2
    assert "is not the configuration of an msakit run" in one_error(capsys.readouterr().err)
    assert (other / "config.yaml").read_text() == "name: my project\n"
