"""``msakit analyze``: long videos as a sentiment timeline per video."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    CHECKPOINT,
    IN_VIDEOS,
    OUT_FOLDER,
    add_asr_arguments,
    arg,
    failures_status,
)

NAME = "analyze"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="long videos -> a sentiment timeline per video "
                       "(utterances, transcripts, predictions): CSV/JSON and PNG")
    arg(p, "videos", role=IN_VIDEOS, nargs="+", metavar="VIDEO",
         help="video files, or folders of them")
    arg(p, "--checkpoint", role=CHECKPOINT, required=True,
                   help="a checkpoint (or run folder) trained on an 'msakit extract' file")
    arg(p, "--out", role=OUT_FOLDER, required=True,
         help="output folder: OUT/NAME/timeline.* per video")
    p.add_argument("--segments", default="vad", choices=["vad", "asr"],
                   help="utterances from Silero voice activity, or Whisper's words joined across "
                   "pauses shorter than --merge-gap")
    p.add_argument("--min-seconds", type=float, default=1.0, help="shortest utterance kept")
    p.add_argument("--max-seconds", type=float, default=15.0,
                   help="longer speech is cut (at a pause when VAD finds one)")
    p.add_argument("--merge-gap", type=float, default=0.5,
                   help="pauses shorter than this (s) do not end an utterance")
    add_asr_arguments(p, "the recogniser of the transcripts (default: the checkpoint's "
                       "recorded one, else pocketsphinx)")
    p.add_argument("--format", default="csv", choices=["csv", "json"], help="the table's format")
    p.add_argument("--workers", type=int, default=1, help="processes, one video each at a time")
    p.add_argument("--resume", action="store_true",
                   help="skip videos whose timeline an earlier run wrote with the same settings")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # lazy: the analyzer (Silero VAD, ASR, the checkpoint) loads when the command runs
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
    return failures_status(len(result.failures), "video", result.out / FAILURES)
