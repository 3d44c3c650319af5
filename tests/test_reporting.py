"""``msakit report`` (tables of several runs) and ``msakit plot`` (PNG figures)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, write_short_synthetic

from msakit.api import build_config, build_model, dims_of, load_data
from msakit.config import plain
from msakit.config.datasets import SIMS_FAMILY, dataset_spec
from msakit.core.files import torch_save_atomic
from msakit.data.mmsa import convert_to_npz
from msakit.encoders.text import load_text_encoder, text_encoder_config
from msakit.evaluation.metrics import MOSI_METRICS, SIMS_METRICS
from msakit.models.clgsi.plots import weight_curves
from msakit.models.registry import model_names, model_spec, preset
from msakit.reporting import plots
from msakit.reporting.report import columns_for

SMALL = ["--set", "feedforward=32", "--set", "common_dim=16", "--set", "specific_dim=16",
         "--set", "head_dim=16"]
FRAMES = {"audio": 20, "vision": 16}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")
run = run_cli


def short_npz(folder: Path, like: str = "mosi", n: tuple[int, int, int] = (24, 8, 8)) -> Path:
    """A synthetic file with audio/vision cut to FRAMES frames, converted to npz."""
    pkl = write_short_synthetic(folder / f"{like}.pkl", like, n, FRAMES)
    convert_to_npz(pkl, folder / f"{like}.npz")
    return folder / f"{like}.npz"


# --------------------------------------------------------------------------- report
def write_run(folder: Path, model: str, dataset: str, seeds: dict[int, list[float]],
              overrides: dict | None = None) -> Path:
    """A run folder as ``msakit train`` writes it: config.yaml and results.csv (seed rows, then
    mean and std rows whose values the report must not use)."""
    folder.mkdir(parents=True)
    config = build_config(model, dataset, seeds=list(seeds), overrides=overrides or {})
    (folder / "config.yaml").write_text(config.to_yaml())
    names = _metrics(dataset)
    lines = [",".join(["seed", *names])]
    lines += [",".join([str(s), *map(str, v)]) for s, v in seeds.items()]
    lines += [",".join(["mean", *["9"] * len(names)]), ",".join(["std", *["9"] * len(names)])]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    return folder


def _metrics(dataset: str) -> tuple[str, ...]:
    return SIMS_METRICS if dataset_spec(dataset).metric_family == SIMS_FAMILY else MOSI_METRICS


def metrics_for(rng: np.random.Generator, dataset: str, n: int) -> dict[int, list[float]]:
    names = _metrics(dataset)
    out = {}
    for seed in range(1111, 1111 + n):
        row = [round(float(rng.uniform(0.3, 0.9)), 4) for _ in names]
        out[seed] = row
    return out


@pytest.fixture()
def ablation(tmp_path):
    rng = np.random.default_rng(0)
    runs = {
        "full": write_run(tmp_path / "full", "clgsi", "mosi", metrics_for(rng, "mosi", 3)),
        "w-o-cl": write_run(tmp_path / "w-o-cl", "clgsi", "mosi", metrics_for(rng, "mosi", 3),
                            {"contrastive": False}),
        "add": write_run(tmp_path / "add", "clgsi", "mosi", metrics_for(rng, "mosi", 2),
                         {"fusion": "add", "gamma": 0.5}),
    }
    return runs


def seed_values(folder: Path, metric: str) -> np.ndarray:
    with open(folder / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["seed"] not in ("mean", "std")]
    return np.array([float(r[metric]) for r in rows])


def by_hand(folder: Path, metric: str) -> str:
    v = seed_values(folder, metric)
    if metric in ("MAE", "Corr"):
        return f"{v.mean():.3f} ± {v.std():.3f}"
    return f"{100 * v.mean():.2f} ± {100 * v.std():.2f}"


def markdown_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip().replace("**", "") for c in line.strip("|").split(" | ")] for line in rows]


def report(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = run(["report", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out

def test_one_seed_has_no_deviation(tmp_path, capsys):
    """A run of one seed: the mean alone in every format (no "± 0.00"; a blank std in CSV, null
    in JSON), as its results.csv leaves the std row blank (issue 21, "small noise")."""
    import json

    one = write_run(tmp_path / "one", "lmf", "mosi", metrics_for(np.random.default_rng(1),
                                                               "mosi", 1))
    two = write_run(tmp_path / "two", "lmf", "mosi", metrics_for(np.random.default_rng(2),
                                                               "mosi", 2))
    tables = {}
    for fmt in ("markdown", "latex", "csv", "json"):
        capsys.readouterr()
        assert run(["report", str(one), str(two), "--format", fmt]) == 0
        tables[fmt] = capsys.readouterr().out
    rows = {line.split(" |")[0].strip("| "): line for line in tables["markdown"].splitlines()
            if line.startswith("| ")}
    assert "±" not in rows["one"] and rows["two"].count("±") >= 5, rows
    latex = {line.split(" & ")[0]: line for line in tables["latex"].splitlines() if " & " in line}
    assert "pm" not in latex["one"] and "$\\pm$" in latex["two"]
    by_run = {r["run"]: r for r in csv.DictReader(io.StringIO(tables["csv"]))}
    assert by_run["one"]["MAE_std"] == "" and by_run["one"]["MAE_mean"] != ""
    assert float(by_run["two"]["MAE_std"]) >= 0
    objects = {r["run"]: r for r in json.loads(tables["json"])}
    assert objects["one"]["metrics"]["MAE"]["std"] is None
    assert objects["two"]["metrics"]["MAE"]["std"] is not None


def test_markdown_cells_are_mean_and_std_of_the_seed_rows(ablation, capsys):
    out = report([str(p) for p in ablation.values()], capsys)
    rows = markdown_rows(out)
    assert rows[0] == ["Run", "Acc-2", "F1", "Acc-7", "MAE", "Corr", "Seeds"]
    assert re.fullmatch(r"\|:---(\|---:){6}\|", out.splitlines()[1])
    assert [r[0] for r in rows[2:]] == list(ablation)  # folder names, in the order given
    for row, folder in zip(rows[2:], ablation.values(), strict=True):
        assert row[1] == f"{by_hand(folder, 'Has0_acc_2')} / {by_hand(folder, 'Non0_acc_2')}"
        assert row[2] == f"{by_hand(folder, 'Has0_F1_score')} / {by_hand(folder, 'Non0_F1_score')}"
        assert row[3] == by_hand(folder, "Mult_acc_7")
        assert row[4] == by_hand(folder, "MAE")
        assert row[5] == by_hand(folder, "Corr")
        assert row[6] == str(len(seed_values(folder, "MAE")))
    assert "negative/non-negative" in out


def test_best_mean_of_a_column_is_bold(ablation, capsys):
    out = report([str(p) for p in ablation.values()], capsys)
    lines = [line for line in out.splitlines() if line.startswith("|")][2:]
    maes = [seed_values(p, "MAE").mean() for p in ablation.values()]
    corrs = [seed_values(p, "Corr").mean() for p in ablation.values()]
    mae_cells = [line.split(" | ")[4] for line in lines]
    corr_cells = [line.split(" | ")[5] for line in lines]
    assert [c.startswith("**") for c in mae_cells] == [m == min(maes) for m in maes]
    assert [c.startswith("**") for c in corr_cells] == [c == max(corrs) for c in corrs]


def test_config_labels_name_the_distinguishing_set_values(ablation, capsys):
    out = report(["--label", "config", *map(str, ablation.values())], capsys)
    labels = [r[0] for r in markdown_rows(out)[2:]]
    gamma = preset("clgsi", "mosi").model["gamma"]  # the preset's, unless --set
    assert labels == [
        f"contrastive=true fusion=glfk gamma={gamma}",
        f"contrastive=false fusion=glfk gamma={gamma}",
        "contrastive=true fusion=add gamma=0.5",
    ]


def test_latex_structure(ablation, capsys):
    out = report(["--format", "latex", *map(str, ablation.values())], capsys)
    lines = out.strip().splitlines()
    assert lines[0] == "\\begin{tabular}{lcccccc}"
    assert lines[1] == "\\toprule"
    assert lines[2] == "Run & Acc-2 & F1 & Acc-7 & MAE & Corr & Seeds \\\\"
    assert lines[3] == "\\midrule"
    body = lines[4:7]
    assert lines[7:9] == ["\\bottomrule", "\\end{tabular}"]
    for line, (name, folder) in zip(body, ablation.items(), strict=True):
        cells = [c.strip() for c in line.removesuffix("\\\\").split(" & ")]
        assert len(cells) == 7
        assert cells[0] == name.replace("_", "\\_")
        mae = re.sub(r"\\textbf\{(.*)\}", r"\1", cells[4])
        assert mae == by_hand(folder, "MAE").replace(" ± ", " $\\pm$ ")


def test_latex_escapes_labels(tmp_path, capsys):
    rng = np.random.default_rng(1)
    a = write_run(tmp_path / "run_a&b", "clgsi", "sims", metrics_for(rng, "sims", 2))
    out = report(["--format", "latex", str(a)], capsys)
    assert "run\\_a\\&b &" in out


def test_csv_holds_every_metric_in_mmsa_scale(ablation, capsys):
    out = report(["--format", "csv", *map(str, ablation.values())], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in rows] == list(ablation)
    for row, folder in zip(rows, ablation.values(), strict=True):
        assert row["dataset"] == "mosi"
        for metric in MOSI_METRICS:
            v = seed_values(folder, metric)
            assert float(row[f"{metric}_mean"]) == pytest.approx(v.mean(), abs=1e-6)
            assert float(row[f"{metric}_std"]) == pytest.approx(v.std(), abs=1e-6)


def test_sims_columns_and_several_data_sets_side_by_side(tmp_path, capsys):
    rng = np.random.default_rng(2)
    mosi = write_run(tmp_path / "clgsi-mosi", "clgsi", "mosi", metrics_for(rng, "mosi", 2))
    sims = write_run(tmp_path / "clgsi-sims", "clgsi", "sims", metrics_for(rng, "sims", 3))
    only_sims = markdown_rows(report([str(sims)], capsys))
    assert only_sims[0] == ["Run", "Acc-2", "F1", "Acc-5", "MAE", "Corr", "Seeds"]
    assert only_sims[2][1:4] == [by_hand(sims, m) for m in
                                 ("Mult_acc_2", "F1_score", "Mult_acc_5")]
    both = markdown_rows(report([str(mosi), str(sims)], capsys))
    assert both[0] == ["Run", "MOSI Acc-2", "MOSI F1", "MOSI Acc-7", "MOSI MAE", "MOSI Corr",
                       "SIMS Acc-2", "SIMS F1", "SIMS Acc-5", "SIMS MAE", "SIMS Corr", "Seeds"]
    assert len(both) == 3  # one row: the same settings on two data sets
    assert both[2][0] == "clgsi" and both[2][-1] == "2/3"
    assert both[2][4] == by_hand(mosi, "MAE") and both[2][9] == by_hand(sims, "MAE")
    extra = [c.title for c in columns_for("sims", all_metrics=True)]
    assert extra == ["Acc-2", "F1", "Acc-3", "Acc-5", "MAE", "Corr"]


def test_report_writes_a_file_and_fails_in_one_line(ablation, tmp_path, capsys):
    out = tmp_path / "table.md"
    assert run(["report", str(ablation["full"]), "--out", str(out)]) == 0
    assert out.read_text().startswith("| Run |")
    capsys.readouterr()
    assert run(["report", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nothing-here" in err[0]


def test_preset_runs_have_no_distinguishing_values(tmp_path, capsys):
    rng = np.random.default_rng(3)
    a = write_run(tmp_path / "a" / "run", "clgsi", "mosi", metrics_for(rng, "mosi", 2))
    b = write_run(tmp_path / "b" / "run", "conki", "mosi", metrics_for(rng, "mosi", 2))
    labels = [r[0] for r in markdown_rows(report([str(a), str(b)], capsys))[2:]]
    assert labels == ["clgsi", "conki"]  # folder names clash: the settings name the rows


@pytest.mark.parametrize("model", model_names())
def test_report_lays_out_every_model_in_the_papers_columns(model, tmp_path, capsys):
    """Every registered model, on every data set its presets cover: two runs that differ by
    one --set value are rows labelled by it, in the papers' columns of each data set."""
    rng = np.random.default_rng(5)
    folders = []
    for dataset in model_spec(model).datasets():
        folders += [write_run(tmp_path / dataset / "a", model, dataset,
                              metrics_for(rng, dataset, 2)),
                    write_run(tmp_path / dataset / "b", model, dataset,
                              metrics_for(rng, dataset, 2), {"early_stop": 37})]
    rows = markdown_rows(report([str(f) for f in folders], capsys))
    titles = {dataset_spec(d).title for d in model_spec(model).datasets()}
    for d in model_spec(model).datasets():
        several = len(titles) > 1
        for column in columns_for(d):
            assert (f"{dataset_spec(d).title} {column.title}" if several
                    else column.title) in rows[0]
    labels = [r[0] for r in rows[2:]]
    assert len(labels) >= 2 and any("early_stop=37" in label for label in labels)
    assert all(" ± " in cell for r in rows[2:] for cell in r[1:-1] if cell != "–")


