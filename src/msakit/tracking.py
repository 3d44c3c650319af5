"""Experiment tracking with MLflow (``msakit train --track mlflow``).

One training run is one MLflow run, named after its run folder, holding the run's settings as
parameters (the ``--set`` names: ``lr.text``, ``temperature``, ...), the provenance as tags
(msakit's version, the command line, the data file and its content digest), the mean and std of
every test metric over the seeds, and as artifacts ``config.yaml``, ``results.csv`` and the
training curves (``curves.png``). Each seed is a nested run with its per-epoch training losses
and validation metrics (step = epoch) and its test metrics.

Where the runs go: ``--track-uri URI`` (a team's ``mlflow server``: ``http://host:5000``), else
the ``MLFLOW_TRACKING_URI`` environment variable, else MLflow's own embedded default (an SQLite
file ``mlflow.db`` in the working folder; ``mlflow ui`` there shows it).

MLflow is an optional dependency (``pip install msakit[track]``); the client is created and every
request made through :class:`mlflow.MlflowClient`, so msakit never changes MLflow's process-wide
active run. Only the main rank of a distributed run logs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msakit import __version__
from msakit.core.errors import MsakitError
from msakit.reporting.plots import plot_curves

TRACKERS = ("mlflow",)
EXPERIMENT = "msakit"
_PARAM_LIMIT = 6000  # characters MLflow keeps of a parameter's value


def flat_settings(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A run configuration as flat ``--set`` names -> text: ``{"lr": {"text": 5e-5}}`` ->
    ``{"lr.text": "5e-05"}``; the model's settings keep their own names (``temperature``)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key == "model" and not prefix and isinstance(value, Mapping):
            flat.update(flat_settings(value))
        elif isinstance(value, Mapping):
            flat.update(flat_settings(value, f"{name}."))
        else:
            flat[name] = str(value)[:_PARAM_LIMIT]
    return flat


def _finite(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _client(uri: str | None):
    try:
        import mlflow
    except ImportError:
        raise MsakitError("--track mlflow needs MLflow: pip install 'msakit[track]' "
                          "(or pip install mlflow)") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its database-setup lines
    return mlflow.MlflowClient(tracking_uri=uri or mlflow.get_tracking_uri())


@dataclass
class MlflowRun:
    """The MLflow run of one training run (see the module docstring)."""

    client: Any
    run_id: str
    experiment_id: str
    seeds: dict[int, str] = field(default_factory=dict)

    @classmethod
    def start(cls, *, uri: str | None, name: str, settings: Mapping[str, Any],
              tags: Mapping[str, str]) -> MlflowRun:
        client = _client(uri)
        try:
            found = client.get_experiment_by_name(EXPERIMENT)
            experiment = (found.experiment_id if found is not None
                          else client.create_experiment(EXPERIMENT))
            run = client.create_run(experiment, run_name=name, tags=dict(tags))
        except Exception as exc:  # an unreachable server, a refused URI: one line
            raise MsakitError(f"--track mlflow: {uri or 'the default store'}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
        tracked = cls(client, run.info.run_id, experiment)
        tracked._params(run.info.run_id, flat_settings(settings))
        return tracked

    def _params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self.client.log_batch(run_id, params=items[start:start + 100])

    def _metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, v, stamp, step) for k, v in metrics.items()]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def seed_logger(self, seed: int) -> Callable[[int, dict[str, Any]], None]:
        """The per-epoch callback of one seed (``TrainerHooks.on_epoch_record``)."""
        if seed not in self.seeds:
            child = self.client.create_run(
                self.experiment_id, run_name=f"seed-{seed}",
                tags={"mlflow.parentRunId": self.run_id, "seed": str(seed)})
            self.seeds[seed] = child.info.run_id

        def log(epoch: int, record: dict[str, Any]) -> None:
            values = {k: v for k, v in record.items() if k.startswith(("train_", "valid_"))}
            self._metrics(self.seeds[seed], _finite(values, ""), step=epoch + 1)

        return log

    def finish(self, rows: list[dict[str, Any]], out: Path, *, failed: bool = False) -> None:
        """The test metrics (per seed, and the mean and std over seeds), the run folder's
        config.yaml, results.csv and curves; the runs end FINISHED (or FAILED)."""
        status = "FAILED" if failed else "FINISHED"
        for row in rows:
            seed, metrics = row.get("seed"), {k: v for k, v in row.items() if k != "seed"}
            if seed in ("mean", "std"):
                self._metrics(self.run_id, _finite(metrics, f"test_{seed}_"), step=0)
            elif isinstance(seed, int) and seed in self.seeds:
                self._metrics(self.seeds[seed], _finite(metrics, "test_"), step=0)
        for name in ("config.yaml", "results.csv"):
            if (out / name).is_file():
                self.client.log_artifact(self.run_id, str(out / name))
        if not failed:
            self._curves(out)
        for run_id in [*self.seeds.values(), self.run_id]:
            self.client.set_terminated(run_id, status=status)

    def _curves(self, out: Path) -> None:
        with tempfile.TemporaryDirectory() as folder:
            try:
                path = plot_curves(out, Path(folder) / "curves.png")
            except MsakitError:  # no epoch recorded: nothing to draw
                return
            self.client.log_artifact(self.run_id, str(path))


def provenance(data: str | os.PathLike, config: Mapping[str, Any]) -> dict[str, str]:
    """Tags: msakit's version, the command line, the data file and its recorded identity."""
    tags = {"msakit.version": __version__, "msakit.command": " ".join(sys.argv)[:5000],
            "msakit.data": str(Path(data).resolve())}
    identity = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    for key, value in (identity or {}).items():
        tags[f"msakit.data.{key}"] = str(value)
    return tags


def start_tracking(track: str | None, *, uri: str | None, out: Path, data: str | os.PathLike,
                   config: Mapping[str, Any]) -> MlflowRun | None:
    """The tracker ``--track`` names (None: no tracking)."""
    if track is None:
        return None
    if track not in TRACKERS:
        raise MsakitError(f"--track {track}: unknown tracker (choose from {', '.join(TRACKERS)})")
    return MlflowRun.start(uri=uri, name=out.resolve().name, settings=config,
                           tags=provenance(data, config))
