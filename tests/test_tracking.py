"""Experiment tracking (`msakit train --track mlflow`): a real MLflow server on 127.0.0.1,
started by the test, receives the run's settings, per-epoch metrics, results and curves; the
embedded default store works without a server; a tracker that cannot be reached is one line
before anything is written."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

mlflow = pytest.importorskip("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # a backstop for a broken server, not a timing
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=10) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail("mlflow server did not start:\n" + (folder / "server.log").read_text())
        time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=60)


def _train(data: Path, out: Path, *extra: str) -> int:
    return run_cli(["train", "--model", "tfn", "--dataset", "mosi", "--data", str(data),
                    "--seeds", "1", "2", "--epochs", "2", "--batch", "8", "--out", str(out),
                    "--set", "stop_at_horizon=true", "--quiet", *extra])


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> Path:
    from msakit.data.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("track") / "mosi.npz"
    write_synthetic(path, "mosi", (24, 8, 8), seed=0, text_features=True,
                    frames={"audio": 40, "vision": 30})
    return path


def test_a_run_shows_in_the_servers_api(mlflow_server, features_file, tmp_path):
    out = tmp_path / "tfn-run"
    assert _train(features_file, out, "--track", "mlflow", "--track-uri", mlflow_server,
                  "--set", "dropout=0.25") == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("msakit")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = "
                              "'tfn-run'")
    assert len(runs) == 1
    parent = runs[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model_name"] == "tfn"
    assert parent.data.params["dropout"] == "0.25"
    assert parent.data.params["epochs"] == "2"
    assert parent.data.tags["msakit.data"] == str(features_file.resolve())
    assert "msakit.data.blake2b" in parent.data.tags or any(
        k.startswith("msakit.data.") and k != "msakit.data" for k in parent.data.tags)
    results = (out / "results.csv").read_text().splitlines()
    mean = dict(zip(results[0].split(","), results[-2].split(","), strict=True))
    assert parent.data.metrics["test_mean_MAE"] == pytest.approx(float(mean["MAE"]), abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "results.csv", "curves.png"} <= artifacts
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["seed-1", "seed-2"]
    for child in children:
        history = client.get_metric_history(child.info.run_id, "valid_MAE")
        assert [m.step for m in history] == [1, 2]
        assert "train_loss" in child.data.metrics and "test_MAE" in child.data.metrics
        assert child.info.status == "FINISHED"


def test_the_embedded_default_store(features_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert _train(features_file, tmp_path / "local", "--track", "mlflow") == 0
    client = mlflow.MlflowClient(tracking_uri=mlflow.get_tracking_uri())
    experiment = client.get_experiment_by_name("msakit")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["local", "seed-1", "seed-2"]
    (run,) = [r for r in runs if r.info.run_name == "local"]
    assert run.data.metrics["test_mean_MAE"] > 0
    assert (tmp_path / "mlflow.db").is_file()


def test_an_unreachable_tracker_is_one_line_and_nothing_is_written(features_file, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "never"
    assert _train(features_file, out, "--track", "mlflow", "--track-uri",
                  f"http://127.0.0.1:{_free_port()}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --track mlflow:"), err
    assert not out.exists()