# --------------------------------------------------------------------------- plots
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    """A CLGSI run, 2 seeds x 2 epochs, on a small npz file: (data, run folder)."""
    root = tmp_path_factory.mktemp("plots")
    data = short_npz(root)
    out = root / "run"
    argv = ["train", "--model", "clgsi", "--dataset", "mosi", "--data", str(data),
            "--text-encoder", str(tiny_bert), "--out", str(out), "--epochs", "2", "--seeds", "1",
            "2", "--batch", "8", "--quiet", *SMALL]
    assert run(argv) == 0
    return data, out


def assert_png(path: Path, min_side: int = 300) -> None:
    import matplotlib.image

    content = path.read_bytes()
    assert content[:8] == PNG_MAGIC and len(content) > 5000
    image = matplotlib.image.imread(path)
    assert min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 0.05  # not a blank canvas


def plot(argv: list[str], capsys) -> None:
    capsys.readouterr()
    code = run(["plot", *argv])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("wrote ")


def test_plot_curves(trained, tmp_path, capsys):
    _, out = trained
    plot(["curves", str(out), "--out", str(tmp_path / "curves.png")], capsys)
    assert_png(tmp_path / "curves.png")
    plot(["curves", str(out / "seed-2"), "--out", str(tmp_path / "one.png")], capsys)
    assert_png(tmp_path / "one.png")


