"""Every corpus file through the command lines that read it (issue 19, item 8).

``COMMANDS[target]`` lists argument vectors; ``{F}`` is the corpus file (copied where the command
reads it), the other fields are valid companions of the :class:`targets.Workspace`. A command
passes when ``msakit.cli.main`` returns 0 or 2 and its stderr holds neither a traceback nor an
"unexpected" line (status 1 is msakit's "a bug in msakit").
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

TINY = [a for k in ("text_hidden", "audio_hidden", "vision_hidden", "text_out", "post_fusion_dim")
        for a in ("--set", f"{k}=2")]
TRAIN = ["--seeds", "1", "--epochs", "1", "--batch", "4", "--quiet", "--out", "{O}/run", *TINY]
# A seed folder (config.json + model.safetensors) read as a checkpoint: the folder, the run folder
# of one seed, and the weights file named directly.
SEED_FOLDER = (
    ["evaluate", "--checkpoint", "{O}/seedrun/seed-1", "--data", "{DATA}"],
    ["predict", "--checkpoint", "{O}/seedrun", "--data", "{DATA}", "--out", "{O}/predictions.csv"],
    ["evaluate", "--checkpoint", "{O}/seedrun/seed-1/model.safetensors", "--data", "{DATA}"],
)
FEATURES = (
    ["convert", "{F}", "--out", "{O}/converted.npz"],
    ["evaluate", "--checkpoint", "{CKPT}", "--data", "{F}"],
    ["predict", "--checkpoint", "{CKPT}", "--data", "{F}", "--out", "{O}/predictions.csv"],
    ["train", "--model", "tfn", "--dataset", "mosi", "--data", "{F}", *TRAIN],
)
COMMANDS: dict[str, tuple[list[str], ...]] = {
    "pickle": FEATURES,
    "npz": FEATURES,
    "extractor_record": (
        ["evaluate", "--checkpoint", "{CKPT}", "--data", "{F}"],
        ["merge", "{F}", "{PART2}", "--out", "{O}/merged.npz"],
    ),
    "failures_csv": (["merge", "{O}/part-1.npz", "{PART2}", "--out", "{O}/merged.npz"],),
    "config": (["train", "--config", "{F}", "--data", "{DATA}", "--out", "{O}/run", "--quiet"],),
    "run_config": (["report", "{RUN}"], ["report", "{RUN}", "--format", "latex"],
                   ["train", "--config", "{RUN}", "--data", "{DATA}", "--out", "{O}/run2",
                    "--quiet"]),
    "dataset_spec": (["train", "--model", "tfn", "--dataset", "custom", "--dataset-spec", "{F}",
                      "--data", "{DATA}", *TRAIN],),
    "results_csv": (["report", "{RUN}"], ["report", "{RUN}", "--format", "csv"]),
    "history": (["plot", "curves", "{RUN}", "--out", "{O}/curves.png"],),
    "clips_csv": (["extract", "{F}", "--out", "{O}/extracted.npz", "--quiet"],),
    "texts_csv": (["retokenize", "{DATA}", "--text-encoder", "minilm", "--texts", "{F}", "--out",
                   "{O}/retokenized.npz"],),
    "checkpoint": (
        ["evaluate", "--checkpoint", "{F}", "--data", "{DATA}"],
        ["predict", "--checkpoint", "{F}", "--data", "{DATA}", "--out", "{O}/predictions.csv"],
        ["plot", "scatter", "--checkpoint", "{F}", "--data", "{DATA}", "--out", "{O}/s.png"],
    ),
    "seed_config": SEED_FOLDER,
    "seed_weights": SEED_FOLDER,
}
"""openface_csv has no command here: extract reads an OpenFace CSV only for a clip whose video
decodes, and a bad CSV fails that clip (its row in the failures CSV); its target covers it."""

# Where the corpus file goes: a file the command reads by name inside a folder it is given.
PLACES = {"failures_csv": "part-1.failures.csv", "run_config": "run/config.yaml",
          "results_csv": "run/results.csv", "history": "run/seed-1/history.json",
          "seed_config": "seedrun/seed-1/config.json",
          "seed_weights": "seedrun/seed-1/model.safetensors"}


def argv(ws, target: str, name: str, k: int) -> list[str]:
    """Command ``k`` of ``target`` for the corpus file ``name``, its files laid out in a fresh
    scratch folder of ``ws``."""
    from targets import CORPUS

    folder = ws.scratch()
    shutil.copytree(ws.run, folder / "run")
    shutil.copytree(ws.seed_run, folder / "seedrun")
    shutil.copy(ws.part1, folder / "part-1.npz")
    place = folder / PLACES.get(target, name)
    place.write_bytes((CORPUS / target / name).read_bytes())
    fields = {"F": str(place), "O": str(folder), "CKPT": str(ws.checkpoint),
              "DATA": str(ws.data), "PART2": str(ws.part2), "RUN": str(folder / "run")}
    return [a.format(**fields) for a in COMMANDS[target][k]]


def check(ws, target: str, name: str, k: int) -> list[str]:
    """The failures of command ``k`` on the corpus file ``name`` (empty when it passes)."""
    from msakit import cli

    args = argv(ws, target, name, k)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    text = err.getvalue()
    shown = " ".join(a.replace(str(Path(ws.root)), "") for a in args)
    problems = []
    if code not in (0, 2):
        problems.append(f"exit status {code}")
    if "Traceback" in text or "unexpected" in text:
        problems.append("a traceback or an 'unexpected' line")
    if not problems:
        return []
    last = " ".join(text.strip().splitlines()[-1:])[:300]
    return [f"{target}: msakit {shown}: {', '.join(problems)}: {last}"]
