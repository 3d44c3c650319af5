"""``standardize=true`` against features in wildly different units: test MAE with and without.

Usage (from the repository root)::

    HF_HUB_OFFLINE=1 PYTHONPATH=src python benchmarks/standardize.py OUT_DIR

The file: ``msakit synth``'s MOSI shape (``make_synthetic("mosi", 200, 50, 50, seed=0)``),
audio/vision cut to 50 / 38 frames, where every clip has the same text (``[CLS] a clip
[SEP]``, as in tests/test_extract.py) so that only audio and vision carry the label, and every
audio/vision dimension is rescaled as extracted descriptors are spread: multiplied by
``10**U(-2, 3.5)`` and, for half of the dimensions, shifted by ``U(0, 4000)`` (seeded; padded
frames stay 0). The text encoder is the small random BERT of benchmarks/clgsi_gamma_tau.py.

Each model in ``MODELS`` trains with and without ``--set standardize=true`` (seeds 1 and 2,
``EPOCHS`` epochs, batch 16, early stopping off, ``--dataset custom --label-range -3 3``);
every run appends one JSON line to ``OUT_DIR/runs.jsonl`` (runs already there are skipped),
and the end prints the mean test MAE / Corr of the checkpoint kept on validation (a run whose
loss became NaN is recorded as diverged).
Results: docs/readings.md, "Extracted features".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from clgsi_gamma_tau import tiny_bert

from msakit import api
from msakit.config.datasets import custom_spec
from msakit.core.errors import TrainingDiverged
from msakit.data.safe_format import save_npz
from msakit.data.synthetic import make_synthetic

MODELS = ("clgsi", "misa", "mmim")
SEEDS = (1, 2)
EPOCHS = 8
BATCH = 16
FRAMES = {"audio": 50, "vision": 38}
SAME_TEXT = (101, 1037, 12528, 102)  # [CLS] a clip [SEP] in the bert-base-uncased vocabulary


def scaled_file(path: Path) -> Path:
    """The synthetic file described in the module docstring."""
    if path.exists():
        return path
    data = make_synthetic("mosi", 200, 50, 50, seed=0)
    rng = np.random.default_rng(0)
    for key, frames in FRAMES.items():
        width = data["train"][key].shape[2]
        scale = 10.0 ** rng.uniform(-2, 3.5, width)
        offset = rng.uniform(0, 4000, width) * (rng.random(width) < 0.5)
        for split in data.values():
            lengths = np.minimum(np.asarray(split[f"{key}_lengths"]), frames)
            x = np.asarray(split[key], dtype=np.float32)[:, :frames]
            x[np.isneginf(x)] = 0
            valid = np.arange(frames)[None, :, None] < lengths[:, None, None]
            split[key] = np.where(valid, x * scale + offset, 0).astype(np.float32)
            split[f"{key}_lengths"] = lengths
    for split in data.values():
        text = np.zeros_like(np.asarray(split["text_bert"]))
        text[:, 0, : len(SAME_TEXT)] = SAME_TEXT
        text[:, 1, : len(SAME_TEXT)] = 1
        split["text_bert"] = text
    save_npz(data, path)
    return path


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data, bert = scaled_file(out / "scaled.npz"), tiny_bert(out / "bert")
    log = out / "runs.jsonl"
    done = {(r["model"], r["standardize"], r["seed"])
            for r in map(json.loads, log.read_text().splitlines())} if log.exists() else set()
    for model in MODELS:
        for standardize in (False, True):
            for seed in SEEDS:
                if (model, standardize, seed) in done:
                    continue
                config = api.build_config(
                    model, custom_spec((-3.0, 3.0)), text_encoder=str(bert), seeds=[seed],
                    epochs=EPOCHS, batch=BATCH,
                    overrides={"standardize": standardize, "early_stop": EPOCHS},
                )
                row = {"model": model, "standardize": standardize, "seed": seed}
                try:
                    result = api.train(
                        model, "custom", data, config=config, quiet=True, overwrite=True,
                        out=out / f"{model}-{'std' if standardize else 'raw'}-{seed}",
                    )
                    row.update({k: result.rows[0][k] for k in ("MAE", "Corr")})
                except TrainingDiverged as exc:  # a result too: recorded, the sweep goes on
                    row.update({"MAE": float("nan"), "Corr": float("nan"), "error": str(exc)})
                with open(log, "a") as f:
                    f.write(json.dumps(row) + "\n")
    _print_table([json.loads(line) for line in log.read_text().splitlines()])


def _print_table(rows: list[dict]) -> None:
    print("| model | features | test MAE (seeds) | mean MAE | mean Corr |")
    print("|---|---|---|---|---|")
    for model in MODELS:
        for standardize in (False, True):
            mine = [r for r in rows if r["model"] == model and r["standardize"] == standardize]
            if not mine:
                continue
            maes = ", ".join("diverged" if "error" in r else f"{r['MAE']:.3f}" for r in mine)
            print(f"| {model} | {'standardize=true' if standardize else 'raw'} | {maes} | "
                  f"{np.mean([r['MAE'] for r in mine]):.3f} | "
                  f"{np.mean([r['Corr'] for r in mine]):.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-standardize"))
