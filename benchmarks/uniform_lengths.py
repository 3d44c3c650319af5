"""A synthetic MOSI-shaped file whose clip lengths are spread uniformly (BENCHMARKS.md).

    PYTHONPATH=src python benchmarks/uniform_lengths.py --n 512 32 32 --out uniform.npz

``msakit synth`` draws right-skewed lengths (Beta(1.6, 4) stretched to the padded length); this
writes the same planted-signal data with every split's audio, vision and text lengths drawn
uniformly from 1 to the padded length (frames and tokens past a length zeroed), the other
distribution issue 24 measures on.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import numpy as np


def uniform(data: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    for split in data.values():
        n = len(split["audio"])
        for key in ("audio", "vision"):
            length = split[key].shape[1]
            lengths = rng.integers(1, length + 1, n)
            split[key][np.arange(length)[None, :] >= lengths[:, None]] = 0
            split[f"{key}_lengths"] = [int(x) for x in lengths]
        text = np.asarray(split["text_bert"])  # (n, 3, Lt): ids, mask, segments
        tokens = rng.integers(3, text.shape[2] + 1, n)  # [CLS] ... [SEP], at least one word
        keep = np.arange(text.shape[2])[None, :] < tokens[:, None]
        ids = np.where(keep, text[:, 0], 0)
        ids[np.arange(n), tokens - 1] = 102  # [SEP]
        split["text_bert"] = np.stack([ids, keep.astype(text.dtype), text[:, 2] * 0], axis=1)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", nargs=3, type=int, default=[512, 32, 32])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    from msakit.data.mmsa import convert_to_npz
    from msakit.data.synthetic import make_synthetic

    data = uniform(make_synthetic("mosi", *cli.n, seed=cli.seed), cli.seed)
    with tempfile.TemporaryDirectory() as tmp:
        pkl = Path(tmp) / "uniform.pkl"
        with open(pkl, "wb") as f:
            pickle.dump(data, f, protocol=4)
        convert_to_npz(pkl, cli.out)
    print(f"wrote {cli.out}")


if __name__ == "__main__":
    main()
