"""DDP under ``torchrun`` on CPU (gloo): 2 ranks train exactly as 1 process on the same global
batches (CLGSI and ConKI), rank 0 alone writes, and ``--set dropout=0`` turns every dropout off.

The training runs are small: 23 training samples, 2 epochs, audio/vision cut to
40/30 frames, 1 thread per process (the machine has 2 cores). CLGSI uses the opt-in bucket
sampler with global batch 10 (batches of 10, 10 and 3 samples in some order: shares 2 + 1 for
the last), ConKI the default random one with batch 8 (8, 8, 7: shares 4 + 3), so both samplers and
uneven shares are covered.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import best_checkpoint
from torch import nn

from msakit import api, cli
from msakit.data.batching import collate, epoch_plan, join_small_batches
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.training.distributed import GlobalBatchNorm
from msakit.training.inputs import run_stats
from msakit.training.trainer import Trainer, smallest_batch

TORCHRUN = Path(sys.executable).with_name("torchrun")
needs_torchrun = pytest.mark.skipif(
    not TORCHRUN.exists() or not dist.is_gloo_available(), reason="needs torchrun and gloo"
)
STEPS = {"clgsi": 6, "conki": 6}  # 2 epochs x 3 global batches
BATCH = {"clgsi": "10", "conki": "8"}
REL = 1e-4
SETS = {
    # lr.other: Adam turns the float noise of gradients that are zero in exact arithmetic (the
    # biases of the head's Linear before ReLU + BatchNorm while every unit is active) into
    # steps of about lr whose signs differ between any two summation orders (1 process vs 2
    # ranks, or 1 vs 2 threads). At the preset's 1e-2 that noise reaches the task loss at
    # ~1e-3 within a few steps; at 1e-4 it stays far below the tolerance.
    # subnet_reduction=2: with the paper's r = 8 the 5-wide audio's Subnet has one hidden ReLU
    # unit, whose pre-activation near 0 flips with the summation order (the same noise).
    "clgsi": ["common_dim=16", "specific_dim=16", "head_dim=16", "feedforward=32",
              "lr.other=1e-4", "sampler=bucket", "subnet_reduction=2"],
    # ConKI's preset learning rates (5e-6, 1e-6) hardly move the weights: 1e-3 makes the steps
    # count. standardize=true: every rank standardises its share as one process does.
    "conki": ["adapter_dim=8", "fusion_dim=8", "head_dim=8", "feedforward=32", "lr=1e-3",
              "sampler=random", "standardize=true"],
}
LOSSES = ("loss", "task_loss", "contrastive_loss")


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_file(small_mosi_npz) -> Path:
    return small_mosi_npz


def encoder_for(model: str, tiny_bert: Path, tiny_bert_12: Path) -> Path:
    return tiny_bert if model == "clgsi" else tiny_bert_12


def train_argv(model: str, data: Path, encoder: Path) -> list[str]:
    sets = [x for s in ["dropout=0", *SETS[model]] for x in ("--set", s)]
    return [
        "train", "--model", model, "--dataset", "mosi", "--data", str(data),
        "--text-encoder", str(encoder), "--epochs", "2", "--batch", BATCH[model], "--seeds", "1",
        "--quiet", *sets,
    ]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


@dataclass
class Pair:
    model: str
    one: Path
    two: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module", params=["clgsi", "conki"])
def pair(request, tmp_path_factory, data_file, tiny_bert, tiny_bert_12) -> Pair:
    """The same run by ``torchrun --nproc_per_node 2`` and by one process (in this one)."""
    model = request.param
    root = tmp_path_factory.mktemp(f"ddp_{model}")
    argv = train_argv(model, data_file, encoder_for(model, tiny_bert, tiny_bert_12))
    two = subprocess.Popen(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "msakit", *argv,
         "--out", str(root / "two"), "--log-steps", str(root / "two.jsonl")],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        with one_thread():  # meanwhile, the 1-process reference
            assert cli.main([*argv, "--out", str(root / "one"),
                             "--log-steps", str(root / "one.jsonl")]) == 0
        stdout, stderr = two.communicate(timeout=900)
    finally:
        if two.poll() is None:
            two.terminate()
            two.wait(timeout=60)
    assert two.returncode == 0, stderr[-4000:]
    return Pair(model, root / "one", root / "two", stdout, stderr)


def steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def results(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- torchrun
@needs_torchrun
def test_two_ranks_give_the_losses_of_one_process_at_every_step(pair):
    one = steps(pair.one.with_suffix(".jsonl"))
    two = steps(pair.two.with_suffix(".jsonl"))
    n = STEPS[pair.model]
    assert [s["step"] for s in one] == [s["step"] for s in two] == list(range(1, n + 1))
    assert [s["epoch"] for s in two] == [1] * (n // 2) + [2] * (n // 2)
    for a, b in zip(one, two, strict=True):
        for key in LOSSES:
            assert math.isclose(a[key], b[key], rel_tol=REL, abs_tol=1e-7), (a["step"], key)
        assert a["lr"] == b["lr"]
    # The contrastive loss is on (a small batch may have no pair): the comparison means something.
    assert sum(s["contrastive_loss"] > 0 for s in two) >= len(two) - 2


@needs_torchrun
def test_rank_zero_writes_results_and_checkpoints_once(pair):
    rows = results(pair.two)
    assert [r["seed"] for r in rows] == ["1", "mean", "std"]
    assert list(rows[0]) == list(results(pair.one)[0])
    assert pair.stdout.count("wrote ") == 1
    run = pair.two / "seed-1"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "history.json",
                                                     "model.safetensors"]
    assert not list(pair.two.rglob("*.tmp"))
    assert len(json.loads((run / "history.json").read_text())) == 2
    # Synchronised BatchNorm keeps BatchNorm's names: the checkpoint is one process's.
    state = best_checkpoint(run)
    reference = best_checkpoint(pair.one / "seed-1")
    assert state["model"].keys() == reference["model"].keys()


@needs_torchrun
def test_ranks_evaluate_like_one_process(pair, data_file):
    two, one = results(pair.two)[0], results(pair.one)[0]
    alone = api.evaluate(pair.two / "seed-1", data_file, "test")
    for name in ("MAE", "Corr"):
        assert math.isclose(float(two[name]), alone[name], abs_tol=1.5e-4), name
        assert math.isclose(float(two[name]), float(one[name]), abs_tol=1e-3), name
    one_valid = json.loads((pair.one / "seed-1" / "history.json").read_text())
    two_valid = json.loads((pair.two / "seed-1" / "history.json").read_text())
    for a, b in zip(one_valid, two_valid, strict=True):
        assert math.isclose(a["valid_MAE"], b["valid_MAE"], abs_tol=1e-3)
        assert math.isclose(a["valid_loss"], b["valid_loss"], rel_tol=1e-3)


# --------------------------------------------------------------------------- dropout
def _model_and_batch(model: str, encoder: Path, data: Path, overrides: list[str]):
    config = api.build_config(model, "mosi", text_encoder=str(encoder),
                              overrides=[*SETS[model], *overrides])
    features = load_feature_file(str(data))
    torch.manual_seed(0)
    net = api.build_model(config, api.dims_of(features), load_text_encoder(str(encoder)),
                          stats=run_stats(config, features))
    Trainer(net, config, features.splits["train"], features.splits["valid"], quiet=True)
    return net.train(), collate(features.splits["train"], np.arange(6))


@pytest.mark.parametrize("model", ["clgsi", "conki"])
def test_dropout_zero_turns_off_every_dropout(model, tiny_bert, tiny_bert_12, data_file):
    encoder = encoder_for(model, tiny_bert, tiny_bert_12)
    net, batch = _model_and_batch(model, encoder, data_file, ["dropout=0"])
    for name, module in net.named_modules():
        if isinstance(module, nn.Dropout):
            assert module.p == 0, name
        if isinstance(module, nn.MultiheadAttention):
            assert module.dropout == 0, name
    assert net.text_encoder.config.attention_probs_dropout_prob == 0
    with torch.no_grad():
        first, second = net(batch), net(batch)
    torch.testing.assert_close(first.prediction, second.prediction, rtol=0, atol=0)
    for key, value in first.representations.items():
        torch.testing.assert_close(value, second.representations[key], rtol=0, atol=0)
    # The control: with the preset's dropouts two training passes differ.
    net, batch = _model_and_batch(model, encoder, data_file, [])
    with torch.no_grad():
        assert not torch.equal(net(batch).prediction, net(batch).prediction)


# --------------------------------------------------------------------------- building blocks
@contextlib.contextmanager
def process_group_of_one():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("shape, momentum", [((7, 6), 0.1), ((5, 6, 4), None)])
def test_global_batchnorm_computes_batchnorm(shape, momentum):
    torch.manual_seed(0)
    reference = nn.BatchNorm1d(6, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-1, 1)
    ours = GlobalBatchNorm(6, momentum=momentum)
    ours.load_state_dict(reference.state_dict())
    x = (torch.randn(shape) * 3 + 1).requires_grad_()
    y = x.detach().clone().requires_grad_()
    weights = torch.randn(shape)
    with process_group_of_one():
        for _ in range(2):
            out = ours(y)
            (out * weights).sum().backward()
    for _ in range(2):
        expected = reference(x)
        (expected * weights).sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.grad, x.grad, rtol=1e-4, atol=1e-5)
    for a, b in ((ours.weight, reference.weight), (ours.bias, reference.bias)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    ours.eval()
    reference.eval()
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["random", "bucket"])
def test_small_batches_join_the_one_before_so_every_rank_has_samples(data_file, sampler):
    # 23 samples, batch 10: random 10, 10, 3; bucket (2 length buckets of 12 and 11) 10, 2, 10,
    # 1 in some order
    config = api.build_config("clgsi", "mosi", batch=10, overrides=[f"sampler={sampler}"])
    split = load_feature_file(str(data_file)).splits["train"]

    def plan(world: int) -> list[np.ndarray]:  # CLGSI's head has BatchNorm
        batches = epoch_plan(split, config.batch_size, seed=1, epoch=0, sampler=config.sampler)
        return join_small_batches(batches, smallest_batch(nn.BatchNorm1d(4), world))

    for world in (1, 2, 3, 4):
        batches = plan(world)
        assert sorted(np.concatenate(batches).tolist()) == list(range(23))
        assert min(len(b) for b in batches) >= max(2, world)
    if sampler == "random":  # only the last batch is ever small: unchanged up to 3 ranks
        assert [len(b) for b in plan(1)] == [len(b) for b in plan(3)] == [10, 10, 3]
        assert [len(b) for b in plan(4)] == [10, 13]


# --------------------------------------------------------------------------- no_sync
NO_SYNC_DRIVER = """
import contextlib, sys
import torch
from torch.nn.parallel import DistributedDataParallel
from msakit import api
from msakit.data.mmsa import load_feature_file
from msakit.encoders.text import load_text_encoder
from msakit.training import distributed
from msakit.training.inputs import run_stats
from msakit.training.trainer import Trainer

