"""The shape of src/livemod, read with ast: no import circles, one writer of module state,
the outer layers on the public API only, and files of a readable size.

Every import counts, at any depth: module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader must follow).
"""

from __future__ import annotations

import ast
import pickle
from collections.abc import Iterator
from pathlib import Path

import livemod

SRC = Path(livemod.__file__).parent
PACKAGE = "livemod"

#: Import circles allowed, each with why. None today: keep it that way, or justify the pair.
ALLOWED_PAIRS: frozenset[frozenset[str]] = frozenset()

#: The outer layers: built on the public API (trio's rule for its friendly API, enforced).
OUTER = ("livemod.cli", "livemod.control", "livemod.watch", "livemod.demo",
         "livemod.examples")

#: The state file is the one exception to "outer layers use public names": ``Host.from_config``
#: builds one, so it is imported *by* the host and may not import the public package back (that
#: would be a circle). It types the host as a Protocol and uses only leaf records; it must
#: never import the host module or the package.
STATEFILE = "livemod._statefile"

MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """(module imported, name imported from it or None) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                yield module, alias.name


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, attr in _imports(name, path):
            target = f"{module}.{attr}" if attr and f"{module}.{attr}" in MODULES else module
            if target in MODULES and target != name:
                edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def _is_public_module(name: str) -> bool:
    return name in MODULES and not any(part.startswith("_") for part in name.split("."))


def test_the_walk_sees_the_package() -> None:
    edges = _edges()
    assert {"livemod", "livemod.host", "livemod._lifecycle", "livemod.cli"} <= edges.keys()
    assert "livemod.host" in edges["livemod"]
    assert "livemod._journal" in edges["livemod._lifecycle"]
    # A TYPE_CHECKING import counts: the context types its registrar that way.
    assert "livemod._registrar" in edges["livemod._context"]


def test_no_import_circle_except_a_justified_pair() -> None:
    cycles = _cycles(_edges())
    unjustified = [sorted(c) for c in cycles if frozenset(c) not in ALLOWED_PAIRS]
    assert unjustified == []
    assert max((len(c) for c in cycles), default=0) <= 2


def test_only_the_package_imports_the_host_module() -> None:
    importers = sorted(n for n, targets in _edges().items() if "livemod.host" in targets)
    assert importers == ["livemod"]


def test_outer_layers_import_only_public_names() -> None:
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith(OUTER):
            continue
        layer = next(o for o in OUTER if name.startswith(o))
        for module, attr in _imports(name, path):
            if not module.startswith(PACKAGE + ".") and module != PACKAGE:
                continue  # the standard library and third-party packages
            if module.startswith(layer):
                continue  # the layer's own modules
            if module == PACKAGE:
                if attr is None or attr in livemod.__all__ or _is_public_module(
                        f"{PACKAGE}.{attr}"):
                    continue
            elif _is_public_module(module) and module != "livemod.host":
                continue
            wrong.append(f"{name}: {module}{'.' + attr if attr else ''}")
    assert wrong == []


def test_the_state_file_imports_neither_the_host_nor_the_package() -> None:
    targets = _edges()[STATEFILE]
    assert "livemod.host" not in targets and PACKAGE not in targets


def test_exactly_one_file_writes_a_modules_state() -> None:
    writers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = [t for target in node.targets
                           for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "state" for t in targets):
                writers.add(name)
    assert writers == {"livemod._journal"}


def test_no_file_is_over_the_size_limit() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines())
             for name, path in MODULES.items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_public_classes_say_they_are_livemods() -> None:
    classes = [getattr(livemod, n) for n in livemod.__all__
               if isinstance(getattr(livemod, n), type)]
    modules = {c.__name__: c.__module__ for c in classes}
    assert {n: m for n, m in modules.items() if m not in ("livemod", "livemod.errors")} == {}
    assert modules["Module"] == modules["Host"] == modules["State"] == "livemod"
    assert modules["ModuleBusy"] == "livemod.errors"  # a public module of its own
    for value in (livemod.State.LIVE, livemod.Requirement.parse("log>=1.2,<2"),
                  livemod.Taint("forced-unload", "greet", 1.0, "rmmod --force"),
                  livemod.ParamSpec("greeting", "str", "hello")):
        assert pickle.loads(pickle.dumps(value)) == value
    assert repr(livemod.State.LIVE) == "<State.LIVE: 'live'>"
