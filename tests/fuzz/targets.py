"""The fuzz targets: every reader of a file a user can hand msakit, and the contract they keep.

A target writes one input (bytes) where its reader expects the file (a run folder's
``config.yaml``, an ``--data`` file, ...) and calls msakit's real code on it, the functions the
commands call. The contract, for every input:

* each call returns, or raises :class:`msakit.core.errors.MsakitError` (the command line's one
  ``error:`` line, exit status 2); any other exception is a failure;
* the process does not crash (the runner executes inputs in a child process: a signal is a
  failure);
* one input uses at most ``CPU_LIMIT_S`` seconds of CPU time and raises the process's peak RSS by
  at most ``RSS_LIMIT_MB``; the address space is capped (``AS_HEADROOM_MB`` above the warmed-up
  worker), so a memory bomb fails as ``MemoryError`` instead of taking the machine;
* a reader of a seed folder writes nothing (the seed-folder targets' last call compares the
  run folder's files with those before).

``KNOWN_FAILURES`` lists the failures that belong to work in progress elsewhere (each with the
reason and the issue item that fixes it); a matching failure is reported, not counted. The runner
fails when an entry matches nothing, so the list shrinks as fixes land.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import shutil
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutators

CORPUS = Path(__file__).resolve().parent / "corpus"
CPU_LIMIT_S = 20.0
RSS_LIMIT_MB = 512
AS_HEADROOM_MB = 3072


@dataclass(frozen=True)
class Known:
    """A failure of work in progress elsewhere: ``pattern`` (a regular expression) matches the
    failure's one-line description (``target: call: Type: message @ file:line``); ``files``:
    corpus files (``TARGET/NAME``) that crash the process, which a campaign leaves out (a
    crash would end it)."""

    pattern: str
    reason: str
    files: tuple[str, ...] = ()

    def matches(self, description: str) -> bool:
        return re.search(self.pattern, description) is not None


KNOWN_FAILURES: list[Known] = [
]
"""Failures whose fix belongs to another part of issue 19; delete an entry once it is fixed
(the runner then reports the entry as stale until it is)."""


# --------------------------------------------------------------------------- workspace
class Workspace:
    """A scratch folder with the valid companions the targets need (a run folder, a data file,
    a second extract part), built from the corpus's own seeds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache = root / "cache"
        os.environ["MSAKIT_CACHE_DIR"] = str(self.cache)
        self.data = self._copy("npz/seed-mosi.npz", "data.npz")
        self.checkpoint = self._copy("checkpoint/seed-tfn-best.pt", "best.pt")
        self.run = self._run_folder("run")
        self.seed_run = self._seed_run("seed-run")
        self.part1 = self._part(1)
        self.part2 = self._part(2)
        self._config = None

    def _copy(self, seed: str, name: str) -> Path:
        return Path(shutil.copy(CORPUS / seed, self.root / name))

    def _run_folder(self, name: str) -> Path:
        run = self.root / name
        (run / "seed-1").mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / "run_config" / "seed-config.yaml", run / "config.yaml")
        shutil.copy(CORPUS / "results_csv" / "seed-results.csv", run / "results.csv")
        shutil.copy(CORPUS / "history" / "seed-history.json", run / "seed-1" / "history.json")
        shutil.copy(self.checkpoint, run / "seed-1" / "best.pt")
        return run

    def _seed_run(self, name: str) -> Path:
        """A run folder whose ``seed-1`` holds the seed folder of the corpus (``config.json``
        and ``model.safetensors``, as ``msakit train`` writes them)."""
        seed = self.root / name / "seed-1"
        seed.mkdir(parents=True, exist_ok=True)
        shutil.copy(CORPUS / "seed_config" / "seed-config.json", seed / "config.json")
        shutil.copy(CORPUS / "seed_weights" / "seed-model.safetensors",
                    seed / "model.safetensors")
        return self.root / name

    def _part(self, index: int) -> Path:
        """Shard ``index``/2 of the extracted seed's corpus (merge takes only the shards 1..n of
        one extraction): the same settings; shard 2 has other clips and rows."""
        import numpy as np

        from msakit.extract.corpus import write_features
        from msakit.extract.settings import METADATA_KEY

        with np.load(CORPUS / "extractor_record" / "seed-extracted.npz", allow_pickle=False) as z:
            record = json.loads(str(z[METADATA_KEY]))
            content: dict[str, dict[str, Any]] = {}
            for name in z.files:
                split, sep, key = name.partition("/")
                if sep:
                    content.setdefault(split, {})[key] = z[name]
        if index == 2:
            for split in content.values():
                split["id"] = np.array([f"p2-{i}" for i in split["id"]])
            record["rows"] = {s: [r + 1000 for r in rows] for s, rows in record["rows"].items()}
        record["shard"] = f"{index}/2"
        write_features(self.root / f"part-{index}.npz", content, record)
        return self.root / f"part-{index}.npz"

    @property
    def config(self):
        """The seed run's RunConfig (what ``train --resume`` compares a config.yaml with)."""
        if self._config is None:
            from msakit.rerun import load_run_config

            self._config = load_run_config(CORPUS / "run_config" / "seed-config.yaml")
        return self._config

    def scratch(self) -> Path:
        """An empty folder for one input's files (the converted-pickle cache emptied too)."""
        folder = self.root / "input"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        folder.mkdir()
        return folder


