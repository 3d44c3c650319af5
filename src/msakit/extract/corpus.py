"""``msakit extract``: a CSV of clips -> one MMSA feature file (code-free ``.npz``).

``CLIPS.csv`` has a header with ``id`` and ``video`` (a path relative to the CSV) and optionally
``text``, ``label`` and ``split`` (train / valid / test). Clips are extracted by ``workers``
processes; each clip's features are cached in ``OUT.cache/`` as soon as they are computed, so
``resume`` skips clips already done (with the same settings). A clip that cannot be decoded is
listed in ``OUT.failures.csv`` (``id,video,reason``) and left out; the others go on.
``shard=(i, n)`` extracts every n-th row starting at row i (1-based) into a part that
:func:`msakit.extract.merge.merge` joins with the others.

The file holds, per split, MMSA's keys: ``raw_text``, ``text_bert`` (N, 3, max_length),
``audio`` (N, La, Da) and ``audio_lengths``, ``vision`` (N, Lv, Dv) and ``vision_lengths``,
``regression_labels`` (when the CSV has labels), ``id``, plus ``text_from_asr`` (N,) booleans
and ``asr_segments`` (N,) strings (the recogniser's segments and words with their times, as JSON
(:meth:`msakit.extract.asr.Transcript.to_json`); empty for a text the CSV gave);
and the extractor record (:mod:`msakit.extract.settings`). Sequences are padded at the end to
the longest clip (or cut to ``max_audio_frames`` / ``max_vision_frames``). With ``opencv`` and
``openface`` vision a frame without a face has no row (a clip without a face has vision length
0); ``mediapipe`` keeps every sampled frame, a frame without a face as zeros with
``face_present`` 0.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import math
import os
import queue
import re
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msakit.core.errors import MsakitError
from msakit.core.files import RunLock, write_atomic, write_text_atomic
from msakit.core.guard import ending_signal
from msakit.core.safety import Output, check_parent, check_plan, inputs
from msakit.data.identity import content_digest
from msakit.data.mmsa import SPLITS
from msakit.data.safe_format import save_npz
from msakit.data.tables import read_csv
from msakit.extract.asr import Transcript, make_recognizer
from msakit.extract.audio import AudioExtractor
from msakit.extract.media import ClipError, decode
from msakit.extract.settings import (
    METADATA_KEY,
    ExtractorSettings,
    encode_metadata,
    package_versions,
)
from msakit.extract.text import Tokenizer
from msakit.extract.vision import OpenFaceReader, face_source, stack_faces

DEFAULT_SPLIT_RATIO = (0.8, 0.1, 0.1)
_ENDING_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                   if hasattr(signal, name)}
"""The signals that end a command (:mod:`msakit.core.guard`): workers leave them to the parent."""


@dataclass
class Clip:
    row: int  # 0-based data row of the CSV
    id: str
    video: str  # absolute path
    text: str | None
    label: float | None
    split: str
    given: str = ""  # the video path as the CSV gives it


@dataclass
class ClipFeatures:
    audio: np.ndarray  # (frames, Da) float32
    vision: np.ndarray  # (faces, Dv) float32
    text: str
    from_asr: bool
    asr: str = ""  # the Transcript as JSON when from_asr (segments and words with times)


@dataclass
class ExtractResult:
    out: Path
    extracted: int  # clips computed in this run
    cached: int  # clips taken from the cache (--resume)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # id, video, reason
    counts: dict[str, int] = field(default_factory=dict)  # samples per split
    asr: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the CSV
def read_clips(
    csv_path: str | os.PathLike[str],
    *,
    split_ratio: tuple[float, float, float] | None = None,
    seed: int = 0,
    need_text: bool = True,
) -> list[Clip]:
    """The clips of ``csv_path`` with their splits; one ``MsakitError`` line for bad input."""
    path = Path(csv_path)
    col, rows = _read_table(path)
    base = path.resolve().parent
    seen: dict[str, int] = {}
    clips = [_parse_row(path, n, _cells(row, col), base=base, need_text=need_text, seen=seen)
             for n, row in enumerate(rows)]
    if not clips:
        raise MsakitError(f"{path}: no clips below the header")
    labelled = [c.label is not None for c in clips]
    if any(labelled) and not all(labelled):
        first = clips[labelled.index(False)]
        raise MsakitError(
            f"{path}: line {first.row + 2} (id '{first.id}'): no label, while other clips have "
            "one; label every clip or none"
        )
    if "split" in col:
        if split_ratio is not None:
            raise MsakitError(f"{path}: has a 'split' column; --split-ratio is for CSVs without")
    else:
        _assign_splits(clips, split_ratio or DEFAULT_SPLIT_RATIO, seed)
    return clips


def _read_table(path: Path) -> tuple[dict[str, int], list[list[str]]]:
    """The CSV's columns (``{name: index}``, names lower-cased) and its non-empty data rows."""
    rows = [r for r in read_csv(path, encoding="utf-8-sig") if any(cell.strip() for cell in r)]
    if not rows:
        raise MsakitError(f"{path}: empty file; expected a header id,video[,text][,label][,split]")
    header = [h.strip().lower() for h in rows[0]]
    for required in ("id", "video"):
        if required not in header:
            raise MsakitError(
                f"{path}: no '{required}' column in the header ({','.join(header)}); expected "
                "id,video[,text][,label][,split]"
            )
    return {name: i for i, name in enumerate(header)}, rows[1:]


