"""The shape of the code (issue 12), checked on the source tree with ``ast``:

* no function in ``src/msakit`` is longer than 60 lines (from its ``def`` line to its last
  line, decorators not counted);
* a function with more than four parameters (``self``/``cls``, ``*args`` and ``**kwargs`` not
  counted) takes at most four of them by position, the rest keyword-only
  (``def f(a, b, *, c, d, e)``): no call passes five values by position;
* the layers import downwards only: commands/cli/api > training > models, extract >
  losses/encoders > data > evaluation > config > core (see docs/architecture.md, "Layers"). The
  command-level modules (commands/, cli, api, tune, reporting, bench, importing, inference,
  rerun, tracking) sit on top; run orchestration (training/runs.py) and checkpoint reading
  (training/checkpoints.py) are training, below them, and import none of them;
* no circle among the module-level imports of msakit's modules;
* a function-body import of msakit's own modules says why it is not at the top: a
  ``# lazy: REASON`` comment on its line or in the comment above its block of imports (an optional
  dependency, the command line's start-up; never a circle).

``PENDING``, ``LAYER_PENDING`` and ``LAZY_PENDING`` list what still breaks a rule in files other
engineers are reworking; they must shrink to nothing (a listed function that now follows the rules
fails :func:`test_pending_lists_only_current_offenders` until its entry is deleted).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "msakit"
MAX_LINES = 60
MAX_POSITIONAL = 4

PENDING: set[str] = set()
"""``path::qualified name`` of the functions that still break a shape rule."""

LAYER_PENDING: set[tuple[str, str]] = set()
"""(module file, imported module) pairs that still import upwards."""

LAZY_PENDING: set[str] = set()
"""``path::function`` of the function-body imports without a reason, in files under rework."""

LAYERS = {"core": 0, "config": 1, "evaluation": 2, "data": 3, "losses": 4, "encoders": 4,
          "models": 5, "extract": 5, "training": 6}
TOP = ("cli", "commands", "api", "tune", "reporting", "bench", "importing", "inference", "rerun",
       "tracking")
"""Command-level modules: the top layer."""


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef]]:
    """(qualified name, node) of every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def shape_problems(node: ast.FunctionDef) -> list[str]:
    """What ``node`` breaks of the two shape rules (empty when it follows them)."""
    problems = []
    lines = node.end_lineno - node.lineno + 1
    if lines > MAX_LINES:
        problems.append(f"{lines} lines (at most {MAX_LINES})")
    positional = [a.arg for a in [*node.args.posonlyargs, *node.args.args]]
    if positional and positional[0] in ("self", "cls"):
        positional = positional[1:]
    total = len(positional) + len(node.args.kwonlyargs)
    if total > MAX_POSITIONAL and len(positional) > MAX_POSITIONAL:
        problems.append(f"{total} parameters, {len(positional)} positional (at most "
                        f"{MAX_POSITIONAL}; make the others keyword-only)")
    return problems


def _offenders() -> dict[str, list[str]]:
    found = {}
    for path in _sources():
        rel = path.relative_to(SRC).as_posix()
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            problems = shape_problems(node)
            if problems:
                found[f"{rel}::{name}"] = problems
    return found


def test_functions_are_short_and_take_many_arguments_by_keyword():
    offenders = {k: v for k, v in _offenders().items() if k not in PENDING}
    assert not offenders, "\n".join(f"{k}: {'; '.join(v)}" for k, v in offenders.items())


def test_pending_lists_only_current_offenders():
    stale = PENDING - set(_offenders())
    assert not stale, f"these follow the rules now; delete them from PENDING: {sorted(stale)}"


