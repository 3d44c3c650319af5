"""Graph-MFN equals MMSA's Graph_MFN: imported weights (MMSA's state dict with the four fusion-graph
vertex networks that MMSA keeps outside it, as :func:`mmsa_state` saves them) give MMSA's
predictions, and one training step (dropout 0) gives MMSA's loss and gradients, on the same
synthetic samples read by each side's loader: a word-aligned MOSI file and an unaligned SIMS file
(MMSA's avg_pool alignment)."""

from __future__ import annotations

import pytest
import torch
from mmsa_reference import (
    build_pair,
    check_predictions,
    check_training_step,
    cli_import_predictions,
    mmsa_args,
    write_aligned_mmsa_file,
    write_mmsa_file,
)

from msakit.core.errors import MsakitError
from msakit.models.graph_mfn import GraphMFN, GraphMFNConfig, import_mmsa, mmsa_state
from msakit.models.registry import preset

INDICES = [2, 3, 5, 6, 8, 11, 13, 14]
BLOCKS = ("NNConfig", "gamma1Config", "gamma2Config", "outConfig")
NAMES = ("att2", "gamma1", "gamma2", "out")
TINY = {"hidden_dims": [6, 4, 5], "memsize": 7, "inner_node_dim": 8,
        **{b: {"shapes": 5 + i, "drop": 0.3} for i, b in enumerate(BLOCKS)}}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmsa_graph_mfn")
    return {"mosi": write_aligned_mmsa_file(root / "mosi.pkl", "mosi", (16, 4, 4)),
            "sims": write_mmsa_file(root / "sims.pkl", "sims", (16, 4, 4),
                                    {"audio": 40, "vision": 30})}


def config_of(args) -> GraphMFNConfig:
    text, audio, vision = args.hidden_dims
    blocks = {}
    for name, block in zip(NAMES, BLOCKS, strict=True):
        blocks[f"{name}_hidden"] = args[block]["shapes"]
        blocks[f"{name}_dropout"] = args[block]["drop"]
    return GraphMFNConfig(text_hidden=text, audio_hidden=audio, vision_hidden=vision,
                          memory=args.memsize, inner=args.inner_node_dim, **blocks)


def pair(path, dataset: str, dropout: float | None = None):
    """(MMSA's AMIO, msakit's Graph-MFN with its weights, MMSA's batch, msakit's batch)."""
    overrides = dict(TINY)
    if dropout is not None:
        overrides.update({b: {**TINY[b], "drop": dropout} for b in BLOCKS})
    return build_pair("graph_mfn", dataset, path, indices=INDICES, importer=import_mmsa,
                      build=lambda args, dims: GraphMFN(config_of(args), dims),
                      overrides=overrides, state_of=mmsa_state)


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_predictions_equal_mmsa(files, dataset):
    check_predictions(pair(files[dataset], dataset))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_training_step_equals_mmsa(files, dataset):
    """Every trained parameter's gradient; the vertex networks are untrained on both sides (MMSA:
    outside its optimizer; msakit: frozen), and gradients flow through them to the rest."""
    reference, ours, theirs, batch = both = pair(files[dataset], dataset, dropout=0.0)
    nodes = {k: v for k, v in mmsa_state(reference).items() if ".networks." in k}
    compared = check_training_step(both, lambda grads: import_mmsa({**grads, **nodes}))
    frozen = [n for n, p in ours.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("graph.nodes.") for n in frozen)
    assert compared == len(list(ours.parameters())) - len(frozen)
    optimizer_params = set(reference.parameters())
    assert not any(p in optimizer_params for net in reference.Model.graph_mfn.networks.values()
                   for p in net.parameters())


def test_trained_vertex_networks_get_gradients(files):
    _, ours, _, batch = pair(files["mosi"], "mosi", dropout=0.0)
    ours.graph.nodes.requires_grad_(True)
    ours.compute_loss(ours(batch), batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in ours.graph.nodes.parameters())


def test_plain_mmsa_state_dict_is_refused_by_name(files):
    reference, _, _, _ = pair(files["mosi"], "mosi")
    with pytest.raises(MsakitError, match="lack its four fusion-graph vertex networks"):
        import_mmsa(reference.state_dict())
    with pytest.raises(MsakitError, match="unexpected keys Model.extra"):
        import_mmsa({**mmsa_state(reference), "Model.extra": torch.zeros(1)})


@pytest.mark.parametrize("dataset", ["mosi", "mosei", "sims"])
def test_preset_is_mmsas_configuration(dataset):
    from MMSA.config import get_config_regression

    args, config = get_config_regression("graph_mfn", dataset), preset("graph_mfn", dataset)
    assert config_of(args).to_dict() == config.model.to_dict()
    assert config.batch_size == args.batch_size and config.optimizer == "adam"
    assert set(config.lr.values()) == {args.learning_rate}
    assert set(config.weight_decay.values()) == {args.weight_decay}



def test_import_weights_cli_gives_mmsas_predictions(files, tmp_path, capsys):
    """``msakit import-weights --from mmsa`` on weights saved with mmsa_state, then ``predict``
    on the aligned file: MMSA's predictions; a plain state dict is one error line."""
    from conftest import run_cli

    sets = [f"{k}={v}" for k, v in config_of(mmsa_args("graph_mfn", "mosi", files["mosi"],
                                                       **TINY)).to_dict().items()]
    got, expected = cli_import_predictions("graph_mfn", "mosi", files["mosi"], tmp_path,
                                           overrides=TINY, sets=sets, state_of=mmsa_state)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-5), (got - expected).abs().max()
    capsys.readouterr()
    plain = tmp_path / "plain.pth"  # what MMSA saves: AMIO.state_dict(), no vertex networks
    full = torch.load(tmp_path / "weights.pth", weights_only=True)
    torch.save({k: v for k, v in full.items() if ".networks." not in k}, plain)
    assert run_cli(["import-weights", "--from", "mmsa", "--model", "graph_mfn", "--dataset",
                    "mosi", "--data", str(files["mosi"]), "--weights", str(plain), "--out",
                    str(tmp_path / "plain.pt"), *[x for s in sets for x in ("--set", s)]]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("error:") and "mmsa_state" in errors[0]
    assert not (tmp_path / "plain.pt").exists()