def _cells(row: list[str], col: dict[str, int]) -> dict[str, str | None]:
    """The row's stripped cells by column name (None: no such column, or the row is short)."""
    return {name: row[i].strip() if i < len(row) else None for name, i in col.items()}


def _parse_row(
    path: Path, n: int, cells: dict[str, str | None], *, base: Path, need_text: bool,
    seen: dict[str, int],
) -> Clip:
    """Data row ``n`` (0-based; line ``n + 2`` of the file) as a Clip; ``seen`` maps the ids
    read so far to their lines."""
    line = n + 2
    clip_id, video = cells.get("id"), cells.get("video")
    if not clip_id:
        raise MsakitError(f"{path}: line {line}: empty id")
    if clip_id in seen:
        raise MsakitError(f"{path}: line {line}: id '{clip_id}' also on line {seen[clip_id]}")
    seen[clip_id] = line
    where = f"{path}: line {line} (id '{clip_id}')"
    if not video:
        raise MsakitError(f"{where}: empty video path")
    text = cells.get("text") or None
    if text is None and need_text:
        raise MsakitError(
            f"{where}: no text; give it in a 'text' column or transcribe it with --asr "
            "whisper|pocketsphinx"
        )
    label = _parse_label(cells.get("label"), where)
    split = (cells.get("split") or "").lower()
    if "split" in cells and split not in SPLITS:
        what = f"split {split!r} is not train, valid or test" if split else "no split"
        raise MsakitError(f"{where}: {what}")
    return Clip(n, clip_id, str(base / video), text, label, split, video)


def _parse_label(text: str | None, where: str) -> float | None:
    if not text:
        return None
    try:
        label = float(text)
    except ValueError:
        raise MsakitError(f"{where}: label {text!r} is not a number") from None
    if not math.isfinite(label):
        raise MsakitError(f"{where}: label is {text}")
    return label


def _assign_splits(clips: list[Clip], ratio: tuple[float, float, float], seed: int) -> None:
    if len(ratio) != 3 or min(ratio) < 0 or sum(ratio) <= 0:
        raise MsakitError(f"--split-ratio needs three non-negative numbers, got {ratio}")
    total = sum(ratio)
    n = len(clips)
    sizes = [round(n * r / total) for r in ratio[1:]]
    # Every split with a share gets at least one clip when there are enough clips.
    sizes = [max(s, 1) if r > 0 and n >= 3 else s for s, r in zip(sizes, ratio[1:], strict=True)]
    n_valid, n_test = sizes
    order = np.random.default_rng(seed).permutation(n)
    for rank, i in enumerate(order):
        clips[i].split = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else (
            "train"
        )


