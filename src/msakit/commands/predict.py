"""``msakit predict``: a checkpoint's predictions on a split (CSV), or on one video clip."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import CHECKPOINT, IN_FILE, OUT_FILE, TEXT, add_overwrite, arg
from msakit.core.errors import MsakitError

NAME = "predict"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="a checkpoint's predictions: a split as CSV, or one video")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a seed folder (model.safetensors + config.json), its "
                   "model.safetensors, a best.pt, or a run folder with one seed")
    arg(p, "--data", role=IN_FILE,
         help="MMSA feature file (labels optional); required unless --video")
    p.add_argument("--split", choices=["train", "valid", "test"],
                   help="which split (default: the file's only split, else test)")
    arg(p, "--out", role=OUT_FILE,
         help="output CSV (id, prediction[, label]); required with --data")
    add_overwrite(p)
    _add_predict_video_arguments(p)


def _add_predict_video_arguments(p: argparse.ArgumentParser) -> None:
    arg(p, "--video", role=IN_FILE, help="predict one video clip with the checkpoint's extractor "
                   "(checkpoints trained on 'msakit extract' files)")
    arg(p, "--text", role=TEXT, help="the clip's transcript (default: pocketsphinx ASR, English)")
    arg(p, "--openface-csv", role=IN_FILE,
         help="OpenFace 2.0 CSV of the clip (checkpoints trained on "
                   "--vision-features openface)")


def run(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
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


def _predict_video(args: argparse.Namespace) -> int:
    # lazy: loaded when the command runs, not for the parser (msakit --help stays fast)
    from msakit.api import predict_video

    if args.data is not None or args.out is not None:
        raise MsakitError("msakit predict: --video predicts one clip; leave out --data and --out")
    result = predict_video(args.checkpoint, args.video, args.text, openface_csv=args.openface_csv)
    source = "speech recognition" if result.from_asr else "--text"
    print(f"text ({source}): {result.text!r}; {result.audio_frames} audio frames, "
          f"{result.face_frames} frames with a face")
    print(f"sentiment intensity: {result.prediction:+.3f}")
    return 0
