"""How one training epoch's cost grows with the number of clips and with the sequence length
(issue 24, item 4; BENCHMARKS.md "How cost grows").

    PYTHONPATH=src python benchmarks/scaling.py --out /tmp/scaling --clips 256 512 1024 2048 4096
    PYTHONPATH=src python benchmarks/scaling.py --out /tmp/scaling --clips 512 --frames 0.5 1 2

For each point it writes a synthetic MOSI-shaped file (``msakit synth``'s right-skewed lengths)
and runs ``msakit bench`` over one whole epoch of the train split (every optimizer step timed,
after ``--warmup-steps`` untimed ones; no validation), in a fresh process each, and prints one
JSON line per point: clips, frame factor, padded audio/vision frames, seconds per epoch
(clips / samples per second), CPU seconds per clip and peak RSS.

``--frames F`` changes the audio and vision frame rate by F (0.5: every second frame; 2: each
frame twice, the valid lengths scaled alike), so the padded and the valid lengths both scale by
F while the clips' content stays the same; the text (50 tokens, a BERT input) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def scale_frames(data: dict, factor: float) -> dict:
    """Audio and vision at ``factor`` times the frame rate (0.5 or an integer >= 1)."""
    for split in data.values():
        for key in ("audio", "vision"):
            lengths = np.asarray(split[f"{key}_lengths"])
            if factor < 1:
                step = round(1 / factor)
                split[key] = np.ascontiguousarray(split[key][:, ::step])
                lengths = -(-lengths // step)
            else:
                split[key] = np.repeat(split[key], int(factor), axis=1)
                lengths = lengths * int(factor)
            split[f"{key}_lengths"] = [int(x) for x in lengths]
    return data


def write_file(path: Path, clips: int, factor: float, seed: int) -> tuple[int, int]:
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.synthetic import make_synthetic

    data = scale_frames(make_synthetic("mosi", clips, 32, 32, seed=seed), factor)
    with tempfile.TemporaryDirectory() as tmp:
        pkl = Path(tmp) / "data.pkl"
        with open(pkl, "wb") as f:
            pickle.dump(data, f, protocol=4)
        convert_to_npz(pkl, path)
    return data["train"]["audio"].shape[1], data["train"]["vision"].shape[1]


def bench(path: Path, *, model: str, batch: int, warmup: int, sets: list[str]) -> dict:
    cmd = [sys.executable, "-m", "msakit", "bench", "--model", model, "--dataset", "mosi",
           "--data", str(path), "--batch", str(batch), "--text-encoder", "minilm",
           "--warmup-steps", str(warmup), "--epochs", "1", "--json"]
    for s in sets:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the files")
    parser.add_argument("--clips", nargs="+", type=int, default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--frames", nargs="+", type=float, default=[1.0])
    parser.add_argument("--model", default="clgsi")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    out = Path(cli.out)
    out.mkdir(parents=True, exist_ok=True)
    for factor in cli.frames:
        if factor not in (0.5, 1.0) and factor != int(factor):
            parser.error(f"--frames {factor}: use 0.5 or a whole number")
        for clips in cli.clips:
            path = out / f"mosi-{clips}-x{factor:g}.npz"
            audio, vision = write_file(path, clips, factor, cli.seed)
            result = bench(path, model=cli.model, batch=cli.batch, warmup=cli.warmup_steps,
                           sets=cli.set)
            sps = result["samples_per_s"]
            print(json.dumps({
                "clips": clips, "frames": factor, "audio_frames": audio, "vision_frames": vision,
                "epoch_s": round(clips / sps, 2), "samples_per_s": round(sps, 3),
                "cpu_s_per_sample": result.get("cpu_s_per_sample"),
                "peak_rss_mb": result.get("peak_rss_mb"), "steps": result.get("steps"),
            }), flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
