"""The ``msakit`` command line. Every command maps to a function of :mod:`msakit.api`.

Bad input prints one line ``error: ...`` on stderr and exits with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from msakit.config import CLI_SETTINGS
from msakit.errors import MsakitError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def command(name: str):
    def wrap(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn

    return wrap


# --------------------------------------------------------------------------- commands
@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from msakit import api
    from msakit.reporting import print_results

    print("msakit demo: CLGSI on synthetic MOSI-shaped data (256/64/96 samples, "
          "50/500/375 frames) with the packaged all-MiniLM-L6-v2 text encoder", flush=True)
    result = api.demo(out=args.out, quiet=args.quiet, overrides=list(CLI_SETTINGS))
    print(f"run folder: {result.out}")
    print_results(result.rows, "mosi")
    return 0


@command("synth")
def _synth(args: argparse.Namespace) -> int:
    from msakit import api

    path = api.synth(args.like, tuple(args.n), args.out, seed=args.seed)
    print(f"wrote {path} ({args.like}-shaped: {' / '.join(map(str, args.n))} samples)")
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from msakit import api
    from msakit.reporting import print_results

    result = api.train(
        args.model,
        args.dataset,
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
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.out / 'results.csv'}")
        print_results(result.rows, args.dataset)
    return 0


@command("pretrain-adapters")
def _pretrain_adapters(args: argparse.Namespace) -> int:
    from msakit.training.stages import pretrain_adapters

    result = pretrain_adapters(
        args.dataset,
        args.data,
        out=args.out,
        text_encoder=args.text_encoder,
        epochs=args.epochs,
        batch=args.batch,
        overrides=args.set,
        seed=args.seed,
        quiet=args.quiet,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {result.adapters} (best validation MAE {result.valid['MAE']:.4f} "
              f"at epoch {result.epoch})")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from msakit import api

    metrics = api.evaluate(args.checkpoint, args.data, args.split)
    print(json.dumps(metrics))
    return 0


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from msakit import api

    rows = api.predict(args.checkpoint, args.data, args.split, args.out)
    print(f"wrote {len(rows)} predictions to {args.out}")
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
        args.model, args.dataset, args.data, batch=args.batch, epochs=args.epochs,
        text_encoder=args.text_encoder, overrides=args.set, warmup_steps=args.warmup_steps,
        max_steps=args.max_steps, flops=args.flops,
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
    from msakit.reporting.report import report

    text = report(args.dirs, fmt=args.format, label=args.label, all_metrics=args.all_metrics)
    if args.out:
        try:
            with open(args.out, "w") as f:
                f.write(text)
        except OSError as exc:
            raise MsakitError(f"cannot write {args.out}: {exc.strerror or exc}") from None
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
    elif args.figure == "weights":
        path = plots.plot_weights(
            args.out, checkpoint=args.checkpoint, threshold=args.threshold, gain=args.gain
        )
    else:
        path = plots.plot_scatter(args.checkpoint, args.data, args.out, split=args.split)
    print(f"wrote {path}")
    return 0


@command("tune")
def _tune(args: argparse.Namespace) -> int:
    from msakit.tune import tune

    result = tune(
        args.model, args.dataset, args.data, trials=args.trials, out=args.out,
        epochs=args.epochs, storage=args.storage, study=args.study,
        text_encoder=args.text_encoder, batch=args.batch, overrides=args.set,
        adapters=args.adapters, seed=args.seed, quiet=args.quiet,
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
        args.source, args.model, args.dataset, args.weights, args.data, args.text_encoder,
        args.out, overrides=args.set,
    )
    print(f"wrote {path} ({args.model} on {args.dataset}, weights from {args.source})")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="msakit", description="Multimodal sentiment analysis: CLGSI and ConKI.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="train CLGSI on built-in synthetic data (a few minutes)")
    p.add_argument("--out", help="run folder (default: a new temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("synth", help="write a synthetic MMSA feature file with the real shapes")
    p.add_argument("--like", required=True, choices=["mosi", "mosei", "sims"])
    p.add_argument("--n", required=True, nargs=3, type=int, metavar=("TRAIN", "VALID", "TEST"))
    p.add_argument("--out", required=True, help="output file (MMSA pickle)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a model on an MMSA feature file, several seeds")
    _add_train_arguments(p)
    p.add_argument("--adapters", help="ConKI: adapters.pt from pretrain-adapters")
    p.add_argument("--log-steps", help="write one JSON line per optimizer step to this file")
    p.add_argument("--resume", action="store_true", help="continue from seed-S/last.pt")

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on one split (JSON)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])

    p = sub.add_parser("predict", help="write a checkpoint's predictions as CSV")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--out", required=True, help="output CSV (id, prediction, label)")

    p = sub.add_parser("convert", help="rewrite a pickle feature file as code-free npz")
    p.add_argument("file", help="MMSA feature pickle")
    p.add_argument("--out", required=True, help="output .npz (read with allow_pickle=False)")

    p = sub.add_parser("bench", help="measure training throughput and peak memory")
    p.add_argument("--model", required=True, choices=["clgsi", "conki"])
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "sims"])
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int)
    p.add_argument("--epochs", type=int, default=1, help="epochs timed after the warm-up")
    p.add_argument("--max-steps", type=int, help="stop timing after this many steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    p.add_argument("--text-encoder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--flops", action="store_true",
                   help="also measure the text encoder's share of the matmul peak")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")

    for extra in _EXTRA_PARSERS:
        extra(sub)
    return parser


def _add_train_arguments(p: argparse.ArgumentParser, out_default: str = "runs/msakit") -> None:
    p.add_argument("--model", required=True, choices=["clgsi", "conki"])
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "sims"])
    p.add_argument("--data", required=True, help="MMSA feature file (.pkl or converted .npz)")
    p.add_argument("--text-encoder", help="BERT-family hub name or folder (default: packaged)")
    p.add_argument("--seeds", nargs="+", type=int, help="one run per seed")
    p.add_argument("--epochs", type=int, help="cap on epochs, and the schedule's horizon")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--out", default=out_default, help="run folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set gamma=0.5 --set fusion=add")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_pretrain_adapters_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-adapters",
        help="ConKI stage 1: pretrain adapters on an external MMSA feature file",
    )
    p.add_argument("--model", required=True, choices=["conki"])
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "sims"],
                   help="the target data set whose ConKI preset to use")
    p.add_argument("--data", required=True, help="the external data set's feature file")
    p.add_argument("--text-encoder", help="BERT-family hub name or folder (default: packaged); "
                   "use the same one for train")
    p.add_argument("--epochs", type=int, help="pretraining epochs (default 10)")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--seed", type=int, help="random seed (default: the preset's first seed)")
    p.add_argument("--out", required=True, help="folder for adapters.pt")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set adapter_dim=128")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="mean ± std over seeds of run folders, side by side, as the papers' tables"
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folders (with results.csv)")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])
    p.add_argument("--label", default="auto", choices=["auto", "folder", "config"],
                   help="row labels: folder names, or the runs' distinguishing --set values")
    p.add_argument("--all-metrics", action="store_true",
                   help="also Acc-5 (MOSI/MOSEI) and Acc-3 (SIMS)")
    p.add_argument("--out", help="write the table to this file (default: print it)")


def _add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG figures: curves, tsne, weights, scatter")
    figures = p.add_subparsers(dest="figure", required=True, parser_class=_Parser)
    f = figures.add_parser("curves", help="training and validation curves of a run folder")
    f.add_argument("run_dir", metavar="RUN_DIR", help="run folder (or one seed-S folder)")
    f.add_argument("--out", required=True, help="output PNG")
    f = figures.add_parser(
        "tsne", help="t-SNE of a checkpoint's representations, coloured by sentiment interval"
    )
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--data", required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"])
    f.add_argument("--intervals", nargs="+", metavar="I",
                   help="only these sentiment intervals, e.g. --intervals -2 +2")
    f.add_argument("--max-samples", type=int, default=500, help="samples drawn at most")
    f.add_argument("--perplexity", type=float, default=30.0)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", required=True, help="output PNG")
    f = figures.add_parser("weights", help="CLGSI's weight function (Figure 3)")
    f.add_argument("--checkpoint", help="take κ and g from this CLGSI checkpoint")
    f.add_argument("--threshold", type=float, help="κ (default: checkpoint's, or 0.4)")
    f.add_argument("--gain", type=float, help="g (default: checkpoint's, or 1.5)")
    f.add_argument("--out", required=True, help="output PNG")
    f = figures.add_parser("scatter", help="predicted against true sentiment")
    f.add_argument("--checkpoint", required=True)
    f.add_argument("--data", required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"])
    f.add_argument("--out", required=True, help="output PNG")


def _add_tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Optuna sweep; workers sharing --storage and --study share one study"
    )
    p.add_argument("--model", required=True, choices=["clgsi", "conki"])
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "sims"])
    p.add_argument("--data", required=True, help="MMSA feature file (.pkl or converted .npz)")
    p.add_argument("--trials", required=True, type=int, help="trials this worker runs")
    p.add_argument("--epochs", type=int, help="epochs per trial (cap and schedule horizon)")
    p.add_argument("--storage", help="database URL (default: sqlite:///OUT/optuna.db; "
                   "postgresql://user:password@host/db for many machines)")
    p.add_argument("--study", help="study name (default: msakit-MODEL-DATASET)")
    p.add_argument("--out", required=True, help="folder for trial-K/ runs and best.yaml")
    p.add_argument("--text-encoder", help="BERT-family hub name or folder (default: packaged)")
    p.add_argument("--batch", type=int, help="global batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a value fixed for every trial (and not searched), e.g. --set gamma=0.5")
    p.add_argument("--adapters", help="ConKI: adapters.pt from pretrain-adapters")
    p.add_argument("--seed", type=int, help="training seed of every trial (default: preset's)")
    p.add_argument("--quiet", action="store_true", help="no per-trial Optuna log lines")

def _add_import_weights_parser(sub: argparse._SubParsersAction) -> None:
    from msakit.models.import_weights import SOURCES

    p = sub.add_parser(
        "import-weights",
        help="a reference implementation's saved weights as an msakit checkpoint",
    )
    p.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES),
                   help="clgsi-authors: state_dict of the authors' CLGSI AMIO module")
    p.add_argument("--model", required=True, choices=["clgsi", "conki"])
    p.add_argument("--dataset", required=True, choices=["mosi", "mosei", "sims"])
    p.add_argument("--weights", required=True, help="the reference's saved state_dict (.pth)")
    p.add_argument("--data", required=True, help="an MMSA feature file of the dataset (sizes)")
    p.add_argument("--text-encoder", required=True,
                   help="folder or hub name of the text encoder the weights were trained with")
    p.add_argument("--out", required=True, help="the msakit checkpoint to write (.pt)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the reference that differs from the preset")


_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_pretrain_adapters_parser,
    _add_report_parser,
    _add_plot_parser,
    _add_tune_parser,
    _add_import_weights_parser,
]


# Commands that train: they turn msakit's CPU speed settings on (the Python API does not).
_FAST_COMMANDS = ("train", "bench", "tune", "pretrain-adapters")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in _FAST_COMMANDS:  # CPU speed settings on; the user's --set comes after
        args.set = [*CLI_SETTINGS, *args.set]
    try:
        return COMMANDS[args.command](args)
    except MsakitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