data, encoder, out, steps, *overrides = sys.argv[1:]
entered = [0]
no_sync = DistributedDataParallel.no_sync

def counted(self):
    entered[0] += 1
    return no_sync(self)

DistributedDataParallel.no_sync = counted
config = api.build_config("clgsi", "mosi", text_encoder=encoder, overrides=overrides)
features = load_feature_file(data)
ctx = distributed.setup()
for variant in ("every_batch", "no_sync") if ctx.enabled else ("one_process",):
    entered[0] = 0
    torch.manual_seed(0)
    net = api.build_model(config, api.dims_of(features), load_text_encoder(encoder),
                          stats=run_stats(config, features))
    trainer = Trainer(net, config, features.splits["train"], features.splits["valid"],
                      seed=1, dist=ctx, quiet=True)
    if variant == "every_batch":  # what the Trainer did before: all-reduce every backward pass
        trainer._no_sync = lambda step: contextlib.nullcontext()
    trainer.prepare()
    stats = trainer.train_epoch(0, max_steps=int(steps))
    if ctx.is_main:
        torch.save({"grads": {k: v.grad.clone() for k, v in net.named_parameters()
                              if v.grad is not None},
                    "stats": stats, "entered": entered[0], "steps": trainer.global_step},
                   f"{out}/{variant}.pt")