# --------------------------------------------------------------------------- readers
Call = tuple[str, Callable[[], Any]]


def _features(ws: Workspace, data: bytes, name: str) -> list[Call]:
    from msakit.data.mmsa import convert_to_npz, load_feature_file

    folder = ws.scratch()
    path = folder / name
    path.write_bytes(data)
    return [("load_feature_file", lambda: load_feature_file(path)),
            ("load_feature_file(prediction)", lambda: load_feature_file(path, prediction=True)),
            ("convert_to_npz", lambda: convert_to_npz(path, folder / "out.npz"))]


def _extracted(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.extract.merge import merge
    from msakit.extract.settings import describe, read_metadata

    folder = ws.scratch()
    path = folder / "part-1.npz"
    path.write_bytes(data)

    def record() -> None:
        got = read_metadata(path)
        if got is not None:
            describe(got["settings"])

    return [("read_metadata", record),
            ("merge", lambda: merge([path, ws.part2], folder / "merged.npz"))]


def _failures(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.extract.corpus import failures_path
    from msakit.extract.merge import merge

    folder = ws.scratch()
    part = Path(shutil.copy(ws.part1, folder / "part-1.npz"))
    failures_path(part).write_bytes(data)
    return [("merge", lambda: merge([part, ws.part2], folder / "merged.npz"))]


def _file(ws: Workspace, data: bytes, name: str) -> Path:
    path = ws.scratch() / name
    path.write_bytes(data)
    return path


def _run_with(ws: Workspace, data: bytes, name: str) -> Path:
    """A copy of the valid run folder with its file ``name`` replaced by ``data``."""
    run = ws.scratch() / "run"
    shutil.copytree(ws.run, run)
    (run / name).write_bytes(data)
    return run


def _run_config(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.reporting.report import report
    from msakit.training.runs import _check_resume_config

    run = _run_with(ws, data, "config.yaml")
    config = ws.config
    return [("report", lambda: report([run])), ("report(csv)", lambda: report([run], "csv")),
            ("resume", lambda: _check_resume_config(run, config))]


def _results(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.reporting.report import report

    run = _run_with(ws, data, "results.csv")
    return [("report", lambda: report([run], all_metrics=True)),
            ("report(latex)", lambda: report([run], "latex"))]


def _history(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.reporting.plots import plot_curves

    run = _run_with(ws, data, "seed-1/history.json")
    return [("plot_curves", lambda: plot_curves(run, run.parent / "curves.png"))]


def _config(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.rerun import load_run_config

    path = _file(ws, data, "config.yaml")
    return [("load_run_config", lambda: load_run_config(path))]


def _spec(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.config.datasets import read_spec_file

    path = _file(ws, data, "spec.yaml")
    return [("read_spec_file", lambda: read_spec_file(path))]


def _space(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.config import RunConfig, apply_overrides
    from msakit.tune import read_space

    path = _file(ws, data, "space.yaml")
    base = RunConfig(model_name="clgsi", dataset="mosi")

    def check(key: str, value: object) -> None:  # as tune does: each value a --set of the model
        apply_overrides(base, {key: value})

    return [("read_space", lambda: read_space(path)),
            ("read_space(checked)", lambda: read_space(path, check))]


def _clips(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.extract.corpus import read_clips

    path = _file(ws, data, "clips.csv")
    return [("read_clips", lambda: read_clips(path)),
            ("read_clips(asr)", lambda: read_clips(path, need_text=False, seed=3))]


def _texts(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.data.tokens import read_texts_csv

    path = _file(ws, data, "texts.csv")
    return [("read_texts_csv", lambda: read_texts_csv(path))]


def _openface(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.extract.vision import OpenFaceReader

    path = _file(ws, data, "clip.csv")
    reader = OpenFaceReader(path.parent, path)
    return [("OpenFaceReader.read", lambda: reader.read(reader.find("clip", "clip.mp4"), 10.0))]


def _checkpoint(ws: Workspace, data: bytes) -> list[Call]:
    from msakit.api import evaluate, load_checkpoint

    path = _file(ws, data, "best.pt")
    return [("load_checkpoint", lambda: load_checkpoint(path)),
            ("evaluate", lambda: evaluate(path, ws.data))]


def _files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _seed_folder(ws: Workspace, data: bytes, name: str) -> list[Call]:
    """The seed folder of a run (``seed-1``: config.json and model.safetensors) with its file
    ``name`` replaced by ``data``, read as ``evaluate``/``predict --checkpoint`` read it: the
    folder, its ``model.safetensors`` named directly, and ``evaluate``; reading writes nothing
    (the last call compares the run folder's files with what was there before)."""
    from msakit.api import evaluate, load_checkpoint

    run = ws.scratch() / "run"
    shutil.copytree(ws.seed_run, run)
    seed = run / "seed-1"
    (seed / name).write_bytes(data)
    before = _files_of(run)

    def nothing_written() -> None:
        after = _files_of(run)
        if after != before:
            changed = sorted(k for k in before.keys() | after.keys()
                             if before.get(k) != after.get(k))
            raise AssertionError(f"reading the seed folder wrote {changed}")

    return [("load_checkpoint", lambda: load_checkpoint(seed)),
            ("load_checkpoint(weights)", lambda: load_checkpoint(seed / "model.safetensors")),
            ("evaluate", lambda: evaluate(seed, ws.data)),
            ("nothing written", nothing_written)]


@dataclass(frozen=True)
class Target:
    name: str  # its corpus folder, tests/fuzz/corpus/NAME
    kind: str  # the format its mutations know
    calls: Callable[[Workspace, bytes], list[Call]]
    reads: str  # for the docs: the reader and the commands that reach it
    allowed: tuple[str, ...] = ("MsakitError",)  # exceptions the caller turns into one line


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("pickle", "pickle", lambda ws, d: _features(ws, d, "data.pkl"),
           "MMSA pickle: load_feature_file, convert_to_npz (evaluate, predict, train, convert, "
           "retokenize, tune, bench, the Python API)"),
    Target("npz", "npz", lambda ws, d: _features(ws, d, "data.npz"),
           "msakit npz (memory-mapped and in memory): the same routes as the pickle"),
    Target("extractor_record", "npz", _extracted,
           "extract's output: read_metadata (evaluate, predict, train on extracted files), merge"),
    Target("failures_csv", "csv", _failures, "a part's failures CSV: merge"),
    Target("config", "yaml", _config, "--config RUN/config.yaml: rerun.load_run_config (train)"),
    Target("run_config", "yaml", _run_config,
           "a run's config.yaml: report, train --resume (_check_resume_config)"),
    Target("dataset_spec", "yaml", _spec, "--dataset-spec: read_spec_file (train, tune, ...)"),
    Target("tune_space", "yaml", _space, "tune --space FILE.yaml: read_space (tune)"),
    Target("results_csv", "csv", _results, "a run's results.csv: report"),
    Target("history", "json", _history, "a seed's history.json: plot curves"),
    Target("clips_csv", "csv", _clips, "extract's clips CSV: read_clips"),
    Target("texts_csv", "csv", _texts, "retokenize --texts: read_texts_csv"),
    Target("openface_csv", "csv", _openface,
           "extract --vision-features openface: OpenFaceReader.read (a bad file fails its clip, "
           "listed in the failures CSV)", allowed=("MsakitError", "ClipError")),
    Target("checkpoint", "torch", _checkpoint,
           "a checkpoint: load_checkpoint (evaluate, predict, plot), evaluate"),
    Target("seed_config", "json", lambda ws, d: _seed_folder(ws, d, "config.json"),
           "a seed folder's config.json: load_checkpoint (evaluate, predict, plot, "
           "--init-from), evaluate"),
    Target("seed_weights", "safetensors", lambda ws, d: _seed_folder(ws, d, "model.safetensors"),
           "a seed folder's model.safetensors (its header: length, dtypes, shapes, offsets, "
           "metadata): load_checkpoint, evaluate"),
)}


READERS: dict[str, str] = {
    "training/runs.py::_check_resume_config": "run_config",
    "config/datasets.py::read_spec_file": "dataset_spec",
    "tune.py::read_space": "tune_space",
    "data/mmsa.py::_read": "pickle",
    "data/safe_format.py::_open_archive": "npz",  # read_npz's and read_extra's np.load
    "data/tables.py::read_csv": "results_csv",
    "data/tokens.py::read_texts_csv": "texts_csv",
    "extract/corpus.py::_read_table": "clips_csv",
    "extract/merge.py::_failures_of": "failures_csv",
    "extract/settings.py::read_metadata": "extractor_record",
    "extract/vision.py::OpenFaceReader.read": "openface_csv",
    "reporting/plots.py::_histories": "history",
    "reporting/report.py::read_run": "results_csv",
    "rerun.py::_read": "config",
    "training/runs.py::_finished_row": "results_csv",  # --resume: a finished seed's row
    "training/pretrained.py::read_checkpoint": "checkpoint",  # a torch file such as best.pt
    "training/pretrained.py::_metadata": "seed_weights",  # the header's metadata
    "training/pretrained.py::_read_description": "seed_config",
    "training/pretrained.py::prune_shared": "not fuzzed: the run's own seeds' config.json, read "
                                            "at its end; anything unreadable is skipped",
    "training/provenance.py::_earlier": "not fuzzed: the run's own config.yaml on --resume, "
                                        "read by read_yaml after --resume checked it; a "
                                        "record only",
    "config/__init__.py::_coerce": "not fuzzed: parses a --set value (a command-line word), "
                                   "not a file; the config targets reach it with every value",
    "config/__init__.py::plain": "not fuzzed: a JSON round trip of msakit's own values",
    "extract/corpus.py::_load_cached": "not fuzzed: extract's per-clip cache (OUT.cache, "
                                       "msakit's own files)",
    "importing.py::_read_state": "not fuzzed: import-weights' reference weights (torch "
                                 "weights_only; the importers check names and shapes)",
    "models/conki/adapters.py::_adapter_file": "not fuzzed: ConKI's adapters.pt (torch "
                                               "weights_only)",
    "training/stages.py::_pretrain_locked": "not fuzzed: the best.pt a model's adapter stage "
                                            "wrote moments before",
    "training/trainer.py::Trainer._load_last": "not fuzzed: last.pt on --resume (torch "
                                               "weights_only; tests/test_hostile.py's resume-* "
                                               "cases)",
    "training/trainer.py::Trainer._truncate_step_log": "not fuzzed: --log-steps on --resume, "
                                                       "only the run's own recorded step log "
                                                       "(core.safety); not UTF-8 is one line",
    "extract/analyze.py::_load_state": "not fuzzed: analyze's own record of a finished video "
                                       "(OUT/NAME/.msakit-analyze.json); anything unreadable "
                                       "means 'analyze it again'",
    "core/safe_yaml.py::read_yaml": "config",
    "core/safety.py::_check_run_config": "run_config",
    "core/safety.py::_is_step_log": "not fuzzed: the first 4 KB of an existing output, read "
                                    "only to tell a step log; anything unreadable is 'not a "
                                    "step log'",
}
"""Every function of src/msakit that parses a file (tests/test_fuzz.py finds them by their
calls: yaml, json, csv, np.load, torch.load, the restricted unpickler, read_csv): the target
that fuzzes it, or why none does."""


# --------------------------------------------------------------------------- the contract
def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of msakit, and the library file the exception came
    from when it is not msakit's (``config/datasets.py:298 (yaml/constructor.py)``)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/msakit/" in f.filename]
    where = f"{ours[-1].filename.split('/msakit/')[-1]}:{ours[-1].lineno}" if ours else "?"
    if frames and "/msakit/" not in frames[-1].filename:
        library = re.split(r"site-packages/|python3\.\d+/", frames[-1].filename)[-1]
        where += f" ({library})"
    return where


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cap_address_space() -> None:
    """Cap the address space ``AS_HEADROOM_MB`` above what the process maps now."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm + AS_HEADROOM_MB * 1024 * 1024
    if hard == resource.RLIM_INFINITY or limit < hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def check(target: Target, data: bytes, ws: Workspace) -> list[str]:
    """Run ``data`` through ``target``; the one-line descriptions of the contract's failures."""
    failures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, call in target.calls(ws, data):
            rss, cpu = _peak_rss_mb(), _cpu_s()
            sink = io.StringIO()
            try:
                with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
                    call()
            except Exception as exc:  # noqa: BLE001 - the contract is about exactly this
                if type(exc).__name__ not in target.allowed and not _is_msakit_error(exc):
                    text = " ".join(str(exc).split())[:200]
                    failures.append(f"{target.name}: {label}: {type(exc).__name__}: {text} "
                                    f"@ {_where(exc)}")
            grown, spent = _peak_rss_mb() - rss, _cpu_s() - cpu
            if grown > RSS_LIMIT_MB:
                failures.append(f"{target.name}: {label}: peak RSS grew by {grown:.0f} MB")
            if spent > CPU_LIMIT_S:
                failures.append(f"{target.name}: {label}: {spent:.1f} s of CPU time")
    return failures


def _is_msakit_error(exc: BaseException) -> bool:
    from msakit.core.errors import MsakitError

    return isinstance(exc, MsakitError)


def known(description: str) -> Known | None:
    return next((k for k in KNOWN_FAILURES if k.matches(description)), None)


# --------------------------------------------------------------------------- inputs
def corpus_files(name: str) -> list[Path]:
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


class Generator:
    """Structured mutations of a target's corpus (``mutate``), from trusted seeds where a
    format must be parsed (see :mod:`mutators`)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        # Generated inputs start from the seeds make_seeds.py wrote (reproducers and files other
        # work adds to the corpus are replayed as they are; campaigns mutate them too).
        self.files = [p.read_bytes() for p in corpus_files(target.name)
                      if p.name.startswith("seed-")]
        self.trusted = self._parse(self.files)
        self._state: Any = None

    def _parse(self, seeds: list[bytes]) -> list[Any]:
        kind = self.target.kind
        if kind == "yaml":
            import yaml

            return [yaml.safe_load(s) for s in seeds]
        if kind == "json":
            return [json.loads(s) for s in seeds]
        if kind == "csv":
            import csv

            return [list(csv.reader(io.StringIO(s.decode()))) for s in seeds]
        return []

    def generated(self, seed: int) -> dict:
        """A freshly generated MMSA file's content (cut small; ``seed`` picks the data)."""
        import make_seeds

        return make_seeds.tiny_content(seed=seed % 7)

    def checkpoint_state(self) -> Any:
        if self._state is None:
            import torch

            self._state = torch.load(CORPUS / "checkpoint" / "seed-tfn-best.pt",
                                     weights_only=True)
        return self._state

    def mutate(self, data: bytes, rng) -> bytes:
        kind = self.target.kind
        if rng.random() < 0.1:
            return mutators.byte_mutation(data, rng, self.files)
        if kind == "pickle":
            return mutators.pickle_mutation(data, rng, self.generated)
        if kind == "npz":
            return mutators.npz_mutation(data, rng, self.generated)
        if kind == "yaml":
            return mutators.yaml_mutation(data, rng, self.trusted)
        if kind == "json":
            return mutators.json_mutation(data, rng, self.trusted)
        if kind == "csv":
            return mutators.csv_mutation(data, rng, self.trusted)
        if kind == "safetensors":
            return mutators.safetensors_mutation(data, rng)
        return mutators.torch_mutation(data, rng, self.checkpoint_state)

    def case(self, index: int) -> bytes:
        """Generated input ``index``: a corpus file with one to three mutations, the same bytes
        for the same index on every machine."""
        import random

        rng = random.Random(f"{self.target.name}/{index}")
        data = rng.choice(self.files) if self.files else b""
        for _ in range(rng.choice((1, 1, 2, 3))):
            data = self.mutate(data, rng)
        return data[:1 << 22]

