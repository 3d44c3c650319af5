"""Write the generated seeds of the fuzz corpus (``tests/fuzz/corpus/<target>/seed-*``).

Every seed is a small, valid file of the kind its target reads, written by msakit itself (a
synthetic MMSA file cut to a few samples and frames, a TFN run trained one epoch on it and the
files that run wrote, an extractor record, ...), so that mutations start from the structure a
real file has. Run it again after a change to a file format::

    PYTHONPATH=src .venv/bin/python tests/fuzz/make_seeds.py

It rewrites only ``seed-*``, ``repro-*`` (fixed failures) and ``bug-*`` (the reproducers of
``targets.KNOWN_FAILURES``; none while that list is empty) files; other files of the corpus
(minimised reproducers kept as the fuzzer found them: ``crash-*``, ...) stay.
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"
SIZES = (4, 3, 3)
FRAMES = {"text": 8, "text_dim": 6, "audio": 6, "vision": 5}


def tiny_content(like: str = "mosi", seed: int = 0, sizes: tuple[int, int, int] = SIZES) -> dict:
    """A synthetic MMSA file's content (with precomputed text features) cut to a few kilobytes."""
    from msakit.data.synthetic import make_synthetic

    data = make_synthetic(like, *sizes, seed=seed, text_features=True)
    for split in data.values():
        split["text_bert"] = split["text_bert"][:, :, :FRAMES["text"]].copy()
        split["text"] = split["text"][:, :FRAMES["text"], :FRAMES["text_dim"]].copy()
        for m in ("audio", "vision"):
            split[m] = split[m][:, :FRAMES[m]].copy()
            split[f"{m}_lengths"] = [min(int(x), FRAMES[m]) for x in split[f"{m}_lengths"]]
    return data


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def _put(target: str, name: str, data: bytes, prefix: str = "seed-") -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}{name}").write_bytes(data)


def feature_seeds(work: Path) -> Path:
    """pickle/ and npz/ seeds; returns the tiny npz the other seeds are made from."""
    from msakit.data.mmsa import convert_to_npz

    content = tiny_content()
    for protocol in (0, 2, 4, 5):
        _put("pickle", f"mosi-p{protocol}.pkl", pickle.dumps(content, protocol=protocol))
    predict = {"test": {k: v for k, v in content["test"].items() if k != "regression_labels"}}
    _put("pickle", "predict-only-test.pkl", pickle.dumps(predict, protocol=4))
    sims = tiny_content("sims", sizes=(2, 1, 1))
    for split in sims.values():
        split["vision"] = split["vision"][:, :1].copy()
        split["vision_lengths"] = [min(x, 1) for x in split["vision_lengths"]]
    _put("pickle", "sims-p4.pkl", pickle.dumps(sims, protocol=4))
    (work / "tiny.pkl").write_bytes(pickle.dumps(content, protocol=4))
    npz = work / "tiny.npz"
    convert_to_npz(work / "tiny.pkl", npz)
    _put("npz", "mosi.npz", npz.read_bytes())
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _put("npz", "mosi-compressed.npz", buf.getvalue())
    return npz


def extractor_seeds(npz: Path, work: Path) -> None:
    """extractor_record/ (an extracted file) and failures_csv/ (a part's failures CSV)."""
    from msakit.extract.corpus import write_features
    from msakit.extract.settings import ExtractorSettings, package_versions

    with np.load(npz, allow_pickle=False) as z:
        content: dict = {}
        for name in z.files:
            split, sep, key = name.partition("/")
            if sep:
                content.setdefault(split, {})[key] = z[name]
    row = iter(range(100))
    record = {
        "settings": ExtractorSettings().to_dict(30522),
        "versions": {k: v for k, v in package_versions().items() if k == "msakit"},
        "source": "clips.csv", "shard": None,
        "rows": {s: [next(row) for _ in content[s]["id"]] for s in ("train", "valid", "test")},
        "asr": [], "failures": 1,
    }
    write_features(work / "extracted.npz", content, record)
    _put("extractor_record", "extracted.npz", (work / "extracted.npz").read_bytes())
    _put("failures_csv", "failures.csv", _csv([["id", "video", "reason"],
                                               ["c9", "clips/c9.mp4", "no audio stream"]]))