distributed.teardown(ctx)
"""


@needs_torchrun
def test_no_sync_on_accumulation_steps_gives_the_gradients_of_one_process(
        tmp_path, data_file, tiny_bert):
    """Under DDP a gradient-accumulation micro-step runs in ``no_sync``: only the group's last
    backward pass all-reduces, the sum of the group's gradients. CLGSI (BatchNorm over the
    global batch, a contrastive loss gathered with gradients), batch 5 and accumulate 4: the
    first optimizer step of 23 samples sums batches of 5, three of them in ``no_sync``. Its
    gradients on two ranks are those of the same ranks all-reducing after every backward pass
    (the Trainer before ``no_sync``: only the order of the sums differs) within rel 1e-5 and
    abs 2e-6 (the largest entries are about 3), with the same logged losses (rel 1e-6); and
    those of one process within rel 1e-4 and abs 1e-4 (there BatchNorm and the contrastive
    loss are computed without gathers, whose float32 sums differ most: at most 6e-5 seen)."""
    driver = tmp_path / "driver.py"
    driver.write_text(NO_SYNC_DRIVER)
    sets = ["dropout=0", *SETS["clgsi"], "accumulate=4", "batch_size=5", "sampler=random"]
    args = [str(driver), str(data_file), str(tiny_bert), str(tmp_path), "4", *sets]
    for launch in ([str(TORCHRUN), "--standalone", "--nproc_per_node", "2"], [sys.executable]):
        run = subprocess.run([*launch, *args], env=child_env(), capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stderr[-4000:]
    every, ours, one = (torch.load(tmp_path / f"{name}.pt", weights_only=True)
                        for name in ("every_batch", "no_sync", "one_process"))
    assert (every["entered"], ours["entered"]) == (0, 3)  # micro-steps 1-3 of the group
    assert every["steps"] == ours["steps"] == one["steps"] == 4
    assert ours["grads"].keys() == every["grads"].keys() == one["grads"].keys()
    assert len(ours["grads"]) > 50
    for reference, rtol, atol, loss_rtol in ((every, 1e-5, 2e-6, 1e-6), (one, 1e-4, 1e-4, REL)):
        for name, grad in reference["grads"].items():
            torch.testing.assert_close(ours["grads"][name], grad, rtol=rtol, atol=atol, msg=name)
        for key in LOSSES:
            assert math.isclose(ours["stats"][key], reference["stats"][key], rel_tol=loss_rtol)