def split_rule(
    csv_path: str | os.PathLike[str], split_ratio: tuple[float, float, float] | None, seed: int
) -> str | dict[str, Any]:
    """How the clips got their split, as the extractor record keeps it: ``"column"`` (the CSV
    has a ``split`` column) or the ratio and seed they were drawn with."""
    columns, _ = _read_table(Path(csv_path))
    if "split" in columns:
        return "column"
    return {"ratio": [float(r) for r in split_ratio or DEFAULT_SPLIT_RATIO], "seed": int(seed)}


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise MsakitError(f"--shard must be i/n with 1 <= i <= n, e.g. 2/8; got {text!r}")
    return int(m.group(1)), int(m.group(2))


# --------------------------------------------------------------------------- one clip
_WORKER: dict[str, Any] = {}


def _init_worker(settings: ExtractorSettings, openface_dir: str | None) -> None:
    _WORKER["settings"] = settings
    _WORKER["audio"] = AudioExtractor(settings.audio_features)
    _WORKER["vision"] = face_source(settings.vision_features, openface_dir)
    if settings.asr is not None:
        _WORKER["asr"] = make_recognizer(settings.asr, settings.asr_model, settings.asr_language)


def _start_worker(parent: int, settings: ExtractorSettings, openface_dir: str | None) -> None:
    """A worker process's start: it dies with its parent (a parent ended by SIGKILL, which
    no cleanup path sees, leaves no worker behind), then loads the extractors."""
    _die_with_parent(parent)
    _init_worker(settings, openface_dir)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent ends (``PR_SET_PDEATHSIG``); elsewhere
    nothing. A parent already gone ends it at once."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            return
    if os.getppid() != parent:
        os._exit(1)


def extract_clip(clip_id: str, video: str, text: str | None) -> ClipFeatures:
    """Features of one clip with the worker's extractors (:func:`_init_worker` first)."""
    return clip_features(decode_clip(video), clip_id, video, text)


def decode_clip(video: str):
    """The clip decoded for the worker's extractors: each sampled frame already described by
    the face extractor (no frame is kept), no frames for OpenFace CSVs."""
    vision_source = _WORKER["vision"]
    openface = isinstance(vision_source, OpenFaceReader)
    settings: ExtractorSettings = _WORKER["settings"]
    return decode(video, settings.fps, need_frames=not openface,
                  on_frame=None if openface else vision_source, max_seconds=settings.max_seconds)


def clip_features(media, clip_id: str, video: str, text) -> ClipFeatures:
    """Features of decoded ``media`` (:func:`decode_clip`, or a stretch of it); ``text`` is the
    transcript, None to recognise the speech, or a :class:`~msakit.extract.asr.Transcript`
    already made."""
    settings: ExtractorSettings = _WORKER["settings"]
    vision_source = _WORKER["vision"]
    openface = isinstance(vision_source, OpenFaceReader)
    try:
        audio = _WORKER["audio"](media.audio)
    except Exception as exc:  # openSMILE / librosa on odd audio
        raise ClipError(f"audio features failed: {type(exc).__name__}: {exc}") from None
    if openface:
        vision = vision_source.read(vision_source.find(clip_id, video), settings.fps)
    else:
        vision = stack_faces(media.frames, vision_source.dim)
    if text is None:
        text = _WORKER["asr"](media.audio)
    if isinstance(text, Transcript):
        return ClipFeatures(audio=audio, vision=vision, text=text.text, from_asr=True,
                            asr=text.to_json())
    return ClipFeatures(audio=audio, vision=vision, text=text, from_asr=False)


