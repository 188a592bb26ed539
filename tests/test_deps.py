"""Dependency resolution: livemod._deps."""

from __future__ import annotations

from pathlib import Path

import pytest

from livemod._deps import dependents_order, resolve_load_order
from livemod._manifest import ModuleInfo, read_manifest
from livemod.errors import DependencyError, ModuleNotFound


class Modpath:
    """A real directory of module files and a lookup over it by name or alias."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []

    def add(self, name: str, version: str = "1.0", depends: tuple[str, ...] = (),
            aliases: tuple[str, ...] = ()) -> None:
        (self.root / f"{name}.py").write_text(
            f"__livemod__ = {{'name': {name!r}, 'version': {version!r}, "
            f"'depends': {list(depends)!r}, 'aliases': {list(aliases)!r}}}\n"
        )

    def lookup(self, wanted: str) -> ModuleInfo | None:
        self.calls.append(wanted)
        for path in sorted(self.root.glob("*.py")):
            info = read_manifest(path)
            if wanted == info.name or wanted in info.aliases:
                return info
        return None


@pytest.fixture
def modpath(tmp_path: Path) -> Modpath:
    return Modpath(tmp_path)


def names(order: list[ModuleInfo]) -> list[str]:
    return [info.name for info in order]


def test_single_module(modpath: Modpath) -> None:
    modpath.add("solo")
    assert names(resolve_load_order("solo", modpath.lookup, {})) == ["solo"]


def test_chain_and_declaration_order(modpath: Modpath) -> None:
    modpath.add("web", depends=("greet", "auth"))
    modpath.add("greet", depends=("log>=1.0",))
    modpath.add("auth", depends=("log",))
    modpath.add("log", version="1.2.0")
    order = resolve_load_order("web", modpath.lookup, {})
    assert names(order) == ["log", "greet", "auth", "web"]
    # Deterministic: the same answer again.
    assert names(resolve_load_order("web", modpath.lookup, {})) == names(order)


def test_diamond_loads_shared_dependency_once(modpath: Modpath) -> None:
    modpath.add("top", depends=("left", "right"))
    modpath.add("left", depends=("base>=1",))
    modpath.add("right", depends=("base<2",))
    modpath.add("base", version="1.5")
    assert names(resolve_load_order("top", modpath.lookup, {})) == [
        "base", "left", "right", "top",
    ]


def test_diamond_checks_every_constraint(modpath: Modpath) -> None:
    modpath.add("top", depends=("left", "right"))
    modpath.add("left", depends=("base>=1",))
    modpath.add("right", depends=("base>=2",))
    modpath.add("base", version="1.5")
    with pytest.raises(DependencyError) as info:
        resolve_load_order("top", modpath.lookup, {})
    assert info.value.chain == ("top", "right", "base")
    assert "top -> right needs base>=2, but the modpath has base 1.5" in str(info.value)


def test_aliases_resolve_to_canonical_names(modpath: Modpath) -> None:
    modpath.add("web", depends=("logger>=1",))
    modpath.add("log", version="1.0", aliases=("logger",))
    assert names(resolve_load_order("web", modpath.lookup, {})) == ["log", "web"]
    modpath.add("app", depends=("log", "web"))
    assert names(resolve_load_order("app", modpath.lookup, {})) == ["log", "web", "app"]
    # The root may be named by its alias too.
    assert names(resolve_load_order("logger", modpath.lookup, {})) == ["log"]


def test_loaded_modules_are_skipped_but_checked(modpath: Modpath) -> None:
    modpath.add("web", depends=("greet",))
    modpath.add("greet", depends=("log>=1.0",))
    modpath.add("log", version="9.0")
    order = resolve_load_order("web", modpath.lookup, {"log": "1.2.0"})
    assert names(order) == ["greet", "web"]
    assert resolve_load_order("web", modpath.lookup, {"web": "1.0"}) == []


def test_loaded_module_named_by_alias(modpath: Modpath) -> None:
    modpath.add("web", depends=("logger>=2",))
    modpath.add("log", version="2.0", aliases=("logger",))
    assert names(resolve_load_order("web", modpath.lookup, {"log": "2.1"})) == ["web"]
    with pytest.raises(DependencyError, match=r"log 1\.0 is loaded"):
        resolve_load_order("web", modpath.lookup, {"log": "1.0"})
    assert resolve_load_order("logger", modpath.lookup, {"log": "2.1"}) == []


def test_missing_dependency(modpath: Modpath) -> None:
    modpath.add("web", depends=("greet",))
    modpath.add("greet", depends=("log",))
    with pytest.raises(DependencyError) as info:
        resolve_load_order("web", modpath.lookup, {})
    assert info.value.chain == ("web", "greet", "log")
    assert info.value.module == "web"
    assert str(info.value) == (
        "cannot load 'web': web -> greet -> log: 'log' was not found on the modpath "
        "(install it or fix greet's depends)"
    )


def test_root_missing_is_module_not_found(modpath: Modpath) -> None:
    with pytest.raises(ModuleNotFound, match="'ghost'"):
        resolve_load_order("ghost", modpath.lookup, {})


def test_version_conflict_with_loaded(modpath: Modpath) -> None:
    modpath.add("web", depends=("greet",))
    modpath.add("greet", depends=("log>=2.0",))
    modpath.add("log", version="2.5")
    with pytest.raises(DependencyError) as info:
        resolve_load_order("web", modpath.lookup, {"log": "1.2.0"})
    assert info.value.chain == ("web", "greet", "log")
    message = str(info.value)
    assert message.startswith("cannot load 'web': web -> greet needs log>=2.0, but log 1.2.0 "
                              "is loaded")
    assert "rmmod log" in message


def test_version_conflict_on_modpath(modpath: Modpath) -> None:
    modpath.add("web", depends=("log>=2.0,<3",))
    modpath.add("log", version="1.2.0")
    with pytest.raises(DependencyError) as info:
        resolve_load_order("web", modpath.lookup, {})
    assert info.value.chain == ("web", "log")
    assert "web needs log>=2.0,<3, but the modpath has log 1.2.0" in str(info.value)


def test_cycle(modpath: Modpath) -> None:
    modpath.add("a", depends=("b",))
    modpath.add("b", depends=("c",))
    modpath.add("c", depends=("a",))
    with pytest.raises(DependencyError) as info:
        resolve_load_order("a", modpath.lookup, {})
    assert info.value.chain == ("a", "b", "c", "a")
    assert str(info.value) == (
        "cannot load 'a': dependency cycle a -> b -> c -> a (remove one of these depends)"
    )


def test_cycle_below_root_and_through_alias(modpath: Modpath) -> None:
    modpath.add("top", depends=("b",))
    modpath.add("b", depends=("c",))
    modpath.add("c", depends=("bee",))
    (modpath.root / "b.py").write_text(
        "__livemod__ = {'name': 'b', 'aliases': ['bee'], 'depends': ['c']}\n")
    with pytest.raises(DependencyError) as info:
        resolve_load_order("top", modpath.lookup, {})
    assert info.value.chain == ("b", "c", "b")
    assert "cannot load 'top': dependency cycle b -> c -> b" in str(info.value)


def test_long_chain_needs_no_recursion(modpath: Modpath) -> None:
    infos = {}
    for i in range(3000):
        text = f"__livemod__ = {{'name': 'm{i}', 'depends': {[f'm{i + 1}'] if i < 2999 else []}}}\n"
        path = modpath.root / f"m{i}.py"
        path.write_text(text)
        infos[f"m{i}"] = read_manifest(path)
    order = resolve_load_order("m0", infos.get, {})
    assert names(order) == [f"m{i}" for i in reversed(range(3000))]


def test_dependents_order() -> None:
    used_by = {"log": ["greet", "auth"], "greet": ["web"], "auth": ["web"]}
    assert dependents_order(["log", "greet", "auth", "web"], used_by) == [
        "web", "greet", "auth", "log",
    ]
    # Ties keep the given order.
    assert dependents_order(["x", "y", "z"], {}) == ["x", "y", "z"]
    assert dependents_order(["z", "y", "x"], {}) == ["z", "y", "x"]


def test_dependents_order_is_a_valid_topological_order() -> None:
    used_by = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "e": ["a"]}
    order = dependents_order(["a", "b", "c", "d", "e"], used_by)
    for module, users in used_by.items():
        for user in users:
            assert order.index(user) < order.index(module)


def test_dependents_order_through_unselected_and_cycles() -> None:
    # b is not being removed, but c uses b which uses a: c must still come before a.
    assert dependents_order(["a", "c"], {"a": ["b"], "b": ["c"]}) == ["c", "a"]
    cyclic = dependents_order(["a", "b"], {"a": ["b"], "b": ["a"]})
    assert sorted(cyclic) == ["a", "b"]
    assert dependents_order(["a", "a"], {}) == ["a"]
