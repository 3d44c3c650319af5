"""MMSA's missing-modality protocol (``missingTask``): msakit's kept masks and dropped inputs
equal those of MMSA's own ``MMDataset`` (``data_missing``) on the same file, rates and seeds,
for an unaligned and an aligned file, whichever samples form the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mmsa_reference_aligned import mmsa_args, write_file
from mmsa_reference_bert import mmsa_batch, mmsa_split

from msakit.data.batching import collate
from msakit.data.missing import UNK, MissingRates, kept_positions, with_missing
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
    ours = with_missing(collate(data, np.asarray(indices), trim=False), kept,
                        np.asarray(indices))
    for m in ("text", "audio", "vision"):
        torch.testing.assert_close(ours[f"{m}_kept"], theirs[f"{m}_missing_mask"],
                                   check_dtype=False)
    torch.testing.assert_close(ours["text_missing"].float(), theirs["text_m"])
    torch.testing.assert_close(ours["audio_missing"], theirs["audio_m"])
    torch.testing.assert_close(ours["vision_missing"], theirs["vision_m"])
    dropped = (ours["text"][:, 1] == 1) & (ours["text_kept"] == 0)
    assert dropped.any() and (ours["text_missing"][:, 0][dropped] == UNK).all()
    assert (ours["text_kept"][:, 0] == 1).all()  # [CLS] stays


def test_trimmed_batches_take_the_masks_cut_to_their_length(files):
    data = load_feature_file(files["long"]).splits["train"]
    kept = kept_positions(data, RATES)
    indices = np.argsort(data.audio_lengths)[:2]  # the two shortest: a trimmed batch
    full = with_missing(collate(data, indices, trim=False), kept, indices)
    trimmed = with_missing(collate(data, indices, trim=True), kept, indices)
    length = trimmed["audio"].size(1)
    assert length < full["audio"].size(1)
    torch.testing.assert_close(trimmed["audio_missing"], full["audio_missing"][:, :length])
    assert 0.2 < float(1 - full["vision_kept"][full["vision"].abs().sum(2) > 0].mean()) < 0.95