def _layer(module: str) -> str | None:
    """The layer of a dotted ``msakit...`` module name (None for other packages)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "msakit" and len(parts) > 1 else None


def _rank(layer: str | None) -> int | None:
    if layer in LAYERS:
        return LAYERS[layer]
    return len(LAYERS) if layer in TOP else None


def _imports(path: Path) -> Iterator[str]:
    """Every msakit module ``path`` imports, at the top or inside functions."""
    package = ["msakit", *path.relative_to(SRC).parent.parts]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            # from . import x, from msakit import api: x may be a module of the package
            yield from (f"{module}.{alias.name}" for alias in node.names)


def _upward_imports() -> set[tuple[str, str]]:
    found = set()
    for path in _sources():
        rel = path.relative_to(SRC)
        here = _rank(rel.parts[0] if len(rel.parts) > 1 else rel.stem)
        if here is None:
            continue
        for module in _imports(path):
            there = _rank(_layer(module))
            if there is not None and there > here:
                found.add((rel.as_posix(), module))
    return found


def test_layers_import_downwards_only():
    upward = _upward_imports() - LAYER_PENDING
    assert not upward, "\n".join(f"{a} imports {b}, a layer above it" for a, b in sorted(upward))


def test_layer_pending_lists_only_current_offenders():
    stale = LAYER_PENDING - _upward_imports()
    assert not stale, f"these import downwards now; delete them from LAYER_PENDING: {stale}"


def test_the_checks_catch_what_they_should():
    """The checks themselves: a long function, a five-positional one and an upward import are
    found; keyword-only parameters and ``self`` are not counted against a function."""
    source = "\n".join([
        "class A:",
        "    def ok(self, a, b, c, d, *, e, f): pass",
        "    def bad(self, a, b, c, d, e): pass",
        "def long():",
        *["    x = 1"] * MAX_LINES,
    ])
    found = {name: shape_problems(node) for name, node in _functions(ast.parse(source))}
    assert found["A.ok"] == []
    assert "5 parameters, 5 positional" in found["A.bad"][0]
    assert found["long"] == [f"{MAX_LINES + 1} lines (at most {MAX_LINES})"]
    assert _rank(_layer("msakit.training.trainer")) > _rank(_layer("msakit.models.clgsi"))
    assert _rank(_layer("msakit.cli")) > _rank(_layer("msakit.training.inputs"))
    assert _rank(_layer("msakit.core.files")) < _rank(_layer("msakit.config.datasets"))
    assert _rank(_layer("msakit.api")) > _rank(_layer("msakit.extract.predict"))


def test_extract_uses_only_the_layers_below_it():
    """``extract/`` sits beside the models (docs/architecture.md): it reads data and encoders
    (tokenizers) and is imported by training and the user surface, never the reverse; it
    imports no model either (``predict --video`` gets a loaded checkpoint from the API)."""
    found = set()
    for path in sorted((SRC / "extract").rglob("*.py")):
        for module in _imports(path):
            layer = _layer(module)
            if layer not in (None, "extract") and (_rank(layer) or 0) >= LAYERS["extract"]:
                found.add((path.name, module))
    assert not found, found


MODEL_NAMES = ("clgsi", "conki", "tfn", "lmf", "mult", "misa", "self_mm", "mmim", "lf_dnn",
               "ef_lstm", "mfn", "graph_mfn", "mtfn", "mlmf", "mlf_dnn", "bert_mag", "mfm",
               "mctn", "tfr_net", "tetfn", "cenet", "almt")
"""The built-in models (``msakit.models.registry.BUILTIN``); generic code names none."""
GENERIC = ("training", "reporting", "commands", "api.py", "cli.py", "tune.py", "bench.py",
           "inference.py", "importing.py", "rerun.py")
"""Generic code (docs/architecture.md): it asks the registry, never names a model."""


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (module, class, function, attribute)."""
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for first, second in zip([None, *body], body, strict=False):
            if (isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant)
                    and isinstance(second.value.value, str)
                    and (first is None or isinstance(first, (ast.Assign, ast.AnnAssign)))):
                found.add(id(second.value))
    return found


