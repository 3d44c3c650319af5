"""``msakit tune``: an Optuna sweep; workers sharing ``--storage`` and ``--study`` share one
study."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    OUT_TUNE,
    TEXT,
    TEXT_ENCODER_HELP,
    add_dataset_arguments,
    add_model_argument,
    add_overwrite,
    add_preset_argument,
    arg,
    dataset_of,
)
from msakit.config import SWEEP_FOLDER

NAME = "tune"
"""A command that trains: msakit's CPU speed settings go before its ``--set`` values."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME, help="Optuna sweep; workers sharing --storage and --study share one study"
    )
    add_model_argument(p)
    add_dataset_arguments(p)
    arg(p, "--data", role=IN_FILE,
         required=True, help="MMSA feature file (.pkl or converted .npz)")
    p.add_argument("--trials", required=True, type=int, help="trials this worker runs")
    p.add_argument("--epochs", type=int, help="epochs per trial (cap and schedule horizon)")
    arg(p, "--storage", role=TEXT, help="database URL (default: sqlite:///OUT/optuna.db; "
                   "postgresql://user:password@host/db for many machines)")
    arg(p, "--study", role=TEXT, help="study name (default: msakit-MODEL-DATASET)")
    arg(p, "--out", role=OUT_TUNE, default=SWEEP_FOLDER,
        help="folder for the study's trial-K/ runs and best.yaml")
    add_overwrite(p)
    arg(p, "--text-encoder", role=ENCODER, help=TEXT_ENCODER_HELP)
    add_preset_argument(p)
    p.add_argument("--batch", type=int, help="global batch size")
    arg(p, "--set", role=TEXT, action="append", default=[], metavar="KEY=VALUE",
                   help="a value fixed for every trial (and not searched), e.g. --set gamma=0.5;"
                   " --set sampler=bucket draws batches from length buckets (faster, but it "
                   "changes which samples meet in a batch); --set standardize=true standardises "
                   "audio and vision with the training split's statistics (see train --help)")
    arg(p, "--adapters", role=IN_FILE,
         help="adapters.pt from pretrain-adapters (models with adapters)")
    arg(p, "--space", role=IN_FILE, metavar="FILE.yaml",
        help="search space replacing the model's: per --set key {low: A, high: B} (log: true, "
        "int: true) or {choices: [...]}, e.g. 'lr.text: {low: 1e-5, high: 1e-4, log: true}'")
    arg(p, "--objective", role=TEXT, default="MAE:min", metavar="METRIC[:min|max]",
        help="the validation metric trials optimise, pruning and the best trial follow it, "
        "e.g. Corr:max, Has0_acc_2:max (without :min/:max MAE is minimised, others maximised)")
    p.add_argument("--seed", "--seeds", type=int,
                   help="training seed of every trial and the seeds of the "
                   "retraining (default: the preset's first for trials, all of them to retrain)")
    p.add_argument("--quiet", action="store_true", help="no per-trial Optuna log lines")
    p.add_argument("--keep-checkpoints", type=int, default=1, metavar="N",
                   help="the N best trials of the study keep their best weights (default 1; 0: "
                   "none); other trials keep config, history and metrics only, no last.pt")


def run(args: argparse.Namespace) -> int:
    # lazy: optuna and the training stack load when the sweep runs
    from msakit.tune import tune

    result = tune(
        args.model, dataset_of(args), args.data, trials=args.trials, out=args.out,
        epochs=args.epochs, storage=args.storage, study=args.study,
        text_encoder=args.text_encoder, batch=args.batch, overrides=args.set,
        adapters=args.adapters, seed=args.seed, quiet=args.quiet, preset=args.preset,
        keep_checkpoints=args.keep_checkpoints, overwrite=args.overwrite, space=args.space,
        objective=args.objective,
    )
    if result.best is None:
        print(f"study {result.study!r}: no trial completed yet")
        return 0
    best = result.best["best"]
    print(f"study {result.study!r} ({result.storage}): best trial {best['trial']}, "
          f"validation {result.best['metric']} {best['value']:.4f}")
    print(f"wrote {result.summary}; retrain it with:")
    print(result.best["command"])
    return 0
