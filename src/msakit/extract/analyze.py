"""``msakit analyze VIDEO... --checkpoint CK``: long videos as sentiment timelines.

Each video is decoded once (16 kHz audio; every sampled frame described by the checkpoint's face
extractor as it is decoded) and split into utterances: Silero VAD's speech stretches
(``segments="vad"``) or Whisper's words on the whole recording, joined across short pauses
(``segments="asr"``), shaped by :class:`~msakit.extract.vad.UtteranceRules`. Every utterance is
then extracted as ``msakit extract`` extracts a clip
(:func:`msakit.extract.corpus.clip_features` on the utterance's stretch of audio and frames,
with the checkpoint's recorded extractor settings) and predicted as ``predict --video`` predicts
one (:mod:`msakit.extract.predict`). The checkpoint, the extractors and the recogniser are
loaded once per process, for all the videos it analyzes.

Per video, ``OUT/NAME/`` receives ``timeline.csv`` (or ``timeline.json``) and ``timeline.png``
(:mod:`msakit.extract.timeline`), then ``.msakit-analyze.json`` (the settings' fingerprint and
the rows) last: ``resume`` skips a video whose record matches (same checkpoint, settings, video
size and time). NAME is the video's file name without its suffix (with a hash of its path when
two videos share it). A video that cannot be analyzed is listed in ``OUT/failures.csv``
(``video,reason``) and the others go on; ``workers`` processes analyze videos in parallel.

Transcripts: the recogniser of ``--asr`` (default: the checkpoint's recorded one, else
pocketsphinx) on each utterance; with ``segments="asr"``, the words Whisper placed in the
utterance. The checkpoint's loader is given by the caller (:func:`msakit.api.load_checkpoint`):
``extract/`` imports no model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.files import RunLock, write_text_atomic
from msakit.extract import corpus
from msakit.extract.corpus import _progress
from msakit.extract.media import SAMPLE_RATE, ClipError, Media
from msakit.extract.predict import _clip_arrays, _predict_one, _recorded_settings
from msakit.extract.settings import ExtractorSettings, encode_metadata
from msakit.extract.text import Tokenizer
from msakit.extract.timeline import FORMATS, Row, draw, write_table
from msakit.extract.vad import SEGMENTERS, UtteranceRules, VoiceActivity, shape_utterances

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv",
                  ".wmv", ".ts")
STATE_FILE = ".msakit-analyze.json"
FAILURES = "failures.csv"


@dataclass(frozen=True)
class AnalyzeOptions:
    rules: UtteranceRules = field(default_factory=UtteranceRules)
    segments: str = "vad"
    asr: str | None = None  # None: the checkpoint's recorded recogniser, else pocketsphinx
    asr_model: str | None = None
    asr_language: str | None = None
    format: str = "csv"

    def check(self) -> None:
        self.rules.check()
        if self.segments not in SEGMENTERS:
            raise MsakitError(f"--segments must be one of {', '.join(SEGMENTERS)}, "
                              f"got {self.segments!r}")
        if self.format not in FORMATS:
            raise MsakitError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.asr is None and (self.asr_model or self.asr_language):
            raise MsakitError("--asr-model and --asr-language are options of --asr whisper")


@dataclass
class AnalyzeResult:
    out: Path
    timelines: dict[str, Path] = field(default_factory=dict)  # video -> its output folder
    analyzed: int = 0
    cached: int = 0
    utterances: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # video, reason


# --------------------------------------------------------------------------- one process
_STATE: dict[str, Any] = {}


def _init_analyzer(checkpoint: str, loader: Callable[[str], Any], options: AnalyzeOptions
                   ) -> None:
    """Load the checkpoint, its extractors, the recogniser and the VAD for this process."""
    ckpt = loader(checkpoint)
    settings = _analysis_settings(checkpoint, ckpt, options)
    corpus._init_worker(settings, None)
    _STATE.update(
        ckpt=ckpt, checkpoint=checkpoint, settings=settings, options=options,
        tokenizer=Tokenizer(settings.text_encoder, settings.max_length),
        vad=VoiceActivity(options.rules) if options.segments == "vad" else None,
    )


def _analysis_settings(checkpoint: str, ckpt, options: AnalyzeOptions) -> ExtractorSettings:
    """The checkpoint's recorded extractor settings with the recogniser to use."""
    settings = _recorded_settings(checkpoint, ckpt)
    if settings.vision_features == "openface":
        raise MsakitError(
            f"{checkpoint}: trained on OpenFace 2.0 CSVs; msakit analyze describes faces itself "
            "(use a checkpoint trained on features msakit extract computed)"
        )
    if options.asr is not None:
        settings = replace(settings, asr=options.asr, asr_model=options.asr_model,
                           asr_language=options.asr_language)
    elif settings.asr is None:
        settings = replace(settings, asr="pocketsphinx")
    settings.check()
    if options.segments == "asr" and settings.asr != "whisper":
        raise MsakitError("--segments asr needs Whisper's segments: --asr whisper --asr-model "
                          "NAME|DIR")
    return settings


