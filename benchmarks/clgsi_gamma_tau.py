"""γ and τ of CLGSI's paper-variant contrastive loss: the grid behind the presets.

Usage (from the repository root, about 40 minutes on 2 CPU cores)::

    HF_HUB_OFFLINE=1 python benchmarks/clgsi_gamma_tau.py OUT_DIR

For each data set shape (mosi, mosei, sims) it writes a synthetic file with the planted signal
(``msakit synth --like D --n 256 64 128 --seed 0``) and trains CLGSI (``variant=paper``, the
packaged MiniLM text encoder, batch 32, 5 epochs, ``sampler=random``, seeds 1 and 2) once with
``contrastive=false`` and once per (γ, τ) of the grid. Every run appends one JSON line to
``OUT_DIR/runs.jsonl`` (runs already there are skipped, so an interrupted sweep resumes); the
end prints the table: mean over the seeds of the best validation MAE and of the test MAE / Corr
of the checkpoint kept on validation.

The choice per data set is the grid point with the lowest mean validation MAE, kept only if it
is not worse than ``contrastive=false`` on validation MAE (the contrastive term must not hurt).
Test numbers are reported, never used to choose. Results: docs/readings.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from msakit import api

DATASETS = ("mosi", "mosei", "sims")
SIZES = (256, 64, 128)
SEEDS = (1, 2)
EPOCHS = 5
BATCH = 32
GAMMAS = (0.05, 0.3)
TEMPERATURES = (0.1, 0.5)
COMMON = {"sampler": "random", "variant": "paper"}


def grid() -> list[tuple[str, dict]]:
    points = [("contrastive=false", {"contrastive": False})]
    for gamma in GAMMAS:
        for tau in TEMPERATURES:
            points.append((f"gamma={gamma} tau={tau}", {"gamma": gamma, "temperature": tau}))
    return points


def run(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[(row["dataset"], row["label"], row["seed"])] = row
    for dataset in DATASETS:
        data = out / f"{dataset}.pkl"
        if not data.exists():
            api.synth(dataset, SIZES, data, seed=0)
        for label, settings in grid():
            for seed in SEEDS:
                if (dataset, label, seed) in done:
                    continue
                folder = out / "runs" / dataset / label.replace(" ", "_") / f"s{seed}"
                result = api.train(
                    "clgsi",
                    dataset,
                    data,
                    seeds=[seed],
                    epochs=EPOCHS,
                    batch=BATCH,
                    out=folder,
                    overrides={**COMMON, **settings},
                    quiet=True,
                )
                history = json.loads((folder / f"seed-{seed}" / "history.json").read_text())
                test = result.rows[0]
                row = {
                    "dataset": dataset,
                    "label": label,
                    "seed": seed,
                    "valid_MAE": min(h["valid_MAE"] for h in history),
                    "test_MAE": float(test["MAE"]),
                    "test_Corr": float(test["Corr"]),
                }
                done[(dataset, label, seed)] = row
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    return list(done.values())


def table(rows: list[dict]) -> str:
    lines = [
        "| data set | setting | valid MAE | test MAE | test Corr |",
        "|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        for label, _ in grid():
            mine = [r for r in rows if r["dataset"] == dataset and r["label"] == label]
            if not mine:
                continue
            mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("valid_MAE", "test_MAE",
                                                                         "test_Corr")}
            lines.append(
                f"| {dataset} | {label} | {mean['valid_MAE']:.3f} | {mean['test_MAE']:.3f} "
                f"| {mean['test_Corr']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/clgsi_gamma_tau.py OUT_DIR")
    print(table(run(Path(sys.argv[1]))))