def test_plot_tsne_and_scatter(trained, tmp_path, capsys):
    data, out = trained
    ckpt = str(out / "seed-1")
    plot(["tsne", "--checkpoint", ckpt, "--data", str(data), "--split", "test",
          "--out", str(tmp_path / "tsne.png")], capsys)
    assert_png(tmp_path / "tsne.png")
    plot(["scatter", "--checkpoint", ckpt, "--data", str(data), "--out",
          str(tmp_path / "scatter.png")], capsys)
    assert_png(tmp_path / "scatter.png")
    capsys.readouterr()
    bad = ["plot", "tsne", "--checkpoint", ckpt, "--data", str(data), "--intervals", "+9",
           "--out", str(tmp_path / "x.png")]
    assert run(bad) == 2
    assert "unknown interval" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_weights_from_a_checkpoint_or_given_values(trained, tmp_path, capsys):
    _, out = trained
    plot(["weights", "--checkpoint", str(out / "seed-1"), "--out",
          str(tmp_path / "w.png")], capsys)
    assert_png(tmp_path / "w.png")
    plot(["weights", "--threshold", "0.4", "--gain", "1.5", "--out", str(tmp_path / "w2.png")],
         capsys)
    assert_png(tmp_path / "w2.png")


def test_weight_function_is_eq_2():
    d, positive, negative = weight_curves(threshold=0.4, gain=1.5)
    assert d[0] == 0.0 and d[-1] == 2.0
    assert positive[0] == pytest.approx(1.5 * np.tanh(0.8))
    at_kappa = np.argmin(np.abs(d - 0.4))
    assert positive[at_kappa] == pytest.approx(negative[at_kappa])  # continuous at D = κ
    assert negative[-1] == pytest.approx(1.5 * np.tanh(2.0))