def run_seeds(work: Path, npz: Path) -> None:
    """config/, run_config/, results_csv/, history/ and checkpoint/: the files of a real run
    (TFN, a few units wide, two epochs on the tiny file)."""
    from msakit.cli import main

    run = work / "run"
    code = main(["train", "--model", "tfn", "--dataset", "mosi", "--data", str(npz),
                 "--seeds", "1", "--epochs", "2", "--batch", "4", "--out", str(run), "--quiet",
                 *[a for k in ("text_hidden", "audio_hidden", "vision_hidden", "text_out",
                               "post_fusion_dim") for a in ("--set", f"{k}=2")]])
    assert code == 0, code
    config = (run / "config.yaml").read_bytes()
    for target in ("config", "run_config"):
        _put(target, "config.yaml", config)
    _put("results_csv", "results.csv", (run / "results.csv").read_bytes())
    _put("history", "history.json", (run / "seed-1" / "history.json").read_bytes())
    # the seed folder as train writes it (the seed_config and seed_weights targets)
    _put("seed_config", "config.json", (run / "seed-1" / "config.json").read_bytes())
    _put("seed_weights", "model.safetensors", (run / "seed-1" / "model.safetensors").read_bytes())
    import torch

    from msakit.training.pretrained import read_pretrained

    # the checkpoint target reads torch files (best.pt, as earlier msakit versions wrote them)
    state = read_pretrained(run / "seed-1")
    torch.save(state, run / "seed-1" / "best.pt")
    _put("checkpoint", "tfn-best.pt", (run / "seed-1" / "best.pt").read_bytes())
    # Fixed: a config value of the wrong type (a tensor reached RunConfig's checks; a float
    # batch_size passed load_checkpoint and broke evaluate's batching).
    state["config"]["epochs"] = torch.zeros(0)
    buf = io.BytesIO()
    torch.save(state, buf)
    _put("checkpoint", "config-value-empty-tensor.pt", buf.getvalue(), "repro-")
    state["config"]["epochs"], state["config"]["batch_size"] = 2, 2.5
    buf = io.BytesIO()
    torch.save(state, buf)
    _put("checkpoint", "config-batch-size-float.pt", buf.getvalue(), "repro-")
    checkpoint_width_reproducer(run / "seed-1" / "best.pt")


def checkpoint_width_reproducer(best: Path) -> None:
    """Found by a campaign: a width of 20 million in a checkpoint's model config built a
    2 GB model before any check (fixed: the metadata is bounded before anything is built)."""
    import torch

    state = torch.load(best, weights_only=True)
    state["config"]["model"]["post_fusion_dim"] = 20_000_000
    buf = io.BytesIO()
    torch.save(state, buf)
    _put("checkpoint", "model-width-huge.pt", buf.getvalue(), "repro-")


def text_seeds(npz: Path) -> None:
    """dataset_spec/, clips_csv/, texts_csv/ (the ids of the tiny file) and openface_csv/."""
    _put("dataset_spec", "spec.yaml", b"title: My corpus\nlabel_range: [-3, 3]\n"
         b"metric_family: mosi\nlanguage: en\nlabel_scale: 3\n")
    _put("dataset_spec", "minimal.yaml", b"label_range: [-1, 1]\n")
    _put("clips_csv", "clips.csv", _csv([
        ["id", "video", "text", "label", "split"],
        ["c1", "clips/c1.mp4", "a fine film", "1.5", "train"],
        ["c2", "clips/c2.mp4", "dull, long", "-2", "valid"],
        ["c3", "/abs/c3.mp4", "\"quoted\" text", "0", "test"],
    ]))
    _put("clips_csv", "clips-no-split.csv", _csv([["id", "video"], ["a", "a.mp4"], ["b", "b.mp4"]]))
    with np.load(npz, allow_pickle=False) as z:
        ids = [str(i) for s in ("train", "valid", "test") for i in z[f"{s}/id"]]
    _put("texts_csv", "texts.csv", _csv([["id", "text"], *[[i, f"text of {i}"] for i in ids]]))
    from msakit.extract.vision import OPENFACE_COLUMNS

    header = ["frame", "face_id", "timestamp", "success", *OPENFACE_COLUMNS]
    rows = [[str(f + 1), "0", f"{f / 30:.3f}", str(int(f != 2)),
             *[f"{(f * 7 + c) % 13 / 10:.2f}" for c in range(len(OPENFACE_COLUMNS))]]
            for f in range(5)]
    _put("openface_csv", "openface.csv", _csv([header, *rows]))


