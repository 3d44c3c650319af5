"""The repository's own documents: docstrings point into the repository, and every section of
docs/readings.md they name exists."""

from __future__ import annotations

import re
from pathlib import Path

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
    documents = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")]
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
