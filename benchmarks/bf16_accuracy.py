"""Test MAE and Corr of CLGSI and ConKI trained in float32 and with bf16 autocast
(``--set amp=bf16``), over several seeds, on the planted-signal synthetic data (BENCHMARKS.md,
"bf16 autocast on CPUs").

    PYTHONPATH=src python benchmarks/bf16_accuracy.py --out /tmp/bf16 --json

The data: a synthetic MOSI-shaped file (``make_synthetic``: the planted sentiment signal in
every modality) of ``--n`` train/valid/test clips with audio/vision cut to 40/30 frames (the
signal sits in every valid frame, so cutting keeps it; tests/test_clgsi.py does the same). The
text encoder: ``--text-encoder`` (default: a randomly initialised 2-layer, 32-wide BERT made
here, so that twenty trainings run in minutes on two cores; the planted sentiment words are
learnable from it). Each model and precision trains the same seeds with the same settings;
the table gives each metric's mean and standard deviation over the seeds, and the mean of the
per-seed differences bf16 - fp32.
"""

from __future__ import annotations

import argparse
import csv
import json
import pickle
import statistics
import time
from pathlib import Path

import numpy as np


def _data(out: Path, n: list[int]) -> Path:
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.synthetic import make_synthetic

    data = make_synthetic("mosi", *n, seed=0)
    for split in data.values():
        split["audio"] = np.ascontiguousarray(split["audio"][:, :40])
        split["vision"] = np.ascontiguousarray(split["vision"][:, :30])
        split["audio_lengths"] = [min(int(x), 40) for x in split["audio_lengths"]]
        split["vision_lengths"] = [min(int(x), 30) for x in split["vision_lengths"]]
    with open(out / "planted.pkl", "wb") as f:
        pickle.dump(data, f, protocol=4)
    convert_to_npz(out / "planted.pkl", out / "planted.npz")
    return out / "planted.npz"


def _tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(folder)
    return folder


def _summary(per_seed: dict[str, list[dict[str, float]]], metrics: list[str]) -> dict:
    out = {}
    for amp, rows in per_seed.items():
        out[amp] = {m: {"mean": round(statistics.mean(r[m] for r in rows), 4),
                        "std": round(statistics.stdev(r[m] for r in rows), 4)} for m in metrics}
    out["bf16_minus_fp32"] = {
        m: round(statistics.mean(b[m] - a[m] for a, b in zip(per_seed["off"], per_seed["bf16"],
                                                               strict=True)), 4)
        for m in metrics}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", nargs="+", default=["clgsi", "conki"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--n", nargs=3, type=int, default=[384, 96, 192])
    parser.add_argument("--text-encoder")
    parser.add_argument("--json", action="store_true")
    cli = parser.parse_args()
    from msakit import api

    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _data(out, cli.n)
    encoder = cli.text_encoder or str(_tiny_bert(out / "tiny_bert"))
    metrics = ["MAE", "Corr", "Has0_acc_2"]
    result = {"seeds": cli.seeds, "epochs": cli.epochs, "n": cli.n, "text_encoder": encoder}
    for model in cli.models:
        per_seed, seconds = {}, {}
        for amp in ("off", "bf16"):
            start = time.process_time()
            run = api.train(model, "mosi", data, text_encoder=encoder, seeds=cli.seeds,
                            epochs=cli.epochs, batch=cli.batch, out=out / f"{model}-{amp}",
                            overrides=[f"amp={amp}"], quiet=True, overwrite=True)
            seconds[amp] = round(time.process_time() - start, 1)
            with open(run.out / "results.csv") as f:
                rows = [r for r in csv.DictReader(f) if r["seed"] not in ("mean", "std")]
            per_seed[amp] = [{m: float(r[m]) for m in metrics} for r in rows]
        result[model] = {**_summary(per_seed, metrics), "cpu_s": seconds, "per_seed": per_seed}
    print(json.dumps(result) if cli.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
