"""``msakit plot FIGURE``: PNG figures (curves, t-SNE, scatter, and each model's own)."""

from __future__ import annotations

import argparse
from typing import Any

from msakit.commands.arguments import (
    CHECKPOINT,
    IN_FILE,
    IN_RUN,
    OUT_FILE,
    TEXT,
    Parser,
    add_overwrite,
    add_positional_alias,
    arg,
)
from msakit.models.registry import model_plots

NAME = "plot"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="PNG figures: curves, tsne, weights, scatter")
    figures = p.add_subparsers(dest="figure", required=True, parser_class=Parser)
    f = figures.add_parser("curves", help="training and validation curves of a run folder")
    add_positional_alias(f, "--run", "run_dir", role=IN_RUN, metavar="RUN_DIR",
                         help="run folder (or one seed-S folder)")
    arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    add_overwrite(f)
    f = figures.add_parser(
        "tsne", help="t-SNE of a checkpoint's representations, coloured by sentiment interval"
    )
    arg(f, "--checkpoint", role=CHECKPOINT, required=True)
    arg(f, "--data", role=IN_FILE, required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    arg(f, "--intervals", role=TEXT, nargs="+", metavar="I",
                   help="only these sentiment intervals, e.g. --intervals -2 +2")
    f.add_argument("--max-samples", type=int, default=500, help="samples drawn at most")
    f.add_argument("--perplexity", type=float, default=30.0, help="t-SNE's perplexity")
    f.add_argument("--seed", "--seeds", type=int, default=0,
                   help="t-SNE's and the draw's random seed")
    arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    add_overwrite(f)
    _add_model_figures(figures)
    f = figures.add_parser("scatter", help="predicted against true sentiment")
    arg(f, "--checkpoint", role=CHECKPOINT, required=True)
    arg(f, "--data", role=IN_FILE, required=True)
    f.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="which split")
    arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
    add_overwrite(f)


def _add_model_figures(figures: argparse._SubParsersAction) -> None:
    """``plot NAME`` for every figure a model declares (``ModelSpec.plots``)."""
    for name, (_, plot) in model_plots().items():
        f = figures.add_parser(name, help=plot.help)
        arg(f, "--checkpoint", role=CHECKPOINT, help=plot.checkpoint_help)
        for flag, text in plot.options:
            f.add_argument(flag, type=float, help=text)
        arg(f, "--out", role=OUT_FILE, required=True, help="output PNG")
        add_overwrite(f)


def run(args: argparse.Namespace) -> int:
    # lazy: matplotlib and the checkpoint loader load when a figure is drawn
    from msakit.reporting import plots

    if args.figure == "curves":
        path = plots.plot_curves(args.run, args.out)
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
    _, plot = model_plots()[args.figure]
    names = [flag.lstrip("-").replace("-", "_") for flag, _ in plot.options]
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}