def _cache_name(clip_id: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", clip_id)[:60]
    return f"{slug}-{hashlib.sha1(clip_id.encode()).hexdigest()[:10]}.npz"


def _save_cached(path: Path, fingerprint: str, clip: Clip, f: ClipFeatures) -> None:
    write_atomic(path, lambda out: np.savez(
        out, audio=f.audio, vision=f.vision, text=np.array(f.text),
        from_asr=np.array(f.from_asr), asr=np.array(f.asr), id=np.array(clip.id),
        video=np.array(clip.video),
        settings=np.array(fingerprint),
    ))


def _load_cached(path: Path, fingerprint: str, clip: Clip) -> ClipFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["settings"]) != fingerprint or str(z["id"]) != clip.id:
                return None
            if str(z["video"]) != clip.video:
                return None
            from_asr = bool(z["from_asr"])
            if clip.text is not None and (from_asr or str(z["text"]) != clip.text):
                return None  # the CSV's text changed since: extract again
            return ClipFeatures(audio=z["audio"], vision=z["vision"], text=str(z["text"]),
                                from_asr=from_asr, asr=str(z["asr"]))
    except (OSError, KeyError, ValueError):
        return None


def _work(clip: Clip, cache: str, fingerprint: str) -> tuple[Clip, ClipFeatures | None, str]:
    """Worker task: extract one clip and cache it; (clip, features or None, failure reason)."""
    try:
        features = extract_clip(clip.id, clip.video, clip.text)
    except ClipError as exc:
        return clip, None, str(exc)
    except Exception as exc:  # an extractor crashing on one clip must not stop the corpus
        return clip, None, f"{type(exc).__name__}: {exc}"
    _save_cached(Path(cache) / _cache_name(clip.id), fingerprint, clip, features)
    return clip, features, ""