def test_sentiment_intervals():
    labels = np.array([-3.0, -2.6, -0.4, 0.0, 0.5, 1.4, 2.6, 3.0], dtype=np.float32)
    classes, names = plots.sentiment_intervals(labels, "mosi")
    assert names == ["-3", "-2", "-1", "0", "+1", "+2", "+3"]
    assert [names[c] for c in classes] == ["-3", "-3", "0", "0", "0", "+1", "+3", "+3"]
    classes, names = plots.sentiment_intervals(np.array([-1.0, -0.7, -0.1, 0.0, 0.8]), "sims")
    assert len(names) == 5
    assert classes.tolist() == [0, 0, 1, 2, 4]


@pytest.fixture(scope="module")
def conki_checkpoint(tmp_path_factory, tiny_bert_12):
    """An untrained ConKI checkpoint in msakit's format (no training needed for the plots)."""
    root = tmp_path_factory.mktemp("conki_plot")
    data = short_npz(root)
    config = build_config("conki", "mosi", text_encoder=str(tiny_bert_12), batch=8, overrides={
        "adapter_dim": 8, "fusion_dim": 8, "head_dim": 8, "feedforward": 32,
    })
    encoder = load_text_encoder(config.text_encoder)
    dims = dims_of(load_data(data, encoder.config.vocab_size))
    torch.manual_seed(0)
    model = build_model(config, dims, encoder)
    path = root / "best.pt"
    torch_save_atomic({"model": model.state_dict(), "config": plain(config.to_dict()),
                 "dims": dims.to_dict(), "text_encoder_config": text_encoder_config(encoder),
                 "format": "msakit-checkpoint-1"}, path)
    return data, path


def test_conki_tsne_shows_the_six_representations(conki_checkpoint, tmp_path, capsys):
    data, ckpt = conki_checkpoint
    outputs = plots._run_checkpoint(ckpt, data, "test", keep_representations=True)
    names = plots._representation_names(outputs)
    assert sorted(names) == sorted(f"{kind}_{m}" for kind in ("pan", "specific")
                                   for m in ("text", "audio", "vision"))
    plot(["tsne", "--checkpoint", str(ckpt), "--data", str(data), "--out",
          str(tmp_path / "conki.png")], capsys)
    assert_png(tmp_path / "conki.png")
    capsys.readouterr()
    assert run(["plot", "weights", "--checkpoint", str(ckpt), "--out",
                str(tmp_path / "w.png")]) == 2
    assert "CLGSI" in capsys.readouterr().err
