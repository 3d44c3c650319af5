"""MulT equals MMSA's MulT: imported weights give MMSA's predictions, and one training step
(dropout 0) gives MMSA's loss and gradients, on the same synthetic samples read by each side's
loader."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import build_pair, check_predictions, check_training_step, write_mmsa_file

from msakit.core.errors import MsakitError
from msakit.models.base import Dims
from msakit.models.import_weights import check_mapped
from msakit.models.mult import MulT, MulTConfig, future_mask, import_mmsa

INDICES = [0, 2, 5, 7, 9, 12]
TINY = {"dst_feature_dim_nheads": [8, 2], "nlevels": 2}
DROPOUTS = ("attn_dropout", "attn_dropout_a", "attn_dropout_v", "relu_dropout", "embed_dropout",
            "res_dropout", "output_dropout", "text_dropout")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_mult")
    frames = {"audio": 24, "vision": 18}
    return {like: write_mmsa_file(root / f"{like}.pkl", like, (14, 4, 4), frames)
            for like in ("mosi", "sims")}


def config_of(args) -> MulTConfig:
    dim, heads = args.dst_feature_dim_nheads
    return MulTConfig(
        dim=dim, heads=heads, layers=args.nlevels, attn_dropout=args.attn_dropout,
        attn_dropout_audio=args.attn_dropout_a, attn_dropout_vision=args.attn_dropout_v,
        relu_dropout=args.relu_dropout, embed_dropout=args.embed_dropout,
        res_dropout=args.res_dropout, output_dropout=args.output_dropout,
        text_dropout=args.text_dropout, kernel_text=args.conv1d_kernel_size_l,
        kernel_audio=args.conv1d_kernel_size_a, kernel_vision=args.conv1d_kernel_size_v,
        attn_mask=args.attn_mask,
    )


def pair(path, dataset: str, **overrides):
    """(MMSA's AMIO, msakit's MulT with its weights, MMSA's batch, msakit's batch)."""
    return build_pair("mult", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: MulT(config_of(args), dims),
                      overrides={**TINY, **overrides})


CASES = {
    "mosi": ("mosi", {}),
    "sims": ("sims", {}),
    "no mask, vision as wide as d": ("mosi", {"attn_mask": False,
                                              "dst_feature_dim_nheads": [20, 2]}),
}


@pytest.mark.parametrize("case", CASES)
def test_predictions_equal_mmsa(files, case):
    dataset, overrides = CASES[case]
    check_predictions(pair(files[dataset], dataset, **overrides))


@pytest.mark.parametrize("case", CASES)
def test_training_step_equals_mmsa(files, case):
    dataset, overrides = CASES[case]
    both = pair(files[dataset], dataset, **dict.fromkeys(DROPOUTS, 0.0), **overrides)
    assert check_training_step(both, import_mmsa) == len(list(both[1].parameters()))


def test_future_mask_is_mmsas():
    from MMSA.models.subNets.transformers_encoder.transformer import buffered_future_mask

    for lq, lk in ((5, 5), (4, 7), (7, 4)):
        expected = buffered_future_mask(torch.zeros(lq, 1, 2), torch.zeros(lk, 1, 2))
        assert torch.equal(future_mask(lq, lk, torch.device("cpu")), expected)


def test_import_names_bad_entries(files):
    reference, ours, _, _ = pair(files["mosi"], "mosi")
    state = reference.state_dict()
    with pytest.raises(MsakitError, match="unexpected keys Model.text_model.x"):
        import_mmsa({**state, "Model.text_model.x": torch.zeros(1)})
    del state["Model.trans_a_with_v.layers.1.fc2.bias"]
    with pytest.raises(MsakitError, match="no entry for msakit's cross.audio_with_vision.layers"):
        check_mapped(import_mmsa(state), ours, "w.pth")


def trainer_for(path, **settings):
    """msakit's Trainer on MulT (tiny) over ``path``'s train and valid splits."""
    from msakit.config import RunConfig
    from msakit.data.mmsa import load_feature_file
    from msakit.training.trainer import Trainer

    features = load_feature_file(path, text_features=True)
    model = MulT(MulTConfig(dim=8, heads=2, layers=1, memory_layers=1),
                 Dims.of(features))
    config = RunConfig(model_name="mult", dataset="mosi", batch_size=8, seeds=[1], **settings)
    return Trainer(model=model, config=config, train=features.splits["train"],
                   valid=features.splits["valid"], quiet=True, save_last=False)


def test_plateau_schedule_divides_the_rates_when_validation_stalls(files):
    """schedule=plateau (MMSA's MulT): learning rates fixed within an epoch, divided by 10
    after plateau_patience epochs without a lower validation loss."""
    tiny = dict.fromkeys(("text", "audio", "vision", "other"), 1e-12)
    trainer = trainer_for(files["mosi"], schedule="plateau", plateau_patience=0, lr=tiny,
                          epochs=3, early_stop=10, optimizer="adam")
    trainer.fit()
    assert type(trainer.optimizer) is torch.optim.Adam
    # epoch 1 sets the best loss; epochs 2 and 3 do not lower it (the weights barely move)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-14)


def test_clip_value_bounds_every_gradient_entry(files):
    trainer = trainer_for(files["mosi"], clip_value=1e-4, epochs=1)
    trainer.prepare()
    trainer.train_epoch(0, max_steps=1)
    largest = max(float(p.grad.abs().max()) for p in trainer.model.parameters())
    assert largest == pytest.approx(1e-4)  # clipped, and some entry reached the bound


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_the_preset_is_mmsas_training_loop(dataset):
    """MMSA's MulT loop: batch_size, update_epochs batches summed per step, grad_clip,
    learning rate and ReduceLROnPlateau patience from its config_regression.json."""
    from MMSA.config import get_config_regression

    from msakit.models.registry import preset

    theirs = get_config_regression("mult", dataset)
    ours = preset("mult", dataset)
    assert (ours.batch_size, ours.accumulate, ours.clip_value) == (
        theirs["batch_size"], theirs["update_epochs"], theirs["grad_clip"])
    assert set(ours.lr.values()) == {theirs["learning_rate"]}
    assert (ours.optimizer, ours.schedule, ours.plateau_patience) == (
        "adam", "plateau", theirs["patience"])
