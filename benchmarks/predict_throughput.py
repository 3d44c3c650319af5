"""Prediction throughput: the authors' CLGSI eval-mode forward against msakit's prediction path
(BENCHMARKS.md, "Prediction throughput").

Usage (the authors' code is not part of msakit; clone it first):

    git clone https://github.com/AZYoung233/CLGSI /tmp/clgsi-authors
    msakit synth --like mosi --n 64 16 512 --out mosi512.npz
    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/predict_throughput.py \
        /tmp/clgsi-authors mosi512.npz --json

Three ways to predict the file's test split, each in this one process (one sitting):

- ``authors``: their ``AMIO`` model (random weights from ``--seed``) in eval mode under
  ``torch.no_grad()``, their ``MMDataset`` and a ``DataLoader`` of their batch size, as their
  ``do_test`` runs it (without its loss and metrics);
- ``imported``: those weights imported with ``msakit import-weights --from clgsi-authors``
  (the same function: the authors' preset reads padded frames), predicted by msakit;
- ``default``: msakit's default CLGSI preset for the data set (random weights), predicted by
  msakit;
- ``default-bf16`` (only when named in ``--only``): the same checkpoint with ``amp=bf16``, so
  that msakit predicts under bf16 autocast.

The figure is the **marginal cost per clip**: the time to predict the first ``--clips`` test
clips minus the time for the first ``--base`` clips, over the clips in between, each the best of
``--repeats`` after a warm-up pass; the model, the encoder and the file are loaded once, outside
the timing. ``--check`` also prints the largest difference between the authors' predictions and
the imported checkpoint's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from authors_clgsi import _build, _write_pickle  # noqa: E402


def _subset(part, n: int):
    """The first ``n`` samples of a SplitData."""
    fields = {}
    for f in dataclasses.fields(part):
        value = getattr(part, f.name)
        if isinstance(value, np.ndarray) and value.ndim and len(value) == len(part):
            fields[f.name] = value[:n]
        elif isinstance(value, dict):
            fields[f.name] = {k: v[:n] for k, v in value.items()}
    return dataclasses.replace(part, **fields)


def _msakit_predictor(path: Path, data: str):
    """A function n -> predictions of the first n test clips, through msakit's prediction path
    for a loaded checkpoint (``LoadedCheckpoint.predictions``, or what ``predict`` called
    before it existed)."""
    from msakit import api

    ckpt = api.load_checkpoint(path)
    part = api.split_for(ckpt, data, "test")
    parts = {}

    def run(n: int) -> np.ndarray:
        sub = parts.setdefault(n, _subset(part, n))
        if hasattr(ckpt, "predictions"):
            return ckpt.predictions(sub)
        return api._evaluate_checkpoint(ckpt, sub).predictions

    return run


def _authors_predictor(root: Path, cli, tmp: Path):
    """Their model (eval mode) and a function n -> their predictions of the first n clips."""
    pkl = tmp / "test.pkl"
    _write_pickle(cli.data, cli.clips, pkl, split_name="test")
    model, _, args, _ = _build(root, argparse.Namespace(
        text_encoder=cli.text_encoder, dataset="mosi", seed=cli.seed, batch=None), pkl)
    from data.load_data import MMDataset  # the authors' module (on sys.path after _build)

    dataset = MMDataset(args, mode="test")
    model.eval()

    def run(n: int) -> np.ndarray:
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, range(n)),
                                             batch_size=args.batch_size, shuffle=False)
        out = []
        with torch.no_grad():
            for b in loader:
                o = model(b["text"], (b["audio"], b["audio_lengths"]),
                          (b["vision"], b["vision_lengths"]))
                out.append(o["M"].view(-1))
        return torch.cat(out).numpy()

    return model, run


def _marginal(runs: dict, cli) -> dict[str, dict]:
    """Clips per second between ``cli.base`` and ``cli.clips`` clips for each way, best of
    ``cli.repeats``; the ways take turns (a change of the machine's load hits each alike).
    ``cpu_clips_per_s``: the same from process CPU time (steadier on a shared machine)."""
    for run in runs.values():
        run(cli.base)  # warm-up
    best = {key: {} for key in runs}
    for _ in range(cli.repeats):
        for key, run in runs.items():
            for n in (cli.base, cli.clips):
                wall, cpu = time.perf_counter(), time.process_time()
                run(n)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                old = best[key].get(n, (np.inf, np.inf))
                best[key][n] = (min(old[0], wall), min(old[1], cpu))
    result = {}
    for key, times in best.items():
        extra = cli.clips - cli.base
        wall = (times[cli.clips][0] - times[cli.base][0]) / extra
        cpu = (times[cli.clips][1] - times[cli.base][1]) / extra
        result[key] = {"clips_per_s": round(1.0 / wall, 2), "cpu_clips_per_s": round(1.0 / cpu, 2),
                       "seconds": {str(n): [round(t, 3) for t in v] for n, v in times.items()}}
    return result


def _checkpoints(model, cli, tmp: Path) -> dict[str, Path]:
    """The authors' weights imported by msakit, and a default-preset checkpoint."""
    from msakit.config import DATASETS
    from msakit.data.mmsa import load_feature_file
    from msakit.encoders.text import load_text_encoder, resolve_text_encoder
    from msakit.importing import _write_checkpoint, import_weights
    from msakit.models.base import Dims
    from msakit.models.registry import preset
    from msakit.training.inputs import build_model

    weights = tmp / "authors_state.pth"
    torch.save(model.state_dict(), weights)
    imported = import_weights("clgsi-authors", "clgsi", "mosi", weights=weights, data=cli.data,
                              out=tmp / "imported.pt",
                              text_encoder=resolve_text_encoder(cli.text_encoder))
    config = preset("clgsi", "mosi")
    config.text_encoder = cli.text_encoder
    assert "mosi" in DATASETS
    torch.manual_seed(cli.seed)
    dims = Dims.of(load_feature_file(cli.data))
    net = build_model(config, dims, load_text_encoder(cli.text_encoder))
    _write_checkpoint(net, config, dims, origin={"source": "benchmark", "weights": ""},
                      out=tmp / "default.pt")
    paths = {"imported": imported, "default": tmp / "default.pt"}
    if "default-bf16" in cli.only:  # the same weights, predicted under bf16 autocast
        config.amp = "bf16"
        _write_checkpoint(net, config, dims, origin={"source": "benchmark", "weights": ""},
                          out=tmp / "default-bf16.pt")
        paths["default-bf16"] = tmp / "default-bf16.pt"
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("authors_dir")
    parser.add_argument("data", help="a MOSI-shaped file whose test split has >= --clips clips")
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--base", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--text-encoder", default="minilm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=["authors", "imported", "default"])
    parser.add_argument("--json", action="store_true")
    cli = parser.parse_args()
    result = {"threads": torch.get_num_threads(), "clips": cli.clips, "base": cli.base}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        model, authors = _authors_predictor(Path(cli.authors_dir).resolve(), cli, tmp)
        paths = _checkpoints(model, cli, tmp)
        runs = {"authors": authors, **{k: _msakit_predictor(p, cli.data) for k, p in paths.items()}}
        if "authors" in cli.only and "imported" in cli.only:
            theirs, ours = authors(cli.clips), runs["imported"](cli.clips)
            result["imported_max_abs_diff"] = float(np.abs(theirs - ours).max())
        result.update(_marginal({k: runs[k] for k in cli.only}, cli))
    for key in ("imported", "default", "default-bf16"):
        if key in result and "authors" in result:
            for rate in ("clips_per_s", "cpu_clips_per_s"):
                result[f"{key}_vs_authors_{rate}"] = round(
                    result[key][rate] / result["authors"][rate], 2)
    print(json.dumps(result) if cli.json else json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