def model_names_in(source: str, names: tuple[str, ...] = MODEL_NAMES) -> list[str]:
    """Where ``source`` names a model: identifiers, attributes, imported modules, function and
    class names, and words of string constants (docstrings and comments are prose)."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    alternatives = "|".join(names)
    in_identifier = re.compile(rf"(?<![A-Za-z0-9])({alternatives})(?![A-Za-z0-9])", re.I)
    in_string = re.compile(rf"(?<![A-Za-z0-9_])({alternatives})(?![A-Za-z0-9_])", re.I)
    found = []
    for node in ast.walk(tree):
        words: list[str] = []
        if isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            words = [node.name]
        elif isinstance(node, ast.arg):
            words = [node.arg]
        elif isinstance(node, ast.Import):
            words = [a.name for a in node.names] + [a.asname or "" for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            words = [node.module or ""] + [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                words = [node.value]
        pattern = in_string if isinstance(node, ast.Constant) else in_identifier
        for word in words:
            match = pattern.search(word)
            if match:
                found.append(f"line {node.lineno}: {match.group(0)!r} in {word[:60]!r}")
    return found


def _generic_sources() -> list[Path]:
    paths = []
    for entry in GENERIC:
        path = SRC / entry
        paths += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return paths


def test_generic_code_names_no_model():
    """training/, reporting/ and the user surface ask the model registry and call the model's
    hooks; a model's name in them (an import, an identifier, a string) is method code in the
    wrong place (docs/architecture.md)."""
    found = {}
    for path in _generic_sources():
        hits = model_names_in(path.read_text(encoding="utf-8"))
        if hits:
            found[path.relative_to(SRC).as_posix()] = hits
    assert not found, "\n".join(f"{k}: {'; '.join(v)}" for k, v in found.items())


def test_the_model_name_scan_covers_every_built_in_model():
    from msakit.models.registry import BUILTIN

    assert set(MODEL_NAMES) == set(BUILTIN)


def test_the_model_name_scan_finds_names_and_ignores_prose():
    source = "\n".join([
        '"""A docstring may say CLGSI."""',
        "from msakit.models.conki import stage1_config  # a comment may say TFN",
        "x = preset('clgsi', 'mosi')",
        "def run_mmim(): pass",
        "y = obj.self_mm_labels",
        "z = 'the MulT schedule'",
        "w = 'Mult_acc_7 and multiple'",
        "class A:",
        "    field = 1",
        '    """Attribute docstrings are prose: misa."""',
    ])
    lines = {int(h.split(":")[0].removeprefix("line ")) for h in model_names_in(source)}
    assert lines == {2, 3, 4, 5, 6}


def test_every_model_builds_its_parameter_groups_with_groups_by_prefix():
    """The one way to name parameter groups (docs/architecture.md, "The model contract"): a
    model's ``parameter_groups`` returns :func:`msakit.models.base.groups_by_prefix`."""
    hand_written = []
    for path in sorted((SRC / "models").rglob("*.py")):
        if path.name == "base.py":
            continue
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            if name.endswith(".parameter_groups"):
                calls = {n.func.id for n in ast.walk(node)
                         if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
                if "groups_by_prefix" not in calls:
                    hand_written.append(f"{path.relative_to(SRC)}::{name}")
    assert not hand_written, hand_written


# --------------------------------------------------------------------------- imports in functions
LAZY = "# lazy:"


def _body_imports(tree: ast.AST) -> Iterator[tuple[str, list[ast.stmt]]]:
    """(function name, a block of adjacent imports) for every import of an msakit module inside
    a function; adjacent imports (no line between them) form one block."""
    for name, fn in _functions(tree):
        own = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))
               and any(m == "msakit" or m.startswith("msakit.") for m in _imported(n))]
        nested = {id(n) for _, inner in _functions(fn) for n in ast.walk(inner)}
        block: list[ast.stmt] = []
        for node in sorted((n for n in own if id(n) not in nested), key=lambda n: n.lineno):
            if block and node.lineno != block[-1].end_lineno + 1:
                yield name, block
                block = []
            block.append(node)
        if block:
            yield name, block


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return ["msakit" if node.level else (node.module or "")]


