"""Do ConKI's pretrained audio/vision adapters carry anything to the target data set?

Usage (from the repository root)::

    HF_HUB_OFFLINE=1 python benchmarks/conki_transfer.py OUT_DIR

Stage 2 cannot reuse stage 1's audio/vision input projections (MOSEI has 74/35 features, MOSI
5/20), so it starts new ones, and the frozen adapters then read hidden states they never saw.
This measures, on synthetic files with a planted cross-dataset signal, whether the pretrained
adapters still help, under two readings of stage 2:

* ``current``: the new projections start at random and train with everything else (what
  ``msakit train --adapters`` does);
* ``fit-projection``: first the new projections alone are fitted for ``FIT_EPOCHS`` epochs on
  the target's task loss through the frozen stage-1 network (encoders, adapters, F_m, fusion
  network and head, all from stage 1), then stage 2 runs as in ``current`` from those
  projections (F_m, fusion and head start afresh, as in ``current``).

Each is run with the pretrained adapters and with random frozen adapters (the same stage-1
file with its adapter weights re-drawn): the difference is what pretraining carries.

Data: ``synthetic.make_synthetic(..., shared_latent=True)`` (a 4-wide latent carries the label
and reaches each shape's audio/vision features through its own fixed random matrix), external
MOSEI-shaped 384/96/96 clips (file seed 0), target MOSI-shaped 96/128/256 (file seed 1), audio
and vision cut to 60/45 frames.
Model: ``modalities=va`` (audio and vision only, so nothing reaches the head but through them),
``use_pan_knowledge=false`` (F_m = FC(A_m): the prediction must pass the adapters),
``contrastive=false``, small widths (``SMALL``), lr 1e-3 in every group (constant) in both
stages, batch 32; stage 1 8 epochs, stage 2 8 epochs (early stop off), seeds 1 and 2 (each seed
has its own stage 1). Writes ``OUT_DIR/runs.jsonl`` and prints the table (test MAE / Corr of
the best validation epoch, mean over seeds). Results: docs/readings.md.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from msakit import api
from msakit.config import RunConfig
from msakit.data.synthetic import write_synthetic
from msakit.models.conki import install_adapters
from msakit.training import distributed
from msakit.training.inputs import build_model, prepare_run
from msakit.training.stages import pretrain_adapters
from msakit.training.trainer import Trainer, evaluate_model

SEEDS = (1, 2)
EXTERNAL = ("mosei", (384, 96, 96), 0)
TARGET = ("mosi", (96, 128, 256), 1)
STAGE1_EPOCHS = 8
STAGE2_EPOCHS = 8
FIT_EPOCHS = 3
BATCH = 32
SMALL = {
    "modalities": "va",
    "use_pan_knowledge": False,
    "contrastive": False,
    "shared_dim": 32,
    "encoder_heads": 4,
    "feedforward": 64,
    "adapter_dim": 16,
    "adapter_heads": 4,
    "fusion_dim": 16,
    "head_dim": 16,
    "lr": 1e-3,
    "sampler": "random",
}
PROJECTIONS = ("project_audio.", "project_vision.")


def random_adapters(adapters: Path, config: RunConfig, dims, encoder, out: Path) -> Path:
    """``adapters`` with the adapter weights re-drawn (seed 999): the no-pretraining control."""
    state = torch.load(adapters, map_location="cpu", weights_only=True)
    torch.manual_seed(999)
    fresh = build_model(config, dims, copy.deepcopy(encoder)).adapter_state()
    state["model"] = {k: fresh[k].clone() for k in state["model"]}
    torch.save(state, out)
    return out


def stage2(variant: str, adapters: Path, config: RunConfig, inputs, seed: int, out: Path):
    """One stage-2 run; returns the test metrics of the best validation epoch."""
    ctx = distributed.DistContext()
    train, valid = inputs.features.splits["train"], inputs.features.splits["valid"]
    state = torch.load(adapters, map_location="cpu", weights_only=True)
    install = {"model": state["model"], "encoders": state["encoders"]}
    start = None
    if variant == "fit-projection":
        torch.manual_seed(seed)
        net = build_model(config, inputs.dims, copy.deepcopy(inputs.encoder))
        install_adapters(net, install)
        heads = {k: v for k, v in state["stage1_rest"].items() if not k.startswith(PROJECTIONS)}
        net.load_state_dict(heads, strict=False)
        for name, param in net.named_parameters():
            param.requires_grad_(name.startswith(PROJECTIONS))
        fit = copy.deepcopy(config)
        fit.epochs = fit.early_stop = FIT_EPOCHS
        Trainer(net, fit, train, valid, run_dir=out / "fit", seed=seed, dist=ctx, quiet=True).fit()
        best = torch.load(out / "fit" / "best.pt", map_location="cpu", weights_only=True)
        start = {k: v for k, v in best["model"].items() if k.startswith(PROJECTIONS)}
    torch.manual_seed(seed)
    net = build_model(config, inputs.dims, copy.deepcopy(inputs.encoder))
    install_adapters(net, install)
    if start is not None:
        net.load_state_dict(start, strict=False)
    Trainer(net, config, train, valid, run_dir=out / "run", seed=seed, dist=ctx, quiet=True).fit()
    best = torch.load(out / "run" / "best.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(best["model"])
    return evaluate_model(net, inputs.features.splits["test"], "mosi", BATCH).metrics


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for like, sizes, seed in (EXTERNAL, TARGET):
        files[like] = out / f"{like}.pkl"
        if not files[like].exists():
            write_synthetic(files[like], like, tuple(sizes), seed=seed, shared_latent=True,
                            frames={"audio": 60, "vision": 45})
    log = out / "runs.jsonl"
    done = set()
    if log.exists():
        done = {(r["variant"], r["adapters"], r["seed"]) for r in map(json.loads, log.open())}
    config = api.build_config(
        "conki", "mosi", seeds=[SEEDS[0]], epochs=STAGE2_EPOCHS, batch=BATCH, overrides=SMALL
    )
    config.early_stop = STAGE2_EPOCHS
    for seed in SEEDS:
        stage1 = out / f"stage1-s{seed}"
        if not (stage1 / "adapters.pt").exists():
            pretrain_adapters(
                "mosi", files["mosei"], out=stage1, epochs=STAGE1_EPOCHS, batch=BATCH,
                overrides=SMALL, seed=seed, quiet=True,
            )
        probe_dir = out / f"probe-s{seed}"
        inputs = prepare_run(config, files["mosi"], probe_dir, distributed.DistContext(),
                             checkpoint_format="msakit-checkpoint-1")
        pretrained = stage1 / "adapters.pt"
        control = random_adapters(pretrained, config, inputs.dims, inputs.encoder,
                                  out / f"random-adapters-s{seed}.pt")
        for variant in ("current", "fit-projection"):
            for kind, adapters in (("pretrained", pretrained), ("random", control)):
                if (variant, kind, seed) in done:
                    continue
                metrics = stage2(variant, adapters, config, inputs, seed,
                                 out / "runs" / f"{variant}-{kind}-s{seed}")
                row = {"variant": variant, "adapters": kind, "seed": seed,
                       "test_MAE": metrics["MAE"], "test_Corr": metrics["Corr"]}
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in log.open()]
    print("| stage 2 | adapters | test MAE | test Corr |\n|---|---|---|---|")
    for variant in ("current", "fit-projection"):
        for kind in ("pretrained", "random"):
            mine = [r for r in rows if r["variant"] == variant and r["adapters"] == kind]
            if mine:
                mae = sum(r["test_MAE"] for r in mine) / len(mine)
                corr = sum(r["test_Corr"] for r in mine) / len(mine)
                print(f"| {variant} | {kind} | {mae:.3f} | {corr:.3f} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/conki_transfer.py OUT_DIR")
    main(Path(sys.argv[1]))