def reproducers() -> None:
    """``repro-*``: small files that broke a reader's contract, each fixed since (the replay
    keeps them fixed). Minimised crash reproducers found by the fuzzer are kept as found."""
    for target, header in (("clips_csv", "id,video"), ("failures_csv", "id,video,reason"),
                           ("texts_csv", "id,text"), ("results_csv", "seed,MAE"),
                           ("openface_csv", "frame,timestamp")):
        _put(target, "not-utf8.csv", f"{header}\n".encode() + b"a,\xff\xfe\x81\n", "repro-")
    # One field over the csv module's limit (131072 characters); every CSV reader shares
    # read_csv, one file is enough.
    _put("clips_csv", "field-too-large.csv", ("id,video\n" + "x" * 131_073).encode(), "repro-")
    from msakit.extract.vision import OPENFACE_COLUMNS

    columns = ["timestamp", "success", *OPENFACE_COLUMNS]
    _put("openface_csv", "timestamp-infinite.csv", _csv(
        [columns, ["inf", "1", *["0"] * len(OPENFACE_COLUMNS)]]), "repro-")
    _put("results_csv", "no-seed-column.csv", b"run,Has0_acc_2,Has0_F1_score,Non0_acc_2,"
         b"Non0_F1_score,Mult_acc_5,Mult_acc_7,MAE,Corr\n1,0.6,0.5,0.6,0.5,0.1,0.1,1.6,0.6\n",
         "repro-")
    _put("run_config", "model-is-a-list.yaml", b"model_name: tfn\ndataset: mosi\nmodel: [1]\n",
         "repro-")
    _put("run_config", "model-name-is-a-list.yaml", b"model_name: [tfn]\ndataset: mosi\n",
         "repro-")
    for name, text in {
        "nested-deeply.json": "[" * 5_000,
        "record-not-a-mapping.json": "[1, 2]",
        "epoch-is-text.json": '[{"epoch": "one", "valid_MAE": 0.5}]',
        "value-is-text.json": '[{"epoch": 1, "valid_MAE": "low"}]',
        "value-too-large.json": '[{"epoch": 1, "valid_MAE": 1' + "0" * 400 + "}]",
        "values-null.json": '[{"epoch": 1, "valid_MAE": null, "valid_Corr": null}, '
                            '{"epoch": 2, "valid_MAE": 0.9, "valid_Corr": null}]',
    }.items():
        _put("history", name, text.encode(), "repro-")
    npz_reproducers()
    extractor_reproducers()
    yaml_reproducers()
    seed_folder_reproducers()


def extractor_reproducers() -> None:
    """extractor_record/: an extracted file whose record member is corrupt (its stored bytes
    fail the CRC: BadZipFile; compressed, they do not inflate: zlib.error)."""
    import zipfile

    from msakit.extract.settings import METADATA_KEY

    seed = (CORPUS / "extractor_record" / "seed-extracted.npz").read_bytes()
    member = f"{METADATA_KEY}.npy"
    for name, compression in (("record-crc-mismatch", zipfile.ZIP_STORED),
                              ("record-not-inflating", zipfile.ZIP_DEFLATED)):
        buf = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(seed)) as src, zipfile.ZipFile(buf, "w") as out:
            for info in src.infolist():
                out.writestr(info.filename, src.read(info),
                             compression if info.filename == member else zipfile.ZIP_STORED)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            info = z.getinfo(member)
        data = bytearray(buf.getvalue())
        start = info.header_offset + 30 + len(member.encode())  # no extra field
        for i in range(start + 140, start + 160):  # inside the record's JSON (or its deflate)
            data[i] ^= 0x5A
        _put("extractor_record", f"{name}.npz", bytes(data), "repro-")


