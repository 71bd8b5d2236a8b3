"""The floors of the project, read from its import statements with `ast` (nothing is imported):

    tools     resnet_tools modules that use the core (job, inference, results, figures, cli, the report
              package's facts, words, paper and readme, ...), scripts/ and bench/
    core      resnet_lib.py: models, data, pipeline, TrainConfig, fit
    leaves    the resnet_tools modules below the core (LEAVES)

Imports point down only: a leaf imports leaves alone (never the core or a tool), the core imports
leaves alone, and a tool imports whatever lies below it or beside it without a cycle. A leaf may
use another leaf (runlog writes atomically with safeio; every leaf raises the errors of
resnet_tools.errors); what it may not do is reach up. No module has a module-level `__getattr__`
(a re-export no reader or tool can follow), and no project module is imported inside a function
or by name at run time (importlib, runpy) except where ALLOWED_LATE says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "resnet_lib"
LEAVES = {
    "resnet_tools",  # the package's __init__: a docstring
    "resnet_tools.errors",
    "resnet_tools.budget",
    "resnet_tools.dataset",
    "resnet_tools.safeio",
    "resnet_tools.devices",
    "resnet_tools.progress",
    "resnet_tools.runlog",
    "resnet_tools.cifarfiles",
    "resnet_tools.imagefolder",
    "resnet_tools.checkpoints",
    "resnet_tools.distill",
    "resnet_tools.step",
    "resnet_tools.cudagraph",
    "resnet_tools.distributed",
    "resnet_tools.renamed",  # old recipe names: checkpoints maps the configs it loads
    "resnet_tools.augment",  # crop, flip, cutout and normalization of uint8 batches
    "resnet_tools.evaluation",  # evaluate, logits_of (fit scores every epoch with them)
    "resnet_tools.optim",  # the optimizer and the lr schedule
    "resnet_tools.compile_step",  # make_step: the step fit and the benchmark take
    "resnet_tools.notebook",  # the notebooks' first cell imports it before resnet_lib (Colab installs first)
    "resnet_tools.report",  # the report package's __init__: a docstring
    "resnet_tools.report.latex",  # LaTeX escaping and tables: text in, text out
    "resnet_tools.report.markdown",  # the same for Markdown
}
# (file, project module) -> why it is imported late. Only to delay a heavy optional dependency,
# or the command-line entry of resnet_lib.py, which hands over to the CLI before it defines anything.
ALLOWED_LATE = {
    ("resnet_lib.py", "resnet_tools.cli"): "`python resnet_lib.py train` runs the CLI (runpy), which imports it",
}
_DYNAMIC = {"import_module", "run_module", "__import__"}


def _files() -> dict[str, Path]:
    """Module name -> file: resnet_lib, resnet_tools.X, resnet_tools.report.X, scripts.X, bench.X."""
    found = {CORE: ROOT / "resnet_lib.py"}
    for folder in ("resnet_tools", "resnet_tools/report", "scripts", "bench"):
        package = folder.replace("/", ".")
        for path in sorted((ROOT / folder).glob("*.py")):
            found[package if path.name == "__init__.py" else f"{package}.{path.stem}"] = path
    return found


FILES = _files()


def _resolve(name: str, importer: str) -> str | None:
    """The project module an import names, or None for a module outside the project. scripts/ and
    bench/ put their own folder on sys.path, so `import bench` there is bench/bench.py."""
    if name in FILES and not name.startswith(("scripts.", "bench.")):
        return name
    folder = importer.split(".")[0]
    if folder in ("scripts", "bench") and f"{folder}.{name}" in FILES:
        return f"{folder}.{name}"
    if name.split(".")[0] in (CORE, "resnet_tools"):
        raise AssertionError(f"{importer} imports {name}, which is not a file of the project")
    return None


class _Imports(ast.NodeVisitor):
    """Every project module a file imports: (module, line, inside a function, by name at run time)."""

    def __init__(self, importer: str) -> None:
        self.importer, self.depth, self.found = importer, 0, []
        self.getattr_lines: list[int] = []

    def _add(self, name: str, node: ast.AST, dynamic: bool = False) -> None:
        module = _resolve(name, self.importer)
        if module is not None:
            self.found.append((module, node.lineno, self.depth > 0, dynamic))

    def visit_FunctionDef(self, node: ast.AST) -> None:
        if self.depth == 0 and getattr(node, "name", "") == "__getattr__":  # a lambda has no name
            self.getattr_lines.append(node.lineno)
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        assert node.level == 0, f"{self.importer}:{node.lineno}: relative import"
        for alias in node.names:  # `from resnet_tools import figures` imports the module figures
            sub = f"{node.module}.{alias.name}"
            self._add(sub if sub in FILES else node.module, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _DYNAMIC and node.args and isinstance(node.args[0], ast.Constant):
            if isinstance(node.args[0].value, str):
                self._add(node.args[0].value, node, dynamic=True)
        self.generic_visit(node)


def _read(module: str) -> _Imports:
    visitor = _Imports(module)
    visitor.visit(ast.parse(FILES[module].read_text(), str(FILES[module])))
    return visitor


IMPORTS = {module: _read(module) for module in FILES}


def _rel(module: str) -> str:
    return str(FILES[module].relative_to(ROOT))


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at module level (the entry's late hand-over left out)."""
    return {
        m: {dep for dep, _, late, dynamic in v.found if not (late or dynamic) and dep != m}
        for m, v in IMPORTS.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_floors_are_what_the_test_names():
    """Every resnet_tools module is a leaf or a tool by choice: a new one is placed here."""
    missing = LEAVES - set(FILES)
    assert not missing, f"LEAVES names modules that do not exist: {sorted(missing)}"
    tools = sorted(m for m in FILES if m.startswith("resnet_tools.") and m not in LEAVES)
    assert {"resnet_tools.cli", "resnet_tools.job", "resnet_tools.results", "resnet_tools.figures"} <= set(tools)
    report = {"facts", "words", "paper", "paper_figures", "readme"}
    assert {f"resnet_tools.report.{name}" for name in report} <= set(tools)  # they read results: above the core


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(_rel(m) for m in cycle)


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_a_leaf_imports_only_leaves(leaf):
    up = sorted({dep for dep, *_ in IMPORTS[leaf].found} - LEAVES)
    assert not up, f"{_rel(leaf)} is a leaf below resnet_lib but imports {up}"


def test_the_core_imports_only_leaves():
    up = sorted({dep for dep, _, late, dynamic in IMPORTS[CORE].found if not (late or dynamic)} - LEAVES)
    assert not up, f"resnet_lib.py imports {up}: the core may use leaves only (move the code that needs them up)"


def test_nothing_below_a_tool_imports_it():
    """Leaves and the core never reach the tools (scripts and bench are never imported by the library)."""
    for module, visitor in IMPORTS.items():
        if module == CORE or module in LEAVES:
            for dep, line, late, dynamic in visitor.found:
                allowed = (_rel(module), dep) in ALLOWED_LATE
                assert dep == CORE and module != CORE or dep in LEAVES or allowed, f"{_rel(module)}:{line}: {dep}"
        if module.startswith("resnet_tools") or module == CORE:
            assert not any(d.startswith(("scripts.", "bench.")) for d, *_ in visitor.found), module


def test_no_module_level_getattr():
    for module, visitor in IMPORTS.items():
        assert not visitor.getattr_lines, f"{_rel(module)}:{visitor.getattr_lines[0]}: module-level __getattr__"


def test_no_late_project_imports_except_the_allowed():
    late = sorted(
        (_rel(m), dep, line)
        for m, v in IMPORTS.items()
        for dep, line, in_function, dynamic in v.found
        if (in_function or dynamic) and (_rel(m), dep) not in ALLOWED_LATE
    )
    assert not late, f"project modules imported inside a function or by name at run time: {late}"


def test_the_checks_see_what_they_check():
    """The reader finds a late import, a dynamic one and a cycle where they are."""
    source = "import resnet_lib\ndef f():\n    from resnet_tools import figures\n"
    source += "importlib.import_module('resnet_tools.cli')\n"
    visitor = _Imports("resnet_tools.results")
    visitor.visit(ast.parse(source))
    assert [(d, late, dyn) for d, _, late, dyn in visitor.found] == [
        ("resnet_lib", False, False),
        ("resnet_tools.figures", True, False),
        ("resnet_tools.cli", False, True),
    ]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_still_offers_what_the_course_card_names():
    """Models, data, pipeline, TrainConfig and fit are resnet_lib's own (or used by it, as CIFAR10); the
    pixel work, evaluation, the optimizer and the layer tables are one import away, in their own modules."""
    import resnet_lib as rl
    from resnet_tools import augment, evaluation, layers, optim

    for name in ("ResNet", "lite", "improved", "build_model", "load_cifar10", "CIFAR10", "split_train_val",
                 "TrainConfig", "RECIPES", "fit", "count_params", "ConfigError"):
        assert hasattr(rl, name), name
    for module, names in ((augment, ("augment", "cutout", "normalize")), (evaluation, ("evaluate", "logits_of")),
                          (optim, ("make_optimizer", "lr_factor")), (layers, ("summary", "layer_table"))):
        assert all(hasattr(module, n) for n in names), module.__name__
    assert not hasattr(rl, "plot_confusion_matrix") and not hasattr(rl, "train_and_evaluate")  # tools, not core


def _core_own_names() -> set[str]:
    """The names resnet_lib.py defines itself (functions, classes, assignments), not those it imports."""
    own: set[str] = set()
    for node in ast.parse((ROOT / "resnet_lib.py").read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            own.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return own


def _rl_names(source: str) -> set[str]:
    """Every X in `rl.X` of a source text (the notebooks' and tools' alias of resnet_lib)."""
    tree = ast.parse(source)
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "rl"
    }


def test_users_reach_through_the_core_only_for_its_own_names():
    """A notebook, script, benchmark or tool that uses a leaf's name imports it from the leaf (`from resnet_tools.safeio
    import check_writable`), not through `rl.`, so the import lines show what it depends on."""
    import json

    own = _core_own_names() | {"__doc__", "__file__"}
    # (file, name) -> why it goes through rl.: a name wrapped where the core's own code looks it up.
    through = {("bench/methods.py", "make_step"): "built_steps wraps the step factory fit calls"}
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "scripts").glob("*.py")}
    sources.update({str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "bench").glob("*.py")})
    sources.update({str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "resnet_tools").rglob("*.py")})
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        sources[str(path.relative_to(ROOT))] = "\n".join(line for line in "\n".join(code).splitlines()
                                                          if not line.lstrip().startswith(("%", "!")))
    borrowed = {
        name: sorted(n for n in _rl_names(text) if n not in own and (name, n) not in through)
        for name, text in sources.items()
    }
    assert not {k: v for k, v in borrowed.items() if v}, "names a leaf defines, reached through resnet_lib"
