"""Private namespaces, packages, ``livemod.mods.<name>`` imports and their edges (_loader)."""

from __future__ import annotations

import gc
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

import livemod

pytestmark = pytest.mark.usefixtures("no_stray_threads")

MODULES = Path(__file__).parent / "fixtures" / "modules"


def path(name: str) -> str:
    single = MODULES / f"{name}.py"
    return str(single if single.exists() else MODULES / name)


def names_of(host: livemod.Host) -> set[str]:
    """Every sys.modules entry that belongs to ``host``."""
    prefix = f"livemod.mods.{host._tag}."
    return {n for n in sys.modules if n.startswith(prefix)}


def test_a_module_lives_under_a_private_name(host: livemod.Host) -> None:
    host.insmod(path("basic"))
    [name] = names_of(host)
    assert name.startswith("livemod.mods._h") and name.endswith(".basic")
    assert "basic" not in sys.modules
    assert "livemod.mods.basic" not in sys.modules
    module = sys.modules[name]
    assert module.__file__ == path("basic")
    assert module.ping(1) == ("pong", 1)
    del module
    host.rmmod("basic")
    assert names_of(host) == set()


def test_a_package_with_submodules_loads_and_unloads_cleanly(host: livemod.Host) -> None:
    host.insmod(path("webpkg"))
    assert host.hook("webpkg.handle")("a") == ["WEB:<A>"]
    tails = {n.split(".", 3)[3] for n in names_of(host)}
    assert tails == {"webpkg", "webpkg.util", "webpkg.sub", "webpkg.sub.deep"}
    # A submodule imported lazily, after load, belongs to the module too.
    assert host.hook("webpkg.lazy")() == ["lazy value"]
    assert any(n.endswith("webpkg.lazy_part") for n in names_of(host))
    host.rmmod("webpkg")
    assert names_of(host) == set()
    assert host.leaks() == []
    # And it loads again from scratch.
    host.insmod(path("webpkg"))
    assert host.hook("webpkg.handle")("b") == ["WEB:<B>"]


def test_a_failing_package_leaves_no_submodule_behind(host: livemod.Host) -> None:
    with pytest.raises(livemod.InitError, match="badpkg"):
        host.insmod(path("badpkg"))
    assert names_of(host) == set()


def test_import_from_livemod_mods_records_the_edge(host: livemod.Host) -> None:
    host.modprobe("log", prefix="log: ")
    host.insmod(path("greet"), greeting="hi")
    rows = {r.name: r for r in host.lsmod()}
    assert rows["greet"].uses == ("log",)
    assert rows["log"].used_by == ("greet",)
    assert host.hook("greet.hello")("ann") == ["log: hi ann"]
    with pytest.raises(livemod.ModuleBusy, match="used by 'greet'"):
        host.rmmod("log")


def test_every_import_form_resolves_and_records_one_edge(host: livemod.Host) -> None:
    host.modprobe("log")
    host.insmod(path("greet"))
    host.insmod(path("importer_forms"))
    assert host.hook("forms")("m") == [["m", "m", "m"]]
    rows = {r.name: r for r in host.lsmod()}
    assert rows["importer_forms"].uses == ("log",)
    assert rows["log"].used_by == ("greet", "importer_forms")


def test_a_lazy_import_inside_a_function_records_the_edge_when_it_runs(
    host: livemod.Host, tmp_path: Path
) -> None:
    lazy = tmp_path / "lazy.py"
    lazy.write_text(
        '__livemod__ = {"name": "lazy"}\n'
        "def later(text):\n"
        "    from livemod.mods.log import write\n"
        "    return write(text)\n"
        "def init(mod):\n"
        '    mod.hook("lazy.later").add(later)\n'
    )
    host.modprobe("log")
    host.insmod(lazy)
    assert {r.name: r.uses for r in host.lsmod()}["lazy"] == ()
    assert host.hook("lazy.later")("now") == ["now"]
    rows = {r.name: r for r in host.lsmod()}
    assert rows["lazy"].uses == ("log",)
    assert rows["log"].used_by == ("lazy",)


def test_import_of_a_module_that_is_not_loaded_fails_the_load(host: livemod.Host) -> None:
    with pytest.raises(livemod.InitError, match="log") as excinfo:
        host.insmod(path("greet"))
    assert isinstance(excinfo.value.__cause__, ImportError)
    assert host.lsmod() == []
    assert names_of(host) == set()


def test_livemod_mods_outside_a_module_says_what_to_do() -> None:
    with pytest.raises(ImportError, match=r"host\.hold"):
        from livemod.mods import log  # noqa: F401


def test_each_host_resolves_imports_to_its_own_modules(probe: Any) -> None:
    with livemod.Host(modpath=[MODULES]) as one, livemod.Host(modpath=[MODULES]) as two:
        one.insmod(path("log"), prefix="one:")
        two.insmod(path("log"), prefix="two:")
        one.insmod(path("greet"))
        two.insmod(path("greet"))
        assert one.hook("greet.hello")("x") == ["one:hello x"]
        assert two.hook("greet.hello")("x") == ["two:hello x"]
        assert names_of(one).isdisjoint(names_of(two))
        one.rmmod("greet")
        assert two.hook("greet.hello")("y") == ["two:hello y"]
        assert len(names_of(two)) == 2


def test_two_hosts_loading_one_file_at_once_do_not_collide(probe: Any) -> None:
    hosts = [livemod.Host(modpath=[MODULES]) for _ in range(4)]
    barrier = threading.Barrier(len(hosts))
    errors: list[BaseException] = []

    def load(i: int, host: livemod.Host) -> None:
        try:
            barrier.wait(5)
            for _ in range(5):
                host.insmod(path("log"), prefix=f"{i}:")
                host.insmod(path("greet"))
                host.insmod(path("webpkg"))
                if host.hook("greet.hello")("z") != [f"{i}:hello z"]:
                    raise AssertionError(f"host {i} reached another host's log")
                host.rmmod("log", cascade=True)
                host.rmmod("webpkg")
            host.insmod(path("log"), prefix=f"{i}:")
            host.insmod(path("greet"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(i, h)) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        for i, h in enumerate(hosts):
            assert h.hook("greet.hello")("w") == [f"{i}:hello w"]
            assert len(names_of(h)) == 2
    finally:
        for h in hosts:
            h.close()
    assert all(names_of(h) == set() for h in hosts)
    assert [leak for h in hosts for leak in h.leaks()] == []


@pytest.mark.asserts_leak
def test_the_module_namespace_is_fresh_on_every_load(host: livemod.Host) -> None:
    host.modprobe("log")
    host.hook("nothing")  # a hook, to show it is not what keeps anything
    first = sys.modules[next(iter(names_of(host)))]
    first.lines.append("from the first load")
    ref = weakref.ref(first)
    del first
    host.rmmod("log")
    gc.collect()
    assert ref() is None
    host.modprobe("log")
    second = sys.modules[next(iter(names_of(host)))]
    assert second.lines == []