def analyze_video(video: str) -> tuple[list[Row], float]:
    """The timeline rows of ``video`` and its duration (s), with this process's analyzer."""
    media = corpus.decode_clip(video)
    duration = len(media.audio) / SAMPLE_RATE
    options: AnalyzeOptions = _STATE["options"]
    transcript = None
    if options.segments == "asr":
        transcript = corpus._WORKER["asr"](media.audio)
        # Whisper's segments often hold several sentences: its words, joined across pauses
        # shorter than the merge gap, make the utterances.
        spans = [(w.start, min(w.end, duration)) for s in transcript.segments
                 for w in (s.words or (s,))]
    else:
        spans = _STATE["vad"](media.audio)
    spans = shape_utterances(spans, options.rules)
    if not spans:
        raise ClipError(f"no utterance of at least {options.rules.min_seconds:g} s found "
                        f"({options.segments} in {duration:.1f} s of audio)")
    return [_utterance(media, video, span, transcript) for span in spans], duration


def _utterance(media: Media, video: str, span: tuple[float, float], transcript) -> Row:
    start, end = span
    part = _stretch(media, start, end)
    text = None if transcript is None else transcript.within(start, end)
    try:
        features = corpus.clip_features(part, f"{Path(video).stem}@{start:.2f}", video, text)
    except ClipError as exc:
        raise ClipError(f"utterance {start:.2f}-{end:.2f} s: {exc}") from None
    arrays = _clip_arrays(_STATE["checkpoint"], _STATE["ckpt"], video, features,
                          settings=_STATE["settings"], tokenizer=_STATE["tokenizer"])
    present = [f is not None and bool(np.any(f)) for f in part.frames]
    return Row(start=start, end=end, transcript=features.text,
               sentiment=_predict_one(_STATE["ckpt"], arrays),
               face_share=float(np.mean(present)) if present else float("nan"))


def _stretch(media: Media, start: float, end: float) -> Media:
    """The audio and the sampled frames of [start, end) seconds, times from ``start``."""
    kept = [(f, t) for f, t in zip(media.frames, media.times, strict=True) if start <= t < end]
    return Media(audio=media.audio[round(start * SAMPLE_RATE):round(end * SAMPLE_RATE)],
                 frames=[f for f, _ in kept], times=[t - start for _, t in kept])


def _task(video: str) -> tuple[str, list[Row] | None, float, str]:
    """Worker task: (video, rows or None, duration, failure reason)."""
    try:
        rows, duration = analyze_video(video)
    except ClipError as exc:
        return video, None, 0.0, str(exc)
    except Exception as exc:  # an extractor crashing on one video must not stop the others
        return video, None, 0.0, f"{type(exc).__name__}: {exc}"
    return video, rows, duration, ""


# --------------------------------------------------------------------------- the videos
def find_videos(inputs: list[str | os.PathLike[str]]) -> list[Path]:
    """The videos named, and those directly in the folders named (by suffix, sorted); one
    error line for a missing path or a folder without videos."""
    found: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not inside:
                raise MsakitError(f"{path}: no video in this folder "
                                  f"({', '.join(VIDEO_SUFFIXES)})")
            found += inside
        elif path.is_file():
            found.append(path)
        else:
            raise MsakitError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def folder_names(videos: list[Path]) -> dict[Path, str]:
    """Each video's output folder name: its stem, with a hash of its path when shared."""
    stems = [v.stem for v in videos]
    return {v: v.stem if stems.count(v.stem) == 1
            else f"{v.stem}-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}" for v in videos}


