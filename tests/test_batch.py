"""The typed batch every model reads (``msakit.data.batching.Batch``) and the loss context
(``msakit.models.base.LossContext``): what collation builds, how a batch moves and changes,
and what the context computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msakit.data.batching import Batch, collate
from msakit.data.mmsa import SplitData
from msakit.data.synthetic import make_synthetic
from msakit.models.base import LOCAL, LossContext, ModelOutput, l1_task, task_mean


def _split() -> SplitData:
    raw = make_synthetic("mosi", 6, 2, 2, seed=3)["train"]
    return SplitData(
        text_bert=np.asarray(raw["text_bert"]), audio=np.asarray(raw["audio"], np.float32),
        vision=np.asarray(raw["vision"], np.float32),
        audio_lengths=np.asarray(raw["audio_lengths"]),
        vision_lengths=np.asarray(raw["vision_lengths"]),
        labels=np.asarray(raw["regression_labels"], np.float32), ids=np.asarray(raw["id"]),
    )


def test_collate_builds_a_batch_of_the_samples_trimmed_to_their_longest_sequence():
    split = _split()
    batch = collate(split, np.array([4, 1]))
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.index.tolist() == [4, 1]
    assert batch.labels.tolist() == split.labels[[4, 1]].tolist()
    longest = int(max(split.audio_lengths[[4, 1]]))
    assert batch.audio.shape[1] == max(1, longest)
    assert batch.lengths("audio") is batch.audio_lengths
    assert batch.sequence("vision") is batch.vision
    assert batch.text_features is None and batch.text_cache == {}
    with pytest.raises(KeyError, match="text"):
        batch.lengths("text")


def test_from_dict_replace_and_to_keep_every_field():
    labels = torch.tensor([0.5, -1.0])
    values = {"text": torch.zeros(2, 3, 4, dtype=torch.long), "audio": torch.ones(2, 5, 3),
              "audio_lengths": torch.tensor([5, 2]), "vision": torch.ones(2, 4, 2),
              "vision_lengths": torch.tensor([1, 4]), "labels": labels,
              "text_cache.cls": torch.ones(2, 8)}
    batch = Batch.from_dict(values)
    assert batch.index.tolist() == [0, 1]  # positions, when not given
    assert set(batch.text_cache) == {"cls"}
    assert Batch.from_dict(batch.as_dict()).as_dict().keys() == batch.as_dict().keys()
    changed = batch.replace(audio=batch.audio * 2)
    assert changed.labels is labels and torch.equal(batch.audio, torch.ones(2, 5, 3))
    moved = batch.to("meta")
    assert all(t.device.type == "meta" for t in moved.as_dict().values())
    assert batch.labels.device.type == "cpu"  # the original stays where it was
    with pytest.raises(KeyError, match="audio_mask"):
        Batch.from_dict({**values, "audio_mask": torch.ones(2)})


def test_the_loss_context_means_over_the_global_batch():
    """One rank of two holding 2 of 5 samples: sum / 5 x 2 (DDP then averages over ranks);
    the default context is the plain mean of one process."""
    per_sample = torch.tensor([1.0, 3.0])
    shard = LossContext(global_batch=5, world_size=2)
    assert float(shard.mean(per_sample)) == pytest.approx(4.0 / 5 * 2)
    assert float(shard.mean(per_sample)) == float(task_mean(per_sample, 5, 2))
    assert float(LOCAL.mean(per_sample)) == 2.0
    assert LOCAL.gather(per_sample) is per_sample
    batch = Batch.from_dict({k: torch.zeros(2) for k in
                             ("text", "audio", "audio_lengths", "vision", "vision_lengths")}
                            | {"labels": torch.tensor([1.0, -1.0])})
    output = ModelOutput(prediction=torch.tensor([0.0, 1.0]))
    assert float(l1_task(output, batch)) == 1.5
    assert float(l1_task(output, batch, shard)) == pytest.approx(3.0 / 5 * 2)
