"""MMSA's missing-modality protocol (``missingTask``): msakit's kept masks and dropped inputs
equal those of MMSA's own ``MMDataset`` (``data_missing``) on the same file, rates and seeds,
for an unaligned and an aligned file, whichever samples form the batch, also through the data
path every model reads (a split with masks, then ``collate``). The run setting, the evaluation
at several rates and TFR-Net's training: tests/test_missing_task.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmsa_reference_aligned import mmsa_args, write_file
from mmsa_reference_bert import mmsa_batch, mmsa_split

from msakit.data.batching import collate
from msakit.data.missing import (
    UNK,
    MissingRates,
    kept_positions,
    with_missing,
    with_missing_split,
)
from msakit.data.mmsa import load_feature_file

pytest.importorskip("MMSA")

RATES = MissingRates(text=0.3, audio=0.5, vision=0.7, seeds=(3, 4, 5))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("missing")
    return {
        "unaligned": write_file(root / "u.pkl", "mosi", (12, 6, 4),
                                frames={"audio": 40, "vision": 30}, aligned=False),
        "aligned": write_file(root / "a.pkl", "mosi", (12, 6, 4), frames={}, aligned=True),
        "long": write_file(root / "l.pkl", "mosi", (12, 6, 4),
                           frames={"audio": 500, "vision": 375}, aligned=False),
    }


@pytest.mark.parametrize("kind", ["unaligned", "aligned"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_masks_and_inputs_equal_mmsas(files, kind, split):
    args = mmsa_args("tfr_net", "mosi", data=files[kind], need_data_aligned=kind == "aligned",
                     missing_rate=[RATES.text, RATES.audio, RATES.vision],
                     missing_seed=list(RATES.seeds))
    indices = [3, 0, 2] if split == "test" else [7, 1, 10, 4]
    theirs = mmsa_batch(mmsa_split(args, split), indices)
    data = load_feature_file(files[kind]).splits[split]
    kept = kept_positions(data, RATES)
    complete = collate(data, np.asarray(indices), trim=False)
    ours = with_missing(complete, kept)
    for m in ("text", "audio", "vision"):
        torch.testing.assert_close(ours.kept[m], theirs[f"{m}_missing_mask"],
                                   check_dtype=False)
        torch.testing.assert_close(ours.complete[m], getattr(complete, m))
    torch.testing.assert_close(ours.text.float(), theirs["text_m"])
    torch.testing.assert_close(ours.audio, theirs["audio_m"])
    torch.testing.assert_close(ours.vision, theirs["vision_m"])
    # the run setting's data path: a split with the masks collates to the same batch
    through = collate(with_missing_split(data, RATES), np.asarray(indices), trim=False)
    for key, value in ours.as_dict().items():
        torch.testing.assert_close(through.as_dict()[key], value)
    dropped = (complete.text[:, 1] == 1) & (ours.kept["text"] == 0)
    assert dropped.any() and (ours.text[:, 0][dropped] == UNK).all()
    assert (ours.kept["text"][:, 0] == 1).all()  # [CLS] stays


def test_trimmed_batches_take_the_masks_cut_to_their_length(files):
    data = load_feature_file(files["long"]).splits["train"]
    part = with_missing_split(data, RATES)
    indices = np.argsort(data.audio_lengths)[:2]  # the two shortest: a trimmed batch
    full = collate(part, indices, trim=False)
    trimmed = collate(part, indices, trim=True)
    length = trimmed.audio.size(1)
    assert length < full.audio.size(1)
    torch.testing.assert_close(trimmed.audio, full.audio[:, :length])
    torch.testing.assert_close(trimmed.kept["audio"], full.kept["audio"][:, :length])
    present = full.complete["vision"].abs().sum(2) > 0
    assert 0.2 < float(1 - full.kept["vision"][present].mean()) < 0.95