def npz_reproducers() -> None:
    """npz/: zip and .npy headers that the memory-mapping reader once parsed outside its error
    handling (TokenError, RecursionError, NotImplementedError)."""
    import struct
    import zipfile

    for name, header in (
        ("npy-header-unparsable", b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, (, }"),
        ("npy-header-nested-deeply",
         b"{'descr': '<f4', 'fortran_order': False, 'shape': (" + b"-" * 3000 + b"1,), }"),
    ):
        header += b" " * ((64 - (len(header) + 11) % 64) % 64) + b"\n"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("train/audio.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header))
                       + header + b"\x00" * 4)
        _put("npz", f"{name}.npz", buf.getvalue(), "repro-")
    data = bytearray((CORPUS / "npz" / "seed-mosi.npz").read_bytes())
    data[data.index(b"PK\x01\x02") + 6] = 99  # "version needed to extract": 9.9
    _put("npz", "zip-version-unknown.npz", bytes(data), "repro-")


def seed_folder_reproducers() -> None:
    """Found by the seed_weights target: the header's ``valid`` metrics as JSON nested deeply
    (json's RecursionError escaped the metadata check), or as JSON that is not a mapping of
    numbers (fixed: the metadata is checked in one place, ``pretrained._metadata``)."""
    import json
    import struct

    data = (CORPUS / "seed_weights" / "seed-model.safetensors").read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + size]), data[8 + size:]
    for name, valid in (("valid-nested-deeply", "[" * 5000), ("valid-not-metrics", '{"MAE": []}'),
                        ("valid-a-list", "[1, 2]")):
        header["__metadata__"]["valid"] = valid
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        _put("seed_weights", f"{name}.safetensors", struct.pack("<Q", len(text)) + text + body,
             "repro-")
    # Found by the seed_weights target: a float32 weight's bytes declared as float8 (safetensors
    # accepts it; the finiteness check then failed with NotImplementedError). Fixed: a weight of
    # a type no model has is refused where checkpoints are read, for both formats.
    import torch
    from safetensors.torch import load, save

    tensors = load(data)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].to(torch.float8_e4m3fn)
    meta = json.loads(data[8:8 + size])["__metadata__"]
    _put("seed_weights", "weight-float8.safetensors", save(tensors, metadata=meta), "repro-")
    state = torch.load(CORPUS / "checkpoint" / "seed-tfn-best.pt", weights_only=True)
    state["model"][name] = state["model"][name].to(torch.float8_e4m3fn)
    buf = io.BytesIO()
    torch.save(state, buf)
    _put("checkpoint", "weight-float8.pt", buf.getvalue(), "repro-")


def yaml_reproducers() -> None:
    """dataset_spec/ and config/: YAML on which PyYAML raised other than YAMLError (deep
    nesting: RecursionError; '!!float' of a non-number: ValueError), fixed by the one safe
    YAML reader."""
    _put("dataset_spec", "float-tag-not-a-number.yaml", b"label_range: [!!float 'nan 1', 1]\n",
         "repro-")
    _put("dataset_spec", "nested-deeply.yaml", b"label_range: " + b"[" * 5000 + b"\n", "repro-")
    _put("config", "nested-deeply.yaml", b"model_name: " + b"[" * 5000 + b"\n", "repro-")


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for old in [*CORPUS.glob("*/seed-*"), *CORPUS.glob("*/repro-*"), *CORPUS.glob("*/bug-*")]:
        old.unlink()
    work = Path(tempfile.mkdtemp(prefix="msakit-seeds-"))
    os.environ["MSAKIT_CACHE_DIR"] = str(work / "cache")
    try:
        npz = feature_seeds(work)
        extractor_seeds(npz, work)
        run_seeds(work, npz)
        text_seeds(npz)
        reproducers()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for folder in sorted(CORPUS.iterdir()):
        files = list(folder.iterdir())
        print(f"{folder.name}: {len(files)} files, {sum(f.stat().st_size for f in files)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
