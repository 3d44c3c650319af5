"""Shared fixtures: tiny BERT encoders with random weights and tiny synthetic feature files."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Converted copies of pickles (msakit.data.mmsa.cache_dir) go to a folder of this test session,
# not the user's cache; subprocesses (CLI tests) inherit it.
if not os.environ.get("MSAKIT_CACHE_DIR"):
    os.environ["MSAKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="msakit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MSAKIT_CACHE_DIR"], ignore_errors=True)
# A test's Ctrl-C must reach this process as a terminal's does, also when the suite runs as a
# background job of a non-interactive shell (which starts it with SIGINT ignored; msakit
# respects an ignored signal): Python's own handler, as a foreground process has it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def make_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, vocab: int = 30522) -> Path:
    """Save a randomly initialised BertModel (bert-base-uncased vocabulary size) to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT folder (vocab 30522), for fast CLGSI tests."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_bert_12(tmp_path_factory) -> Path:
    """A 12-layer, 16-wide random BERT folder, for ConKI adapter insertion points."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert_12"), layers=12, hidden=16)


@pytest.fixture(scope="session")
def mosi_file(tmp_path_factory) -> Path:
    """A small synthetic MOSI-shaped MMSA pickle (real 50/500/375 frames, 5/20 dims)."""
    from msakit.data.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("data") / "mosi.pkl"
    write_synthetic(str(path), "mosi", (48, 16, 16), seed=0)
    return path


@pytest.fixture(scope="session")
def sims_file(tmp_path_factory) -> Path:
    """A small synthetic SIMS-shaped MMSA pickle (39/400/55 frames, 33/709 dims)."""
    from msakit.data.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("data") / "sims.pkl"
    write_synthetic(str(path), "sims", (32, 12, 12), seed=0)
    return path


def write_short_synthetic(
    path: Path, like: str, n: tuple[int, int, int], frames: dict[str, int], seed: int = 0
) -> Path:
    """A synthetic MMSA pickle with the real feature sizes but audio/vision cut to ``frames``
    (e.g. {"audio": 40, "vision": 30}) frames: the same data contract, a fraction of the cost."""
    from msakit.data.synthetic import write_synthetic

    return write_synthetic(str(path), like, tuple(n), seed=seed, frames=frames)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread (the same kernels in every run), then restore."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def default_signals() -> None:
    """``preexec_fn`` of a test's child process: SIGINT, SIGTERM and SIGHUP handled by default,
    as in a terminal's foreground command, even when the tests themselves run with them
    ignored (a background job of a non-interactive shell ignores SIGINT, ``nohup`` SIGHUP; an
    ignored signal stays ignored across exec, and msakit respects that, so a child started
    from there would never see the test's Ctrl-C)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def clgsi_checkpoint(named: str, tiny_bert: Path, data: Path, tmp_path: Path, amp: str = "off"):
    """A loaded CLGSI checkpoint of preset ``named`` (random weights from seed 0, the tiny BERT
    as text encoder, precision ``amp``) for ``data``'s shapes, written under ``tmp_path``."""
    from msakit.api import load_checkpoint
    from msakit.data.mmsa import load_feature_file
    from msakit.encoders.text import load_text_encoder
    from msakit.importing import _write_checkpoint
    from msakit.models.base import Dims
    from msakit.models.registry import preset
    from msakit.training.inputs import build_model

    config = preset("clgsi", "mosi", named)
    config.text_encoder = str(tiny_bert)
    config.amp = amp
    dims = Dims.of(load_feature_file(str(data)))
    torch.manual_seed(0)
    net = build_model(config, dims, load_text_encoder(str(tiny_bert)))
    out = tmp_path / f"{named}-{amp}.pt"
    _write_checkpoint(net, config, dims, origin={"source": "test", "weights": ""}, out=out)
    return load_checkpoint(out)


def run_cli(argv: list[str]) -> int:
    """``msakit ARGV`` in this process: its exit code, also when it exits through SystemExit."""
    from msakit import cli

    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code)


@pytest.fixture(scope="session")
def small_mosi_npz(tmp_path_factory) -> Path:
    """23 / 8 / 8 MOSI-shaped samples, audio/vision cut to 40 / 30 frames, as a code-free npz."""
    from msakit.data.mmsa import convert_to_npz

    root = tmp_path_factory.mktemp("small_mosi")
    pkl = write_short_synthetic(root / "mosi.pkl", "mosi", (23, 8, 8), {"audio": 40, "vision": 30})
    convert_to_npz(pkl, root / "mosi.npz")
    return root / "mosi.npz"


def close_in_distribution(a: torch.Tensor, b: torch.Tensor, n: int, z: float = 5.0) -> None:
    """Means and variances over the first dimension (n draws) agree within z standard errors
    (of the mean: sqrt(var / n); of the variance: sqrt((m4 - var^2) / n))."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    var_a, var_b = a.var(0), b.var(0)
    se_mean = ((var_a + var_b) / n).sqrt()
    assert torch.all((mean_a - mean_b).abs() <= z * se_mean + 1e-6), (mean_a - mean_b).abs().max()
    m4_a = (a - mean_a).pow(4).mean(0)
    m4_b = (b - mean_b).pow(4).mean(0)
    se_var = (((m4_a - var_a**2).clamp_min(0) + (m4_b - var_b**2).clamp_min(0)) / n).sqrt()
    assert torch.all((var_a - var_b).abs() <= z * se_var + 1e-6), (var_a - var_b).abs().max()


def held_locks(folder: Path) -> list[Path]:
    """The lock files under ``folder`` that some process still holds (``flock``). A lock file
    left by an interrupted or killed process is no lock: the kernel dropped it."""
    import fcntl

    held = []
    for path in folder.rglob("*.lock"):
        with open(path, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held.append(path)
    return held


def best_checkpoint(seed_dir: Path) -> dict:
    """A trained seed's best checkpoint as one mapping (``model`` weights, ``config``, ``dims``,
    ...): its ``model.safetensors`` + ``config.json``, or an earlier run's ``best.pt``."""
    from msakit.training.pretrained import best_weights_file, read_checkpoint

    path = best_weights_file(Path(seed_dir))
    assert path is not None, f"{seed_dir} holds no best weights"
    return read_checkpoint(path)