def analyze_videos(
    videos: list[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    loader: Callable[[str], Any],
    options: AnalyzeOptions | None = None,
    workers: int = 1,
    resume: bool = False,
    progress: bool = True,
) -> AnalyzeResult:
    """Analyze every video (see the module docstring) into the folder ``out``. Bad input raises
    :class:`MsakitError` before anything is written."""
    options = options or AnalyzeOptions()
    options.check()
    out = Path(out)
    paths = find_videos(videos)
    if workers < 1:
        raise MsakitError(f"--workers must be at least 1, got {workers}")
    if out.exists() and not out.is_dir():
        raise MsakitError(f"{out}: is a file; --out names the folder of the timelines")
    if not out.parent.resolve().is_dir():
        raise MsakitError(f"{out}: folder {out.parent} does not exist")
    _init_analyzer(str(checkpoint), loader, options)  # one error line before any work
    names = folder_names(paths)
    fingerprint = _fingerprint(Path(checkpoint), options)
    out.mkdir(exist_ok=True)
    result = AnalyzeResult(out=out)
    with RunLock(out):
        todo = []
        for video in paths:
            rows = _load_state(out / names[video], video, fingerprint) if resume else None
            if rows is None:
                todo.append(video)
            else:
                result.cached += 1
                result.utterances += len(rows)
                result.timelines[str(video)] = out / names[video]
        _analyze_all(todo, result, names=names, fingerprint=fingerprint, workers=workers,
                     progress=progress, run=(str(checkpoint), loader, options))
        _write_failures(out, result.failures)
    return result


def _analyze_all(todo: list[Path], result: AnalyzeResult, *, names: dict[Path, str],
                 fingerprint: str, workers: int, progress: bool, run: tuple) -> None:
    """Analyze ``todo``, writing each video's files as soon as it is done."""
    options: AnalyzeOptions = run[2]
    bar = _progress(len(todo) + result.cached, result.cached, progress)
    bar.set_description("analyze")
    failures = []
    try:
        for video, rows, duration, reason in _run(todo, workers, run):
            path = Path(video)
            if rows is None:
                failures.append((path, reason))
                bar.set_postfix(failed=len(failures), refresh=False)
            else:
                folder = result.out / names[path]
                _write_video(folder, path, rows, duration=duration, options=options,
                             fingerprint=fingerprint)
                result.timelines[video] = folder
                result.analyzed += 1
                result.utterances += len(rows)
            bar.update(1)
    finally:
        bar.close()
    order = {v: i for i, v in enumerate(todo)}
    result.failures = [(str(v), r) for v, r in sorted(failures, key=lambda x: order[x[0]])]


def _run(todo: list[Path], workers: int, run: tuple):
    """Yield ``_task``'s result for every video: in this process (already initialised) or in
    ``workers`` processes, each loading the analyzer once (as ``extract``'s workers)."""
    if workers == 1 or len(todo) <= 1:
        for video in todo:
            yield _task(str(video))
        return
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=_init_analyzer, initargs=run) as pool:
        try:
            # Workers start with SIGINT blocked (Ctrl-C is the parent's; see corpus._submit).
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                futures = {pool.submit(_task, str(v)): v for v in todo[:workers]}
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            futures.update({pool.submit(_task, str(v)): v for v in todo[workers:]})
            for future in as_completed(futures):
                try:
                    yield future.result()
                except BrokenProcessPool:
                    raise MsakitError(
                        f"a worker process died (video {futures[future]} or one beside it); the "
                        "videos done so far are kept: run the same command with --resume"
                    ) from None
        except BaseException:  # Ctrl-C, a failure: the videos being analyzed finish, no others
            pool.shutdown(wait=True, cancel_futures=True)
            raise


# --------------------------------------------------------------------------- the files
def _fingerprint(checkpoint: Path, options: AnalyzeOptions) -> str:
    """What decides a timeline: the checkpoint's bytes, the extractor settings in use (with
    the recogniser), the utterance options and the table format."""
    digest = hashlib.sha1()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    settings: ExtractorSettings = _STATE["settings"]
    what = {"checkpoint": digest.hexdigest(),
            "settings": settings.to_dict(_STATE["tokenizer"].vocab_size),
            "rules": options.rules.__dict__, "segments": options.segments,
            "format": options.format}
    return hashlib.sha1(encode_metadata(what).item().encode()).hexdigest()


def _video_identity(video: Path) -> dict[str, Any]:
    stat = video.stat()
    return {"path": str(video), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _load_state(folder: Path, video: Path, fingerprint: str) -> list[Row] | None:
    """The rows of an earlier run with the same fingerprint, video and files; else None."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        if state["fingerprint"] != fingerprint or state["video"] != _video_identity(video):
            return None
        if not (folder / f"timeline.{state['format']}").is_file() \
                or not (folder / "timeline.png").is_file():
            return None
        return [Row.from_dict(r) for r in state["rows"]]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _write_video(folder: Path, video: Path, rows: list[Row], *, duration: float,
                 options: AnalyzeOptions, fingerprint: str) -> None:
    """The video's table and picture, then the record that ``resume`` reads (last)."""
    folder.mkdir(exist_ok=True)
    (folder / STATE_FILE).unlink(missing_ok=True)  # no stale record while the files change
    write_table(folder, rows, options.format, str(video))
    spec = _STATE["ckpt"].config.spec
    draw(folder, rows, title=f"{video.name}: sentiment of {len(rows)} utterances",
         duration=duration, label_range=tuple(spec.label_range))
    state = {"fingerprint": fingerprint, "video": _video_identity(video),
             "format": options.format, "rows": [r.as_dict() for r in rows]}
    write_text_atomic(folder / STATE_FILE, json.dumps(state, ensure_ascii=False))


def _write_failures(out: Path, failures: list[tuple[str, str]]) -> None:
    """``OUT/failures.csv`` (video, reason) when videos failed; a stale one is removed."""
    path = out / FAILURES
    if not failures:
        path.unlink(missing_ok=True)
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video", "reason"])
    writer.writerows(failures)
    write_text_atomic(path, buffer.getvalue())
