"""γ and τ of CLGSI's paper-variant contrastive loss: the grid behind the presets.

Usage (from the repository root)::

    HF_HUB_OFFLINE=1 python benchmarks/clgsi_gamma_tau.py OUT_DIR

For each data set shape (mosi, mosei, sims) it writes a synthetic file with the planted signal
(``msakit synth --like D --n 192 64 128 --seed 0``, audio/vision cut to a fifth of the real
frames, ``FRAMES``) and trains CLGSI (``variant=paper``, batch
32, 6 epochs, ``sampler=random``, seeds 1 and 2) once with
``contrastive=false`` and once per (γ, τ) of the grid. The text encoder is a small random BERT
built here (2 layers, 64 wide, 4 heads, bert-base-uncased vocabulary size, ``torch.manual_seed(0)``)
and fine-tuned like BERT: fine-tuning the packaged MiniLM costs about 8 minutes a run on a
shared 2-core machine, this about one. Every run appends one JSON line to
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
from msakit.data.synthetic import write_synthetic

DATASETS = ("mosi", "mosei", "sims")
SIZES = (192, 64, 128)
# audio/vision cut to a fifth of the real frames (the signal is in every valid frame)
FRAMES = {
    "mosi": {"audio": 100, "vision": 75},
    "mosei": {"audio": 100, "vision": 75},
    "sims": {"audio": 80, "vision": 55},
}
SEEDS = (1, 2)
EPOCHS = 6
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


def tiny_bert(folder: Path) -> Path:
    """A small random BertModel saved to ``folder`` (deterministic)."""
    import torch
    from transformers import BertConfig, BertModel

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=30522,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
        )
        BertModel(config).save_pretrained(folder)
    return folder


def run(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    encoder = str(tiny_bert(out / "tiny_bert"))
    log = out / "runs.jsonl"
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            done[(row["dataset"], row["label"], row["seed"])] = row
    for dataset in DATASETS:
        data = out / f"{dataset}.pkl"
        if not data.exists():
            write_synthetic(data, dataset, *SIZES, seed=0, frames=FRAMES[dataset])
        for label, settings in grid():
            for seed in SEEDS:
                if (dataset, label, seed) in done:
                    continue
                folder = out / "runs" / dataset / label.replace(" ", "_") / f"s{seed}"
                result = api.train(
                    "clgsi",
                    dataset,
                    data,
                    text_encoder=encoder,
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