# --------------------------------------------------------------------------- the corpus
def extract_corpus(
    csv_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ExtractorSettings | None = None,
    *,
    openface_dir: str | os.PathLike[str] | None = None,
    split_ratio: tuple[float, float, float] | None = None,
    seed: int = 0,
    workers: int = 1,
    resume: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ExtractResult:
    """Extract every clip of ``csv_path`` (or one shard of them) into ``out`` (see the module
    docstring). Bad input raises :class:`MsakitError` before anything is written: ``out`` and
    its failures CSV may be none of the inputs (the CSV, a listed video, an OpenFace CSV) and
    exist only with ``overwrite`` (:func:`msakit.core.safety.check_plan`)."""
    settings = settings or ExtractorSettings()
    out = Path(out)
    _check_request(csv_path, out, settings, openface_dir=openface_dir, workers=workers)
    clips = read_clips(csv_path, split_ratio=split_ratio, seed=seed,
                       need_text=settings.asr is None)
    check_plan(
        [*inputs("clips CSV", [csv_path]), *inputs("video", [c.video for c in clips]),
         *inputs("--vision-features openface", [openface_dir], "folder")],
        [Output("--out", out), Output("--out (its failures CSV)", failures_path(out)),
         Output("--out (its cache)", cache_path(out), "folder")], overwrite=overwrite,
    )
    if shard is not None:
        index, count = shard
        clips = [c for c in clips if c.row % count == index - 1]
    tokenizer = Tokenizer(settings.text_encoder, settings.max_length)
    # Check the extractors load here, once, before any worker starts (one clear error line).
    _init_worker(settings, None if openface_dir is None else str(openface_dir))
    record_settings = settings.to_dict(tokenizer.vocab_size)
    work = _Work(cache=cache_path(out),
                 fingerprint=encode_metadata(record_settings).item(), settings=settings,
                 openface_dir=openface_dir, workers=workers)
    with RunLock(work.cache):  # one writer per --out (two shards into one file lose one)
        done, failures, cached_count = _extract_clips(clips, work, resume=resume,
                                                      progress=progress)
        kept, listed = _write_corpus(out, csv_path, clips=clips, done=done, failures=failures,
                                     tokenizer=tokenizer, settings=settings, shard=shard,
                                     record_settings=record_settings,
                                     splits=split_rule(csv_path, split_ratio, seed))
    return ExtractResult(
        out=out, extracted=len(clips) - cached_count - len(failures), cached=cached_count,
        failures=listed, counts={s: sum(c.split == s for c in kept) for s in SPLITS},
        asr=[c.id for c in kept if done[c.id].from_asr],
    )


def _write_corpus(
    out: Path, csv_path: str | os.PathLike[str], *, clips: list[Clip],
    done: dict[str, ClipFeatures], failures: list[tuple[Clip, str]], tokenizer,
    settings: ExtractorSettings, shard: tuple[int, int] | None, record_settings: dict,
    splits: Any,
) -> tuple[list[Clip], list[tuple[str, str, str]]]:
    """Write the feature file and the failures CSV; (the clips kept, the failures listed)."""
    kept = _kept(csv_path, clips, done, failures, sharded=shard is not None)
    record = {
        "settings": record_settings,
        "versions": package_versions(),
        "source": Path(csv_path).name,
        "source_blake2b": content_digest(csv_path)[1],  # merge: the parts of one corpus
        "splits": splits,
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "rows": {s: [c.row for c in kept if c.split == s] for s in SPLITS},
        "asr": [c.id for c in kept if done[c.id].from_asr],
        "failures": len(failures),
    }
    write_features(out, _build_splits(kept, done, tokenizer, settings), record)
    listed = [(c.id, c.given or c.video, reason) for c, reason in failures]
    write_failures(out, listed)
    return kept, listed


def _check_request(
    csv_path: str | os.PathLike[str], out: Path, settings: ExtractorSettings, *,
    openface_dir: str | os.PathLike[str] | None, workers: int,
) -> None:
    """The settings, the OpenFace folder, the worker count and the output path, checked."""
    settings.check()
    if settings.vision_features == "openface":
        if openface_dir is None or not Path(openface_dir).is_dir():
            raise MsakitError(f"--vision-features openface: folder {openface_dir} does not exist")
    if workers < 1:
        raise MsakitError(f"--workers must be at least 1, got {workers}")
    if out.resolve() == Path(csv_path).resolve():
        raise MsakitError(f"{out}: the output would overwrite the clips CSV")
    if out.exists() and out.is_dir():
        raise MsakitError(f"{out}: is a folder; --out names the .npz file to write")
    check_parent("--out", out)  # its missing folders are made when it is written


@dataclass(frozen=True)
class _Work:
    """How the clips are extracted: the per-clip cache folder, the settings' fingerprint (a
    cached clip of other settings is extracted again), the extractors and the processes."""

    cache: Path
    fingerprint: str
    settings: ExtractorSettings
    openface_dir: str | os.PathLike[str] | None
    workers: int


def _extract_clips(
    clips: list[Clip], work: _Work, *, resume: bool, progress: bool
) -> tuple[dict[str, ClipFeatures], list[tuple[Clip, str]], int]:
    """Features of every clip that could be extracted (taken from the cache with ``resume``),
    the failures (clip, reason) in CSV order, and how many clips came from the cache."""
    work.cache.mkdir(parents=True, exist_ok=True)
    done: dict[str, ClipFeatures] = {}
    if resume:
        for clip in clips:
            cached = _load_cached(work.cache / _cache_name(clip.id), work.fingerprint, clip)
            if cached is not None:
                done[clip.id] = cached
    todo = [c for c in clips if c.id not in done]
    cached_count = len(done)
    failures: list[tuple[Clip, str]] = []
    bar = _progress(len(clips), cached_count, progress)
    # closing(): an interruption between two clips stops the workers now, not when the
    # generator is collected
    try:
        with closing(_run(todo, work)) as results:
            for clip, features, reason in results:
                if features is None:
                    failures.append((clip, reason))
                    bar.set_postfix(failed=len(failures), refresh=False)
                else:
                    done[clip.id] = features
                bar.update(1)
    finally:
        bar.close()
    failures.sort(key=lambda x: x[0].row)
    return done, failures, cached_count


def _kept(
    csv_path: str | os.PathLike[str], clips: list[Clip], done: dict[str, ClipFeatures],
    failures: list[tuple[Clip, str]], *, sharded: bool,
) -> list[Clip]:
    """The clips extracted; an error when none was, or (unsharded) when a split is empty."""
    kept = [c for c in clips if c.id in done]
    if not kept:
        first = f" (first: {failures[0][0].id}: {failures[0][1]})" if failures else ""
        raise MsakitError(f"{csv_path}: no clip could be extracted{first}")
    if not sharded:
        empty = [s for s in SPLITS if not any(c.split == s for c in kept)]
        if empty:
            raise MsakitError(
                f"{csv_path}: split '{empty[0]}' has no extracted clip; msakit and MMSA need "
                "train, valid and test (use the 'split' column or --split-ratio)"
            )
    return kept


def _build_splits(
    kept: list[Clip], done: dict[str, ClipFeatures], tokenizer, settings: ExtractorSettings
) -> dict[str, dict[str, np.ndarray]]:
    """Every split's MMSA arrays, all padded to the same lengths (the longest clip of the
    corpus, or the cap)."""
    labelled = all(c.label is not None for c in kept)
    pad_to = (
        _padded_length([done[c.id].audio for c in kept], settings.max_audio_frames),
        _padded_length([done[c.id].vision for c in kept], settings.max_vision_frames),
    )
    return {
        s: build_split([c for c in kept if c.split == s], done, tokenizer, settings=settings,
                       labelled=labelled, pad_to=pad_to)
        for s in SPLITS
    }


def _run(todo: list[Clip], work: _Work):
    """Yield (clip, features or None, failure reason) for every clip of ``todo``."""
    if work.workers == 1 or len(todo) <= 1:
        for clip in todo:
            yield _work(clip, str(work.cache), work.fingerprint)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited threads or library state
    initargs = (os.getpid(), work.settings,
                None if work.openface_dir is None else str(work.openface_dir))
    with ProcessPoolExecutor(max_workers=work.workers, mp_context=context,
                             initializer=_start_worker, initargs=initargs) as pool:
        try:
            yield from _results(pool, todo, work)
        except BaseException:
            _stop_workers(pool, work.cache,
                          graceful=ending_signal() in (None, signal.SIGINT))
            raise


def _stop_workers(pool: ProcessPoolExecutor, cache: Path, *, graceful: bool) -> None:
    """The way out of an interrupted or failed pool. ``graceful`` (Ctrl-C, a failure): the
    clips being extracted finish, no others start. Otherwise (SIGTERM, SIGHUP, or a second
    signal while waiting), the workers are killed (they keep the ending signals blocked, see
    :func:`_start_workers`) and the temporary files of the cache writes they were in are removed."""
    try:
        if graceful:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if not graceful or any(p.is_alive() for p in _workers(pool)):
            for process in _workers(pool):
                process.kill()
            for process in _workers(pool):
                process.join()
            pool.shutdown(wait=True, cancel_futures=True)
            for tmp in cache.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _workers(pool: ProcessPoolExecutor) -> list:
    """The pool's worker processes (``concurrent.futures`` keeps them in ``_processes``)."""
    return list((getattr(pool, "_processes", None) or {}).values())


IN_FLIGHT_PER_WORKER = 2
"""Clips submitted to the pool and not yet returned, per worker process."""


def _results(pool: ProcessPoolExecutor, todo: list[Clip], work: _Work):
    """Yield every clip's ``_work`` result as the workers return them. A few clips per worker
    are in flight at a time, and each finished future reaches this thread through a queue, not
    ``as_completed``: that one holds the lock of every pending future while it scans them (with
    a corpus of 100,000 clips, most of the time), and a signal landing then left a lock held
    that the pool's shutdown waited on for ever."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    in_flight: dict[Any, Clip] = {}
    waiting = iter(todo)

    def submit(clip: Clip) -> None:
        future = pool.submit(_work, clip, str(work.cache), work.fingerprint)
        in_flight[future] = clip
        future.add_done_callback(finished.put)

    _start_workers(lambda: list(map(submit, itertools.islice(waiting, work.workers))))
    for clip in itertools.islice(waiting, (IN_FLIGHT_PER_WORKER - 1) * work.workers):
        submit(clip)
    while in_flight:
        future = finished.get()
        clip = in_flight.pop(future)
        try:
            result = future.result()
        except BrokenProcessPool:
            raise MsakitError(
                f"a worker process died (clip '{clip.id}' or one beside it); the clips done so "
                "far are cached: run the same command with --resume"
            ) from None
        for following in itertools.islice(waiting, 1):
            submit(following)
        yield result


def _start_workers(submit_first: Callable[[], object]) -> None:
    """Run ``submit_first``, whose submissions start the workers, with Ctrl-C, SIGTERM and
    SIGHUP blocked: the workers keep them blocked for life, so that one sent to the whole
    process group (a terminal does that) never interrupts a worker mid-import with a traceback;
    one arriving meanwhile reaches the parent as soon as they are started. The parent stops the
    workers on its way out (:func:`_stop_workers`), and each worker dies with its parent
    (:func:`_die_with_parent`)."""
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask"):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ENDING_SIGNALS)
        try:
            submit_first()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    else:
        submit_first()


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="clip", desc="extract", dynamic_ncols=True,
                disable=not enabled or not sys.stderr.isatty(), file=sys.stderr)


def build_split(clips: list[Clip], features: dict[str, ClipFeatures], tokenizer, *,
                settings: ExtractorSettings, labelled: bool,
                pad_to: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """MMSA arrays of ``clips`` (in the given order); sequences padded at the end."""
    feats = [features[c.id] for c in clips]
    audio, audio_lengths = _pad([f.audio for f in feats], settings.audio_dim,
                                settings.max_audio_frames, pad_to and pad_to[0])
    vision, vision_lengths = _pad([f.vision for f in feats], settings.vision_dim,
                                  settings.max_vision_frames, pad_to and pad_to[1])
    texts = [f.text for f in feats]
    out = {
        "id": np.array([c.id for c in clips], dtype=str),
        "raw_text": np.array(texts, dtype=str),
        "text_bert": (tokenizer.encode(texts) if texts
                      else np.zeros((0, 3, settings.max_length), np.int64)),
        "audio": audio,
        "audio_lengths": audio_lengths,
        "vision": vision,
        "vision_lengths": vision_lengths,
        "text_from_asr": np.array([f.from_asr for f in feats], dtype=bool),
        "asr_segments": np.array([f.asr for f in feats], dtype=str),
    }
    if labelled:
        out["regression_labels"] = np.array([c.label for c in clips], dtype=np.float32)
    return out


def _padded_length(seqs: list[np.ndarray], cap: int | None) -> int:
    longest = max((len(x) for x in seqs), default=0)
    return max(1, longest if cap is None else min(longest, cap))


def _pad(seqs: list[np.ndarray], dim: int, cap: int | None, length: int | None):
    lengths = np.array([len(s) if cap is None else min(len(s), cap) for s in seqs], np.int64)
    if length is None:
        length = max(1, int(lengths.max(initial=0)))
    out = np.zeros((len(seqs), length, dim), dtype=np.float32)
    for i, (s, n) in enumerate(zip(seqs, lengths, strict=True)):
        out[i, :n] = s[:n]
    return out, lengths


def write_features(out: Path, content: dict[str, dict[str, np.ndarray]],
                   record: dict[str, Any]) -> None:
    save_npz(content, out, extra={METADATA_KEY: encode_metadata(record)})


def failures_path(out: Path) -> Path:
    return out.with_name(out.stem + ".failures.csv")


def cache_path(out: Path) -> Path:
    """The folder of per-clip features (``--resume`` reads it)."""
    return out.with_name(out.name + ".cache")


def write_failures(out: Path, failures: list[tuple[str, str, str]]) -> None:
    """``OUT.failures.csv`` (id, video, reason) when clips failed; a stale one is removed."""
    path = failures_path(out)
    if not failures:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "video", "reason"])
    writer.writerows(failures)
    write_text_atomic(path, buf.getvalue())

