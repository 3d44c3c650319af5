"""The repository's own documents: docstrings point into the repository, and every section of
docs/readings.md they name exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READINGS = ROOT / "docs" / "readings.md"


def sources() -> list[Path]:
    return sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").glob("*.py")])


def test_no_reference_to_files_outside_the_repository():
    outside = ("DESIGN" + ".md", "papers" + "/", "/work" + "/", "shared" + "/")
    for path in sources():
        text = path.read_text(encoding="utf-8")
        for needle in outside:
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle}"


def test_named_sections_of_the_readings_exist():
    headings = [
        line[3:].strip()
        for line in READINGS.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    ]
    named = []
    for path in sources():
        text = " ".join(path.read_text(encoding="utf-8").split())  # undo line wrapping
        text = text.replace('"""', "")
        named += re.findall(r'readings\.md, "([^"]+)"', text)
    assert named, "no docstring names a section of docs/readings.md"
    for name in named:
        name = name.replace("# ", "").strip()
        assert any(h.startswith(name) for h in headings), (name, headings)


def test_repository_paths_named_in_the_documents_exist():
    """README.md, BENCHMARKS.md and docs/*.md name files of the repository (`src/...`,
    `tests/...`, `benchmarks/...`); a file moved or folded into another leaves no stale name."""
    documents = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").rglob("*.md")]
    pattern = re.compile(r"`((?:src|tests|benchmarks|docs)/[\w./{},-]+?)`")
    named, missing = 0, []
    for document in documents:
        for path in pattern.findall(document.read_text(encoding="utf-8")):
            if re.search(r"\b[A-Z]{2,}\b", path):  # a placeholder: models/NAME.py
                continue
            # `tests/test_mmsa_{tfn,lmf}.py` names several files
            head, _, rest = path.partition("{")
            inner, _, tail = rest.partition("}")
            for choice in inner.split(",") if rest else [""]:
                candidate = (head + choice + tail).rstrip("/.")
                named += 1
                if not (ROOT / candidate).exists():
                    missing.append(f"{document.name}: {candidate}")
    assert named > 20
    assert not missing, missing


README = ROOT / "README.md"


def _github_slug(heading: str) -> str:
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_the_readme_is_short_and_its_links_resolve():
    """The front door: at most 200 lines; every relative link names a file of the repository,
    every in-page link a heading of the README."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    headings = {_github_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) > 10
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        if path:
            assert (ROOT / path).exists(), link
        else:
            assert anchor in headings, link


def test_the_readme_lists_every_model():
    from msakit.models.registry import model_names

    listed = set(re.findall(r"^\| `(\w+)` \|", README.read_text(encoding="utf-8"), flags=re.M))
    assert listed == set(model_names())


def _tour() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- tour:", 1)[1].split("<!-- /tour -->", 1)[0]
    code = block.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in code.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_readme_tour_runs_as_written(tmp_path):
    """The README's tour, each line as written, in an empty folder, offline (HF_HUB_OFFLINE=1
    as everywhere in the suite)."""
    commands = _tour()
    assert [c.split()[1] for c in commands] == ["synth", "train", "evaluate", "predict", "report"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=1800)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    results = (tmp_path / "runs/clgsi/results.csv").read_text()
    assert results.count("\n") == 5  # the header, two seeds, mean, std
    assert (tmp_path / "runs/clgsi/predictions.csv").read_text().startswith("id,prediction,label")
    assert "± " in done.stdout


def test_the_documentation_site_builds_strict(tmp_path):
    """`make docs`: mkdocs in strict mode (a broken link, anchor or reference fails), with the
    generated command-line reference and model cards."""
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                           str(tmp_path / "site")], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from msakit.cli import build_parser
    from msakit.models.registry import model_names

    cli = (tmp_path / "site/reference/cli/index.html").read_text(encoding="utf-8")
    commands = build_parser()._subparsers._group_actions[0].choices
    for command in commands:
        assert f"msakit {command}" in cli, command
    for name in model_names():
        card = (tmp_path / f"site/models/{name}/index.html").read_text(encoding="utf-8")
        assert "Hyperparameters" in card and "--preset paper" in card, name