def unexplained_imports(source: str) -> list[str]:
    """``function (line N)`` of every function-body import of msakit without a ``# lazy:``
    reason on its lines or in the comment right above its block."""
    lines = source.splitlines()
    found = []
    for name, block in _body_imports(ast.parse(source)):
        start = block[0].lineno - 1
        while start > 0 and lines[start - 1].strip().startswith("#"):  # the comment above
            start -= 1
        if not any(LAZY in line for line in lines[start: block[-1].end_lineno]):
            found.append(f"{name} (line {block[0].lineno})")
    return found


def _unexplained() -> set[str]:
    found = set()
    for path in _sources():
        rel = path.relative_to(SRC).as_posix()
        for where in unexplained_imports(path.read_text(encoding="utf-8")):
            found.add(f"{rel}::{where.split(' ')[0]}")
    return found


def test_function_body_imports_of_msakit_say_why():
    """An import of msakit's own modules belongs at the top of the module; one inside a
    function says why (``# lazy: ...``): an optional dependency (matplotlib, MLflow, the
    extractors) or the command line's start-up (``msakit --help`` loads no command's work).
    A circle is no reason: it is broken by putting the code in the right layer."""
    found = _unexplained() - LAZY_PENDING
    assert not found, "add '# lazy: REASON' or move the import to the top:\n" + "\n".join(
        sorted(found))
    circles = [f"{path.relative_to(SRC)}:{n}" for path in _sources()
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if LAZY in line and re.search(r"circle|cycle", line, re.I)]
    assert not circles, f"a lazy import hides a circle: {circles}"


def test_lazy_pending_lists_only_current_offenders():
    stale = LAZY_PENDING - _unexplained()
    assert not stale, f"these say why now; delete them from LAZY_PENDING: {sorted(stale)}"


def test_the_lazy_import_check_reads_comments_on_the_line_and_above():
    source = "\n".join([
        "import msakit.core.errors",  # module level: fine
        "def a():",
        "    from msakit import api",  # no reason
        "def b():",
        "    # lazy: optional matplotlib",
        "    from msakit.reporting import plots",
        "    from msakit.core.files import atomic_write",  # same block as the line above
        "def c():",
        "    from msakit.api import load  # lazy: a circle until api's split",
        "    x = 1",
        "    from msakit.data import mmsa",  # a new block, no reason
        "def d():",
        "    import numpy",  # not msakit
    ])
    assert unexplained_imports(source) == ["a (line 3)", "c (line 11)"]


# --------------------------------------------------------------------------- circles
def _module_name(path: Path) -> str:
    parts = ["msakit", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The msakit modules ``path`` imports at module level (not in functions, not under ``if
    TYPE_CHECKING``); ``from package import name`` counts ``package.name`` when it is a module."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}
    return found & modules


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_circle_among_module_level_imports():
    """Module-level imports form no circle (a package's ``__init__`` re-exporting its modules
    is not one: its modules import each other, never the package)."""
    paths = _sources()
    modules = {_module_name(p) for p in paths}
    graph = {_module_name(p): _top_level_imports(p, modules) - {_module_name(p)} for p in paths}
    assert import_cycles(graph) == []


def _loaded_with(module: str, graph: dict[str, set[str]]) -> set[str]:
    """The msakit modules importing ``module`` loads (its module-level imports, transitively)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph.get(name, set()) - seen
    return seen - {module}


def test_nothing_the_api_loads_reaches_back_into_it():
    """The API is a facade over the layers (run orchestration in ``training/runs.py``,
    checkpoint reading in ``training/checkpoints.py``): no module it loads imports it back, not
    even inside a function (a lazy import there hides a circle)."""
    paths = {_module_name(p): p for p in _sources()}
    graph = {name: _top_level_imports(p, set(paths)) for name, p in paths.items()}
    below = _loaded_with("msakit.api", graph) - {"msakit"}  # the package: its public face
    assert {"msakit.training.runs", "msakit.training.checkpoints", "msakit.inference",
            "msakit.tracking", "msakit.reporting.plots"} <= below
    back = sorted(name for name in below if "msakit.api" in set(_imports(paths[name])))
    assert not back, f"these are loaded by msakit.api and import it: {back}"


def test_the_cycle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
