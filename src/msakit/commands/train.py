"""``msakit train``: a model trained on an MMSA feature file, several seeds (or a saved
configuration rerun with ``--config``)."""

from __future__ import annotations

import argparse
import os

from msakit.commands.arguments import (
    CHECKPOINT,
    IN_FILE,
    LOG,
    TEXT,
    add_train_arguments,
    arg,
    dataset_of,
)
from msakit.core.errors import MsakitError

NAME = "train"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="train a model on an MMSA feature file, several seeds")
    add_train_arguments(p)
    arg(p, "--adapters", role=IN_FILE,
         help="adapters.pt from pretrain-adapters (models with adapters)")
    arg(p, "--log-steps", role=LOG, help="write one JSON line per optimizer step to this file")
    p.add_argument("--resume", action="store_true", help="continue from seed-S/last.pt")
    p.add_argument("--save", choices=["best", "last", "none"],
                   help="what a finished seed keeps: best (its best weights, model.safetensors "
                   "+ config.json; the default), last (also last.pt, to continue it later), "
                   "none (no weights: history.json and its results row)")
    p.add_argument("--keep-last", action="store_true",
                   help="keep each seed's last.pt after it finishes (the same as --save last)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its results and checkpoints)")
    arg(p, "--init-from", role=CHECKPOINT, metavar="CKPT",
                   help="start every seed from this checkpoint of the same --model (e.g. "
                   "trained on another data set); tensors whose shapes differ (input widths) "
                   "are re-initialised and listed")
    p.add_argument("--track", choices=["mlflow"],
                   help="log settings, per-epoch metrics, results and curves to MLflow")
    arg(p, "--track-uri", role=TEXT, metavar="URI",
         help="MLflow tracking server or store (default: $MLFLOW_TRACKING_URI, else MLflow's "
         "embedded mlflow.db in the working folder)")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.core.runlog import recording

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


def _train_and_print(args: argparse.Namespace, config) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.reporting import print_results

    result = api.train(
        args.model if config is None else config.model_name,
        dataset_of(args) if config is None else config.spec,
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
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.rerun import load_run_config

    base = load_run_config(args.config, model=args.model, dataset=args.dataset,
                           preset=args.preset)
    return api.build_config(
        base.model_name, base.dataset, text_encoder=args.text_encoder, seeds=args.seeds,
        epochs=args.epochs, batch=args.batch, overrides=args.set, base=base,
    )
