"""``msakit predict``: a checkpoint's predictions on a split, or on video clips (CSV or JSON,
to a file or to standard output)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msakit.commands.arguments import (
    CHECKPOINT,
    IN_FILE,
    OUT_TABLE,
    TEXT,
    add_overwrite,
    arg,
    table_format,
)
from msakit.core.errors import MsakitError
from msakit.core.files import write_text_atomic

NAME = "predict"
FORMATS = ("csv", "json")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="a checkpoint's predictions: a split, or video clips")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder with one seed")
    arg(p, "--data", role=IN_FILE,
         help="MMSA feature file (labels optional); required unless --video")
    p.add_argument("--split", choices=["train", "valid", "test"],
                   help="which split (default: the file's only split, else test)")
    arg(p, "--out", role=OUT_TABLE,
         help="output file, or '-' for standard output: one row per sample (id, "
         "prediction[, label]) or per clip; required with --data")
    p.add_argument("--format", choices=FORMATS,
                   help="csv or json (default: from --out's extension, else csv)")
    add_overwrite(p)
    _add_predict_video_arguments(p)


def _add_predict_video_arguments(p: argparse.ArgumentParser) -> None:
    arg(p, "--video", role=IN_FILE, nargs="+", metavar="CLIP",
        help="predict video clips with the checkpoint's extractor (checkpoints trained on "
        "'msakit extract' files); without --out or --format, a few lines per clip")
    arg(p, "--text", role=TEXT, help="the clip's transcript, one clip only (default: "
        "pocketsphinx ASR, English)")
    arg(p, "--openface-csv", role=IN_FILE,
         help="OpenFace 2.0 CSV of the clip, one clip only (checkpoints trained on "
                   "--vision-features openface)")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit import api
    from msakit.inference import predictions_text

    fmt = table_format(args.out, args.format, FORMATS, "csv")
    if args.video is not None:
        return _predict_videos(args, fmt)
    if args.data is None or args.out is None:
        missing = "--data" if args.data is None else "--out"
        raise MsakitError(f"msakit predict: {missing} is required (or --video CLIP ...)")
    rows = api.predict(args.checkpoint, args.data, args.split)
    _write(args.out, predictions_text(rows, fmt))
    if args.out != "-":
        unlabelled = "" if rows and "label" in rows[0] else " (no labels: id, prediction)"
        print(f"wrote {len(rows)} predictions to {args.out}{unlabelled}")
    return 0


def _write(out: str, text: str) -> None:
    if out == "-":
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text)


def _predict_videos(args: argparse.Namespace, fmt: str) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.api import predict_video
    from msakit.inference import predictions_text

    if args.data is not None:
        raise MsakitError("msakit predict: --video predicts clips, --data a split of a feature "
                          "file; give one of them")
    if len(args.video) > 1 and (args.text is not None or args.openface_csv is not None):
        flag = "--text" if args.text is not None else "--openface-csv"
        raise MsakitError(f"msakit predict: {flag} belongs to one clip; give one --video CLIP "
                          "with it")
    rows = []
    for clip in args.video:
        result = predict_video(args.checkpoint, clip, args.text, openface_csv=args.openface_csv)
        rows.append({"clip": str(clip), "prediction": float(f"{result.prediction:.6g}"),
                     "text": result.text, "from_asr": result.from_asr,
                     "audio_frames": result.audio_frames, "face_frames": result.face_frames})
        if args.out is None and args.format is None:  # the lines a person reads
            source = "speech recognition" if result.from_asr else "--text"
            name = f"{Path(clip).name}: " if len(args.video) > 1 else ""
            print(f"{name}text ({source}): {result.text!r}; {result.audio_frames} audio frames, "
                  f"{result.face_frames} frames with a face")
            print(f"{name}sentiment intensity: {result.prediction:+.3f}")
    if args.out is not None or args.format is not None:
        _write(args.out or "-", predictions_text(rows, fmt))
        if args.out not in (None, "-"):
            print(f"wrote {len(rows)} clip predictions to {args.out}")
    return 0
