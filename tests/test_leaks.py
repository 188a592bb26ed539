"""The leak check after unload: weak references, referrer chains, host.leaks() (_leaks)."""

from __future__ import annotations

import gc
import sys
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


@pytest.mark.asserts_leak
def test_a_well_behaved_module_is_really_gone(host: livemod.Host) -> None:
    m = host.insmod(path("basic"))
    ping_ref = weakref.ref(m.exports["ping"])
    [impl_result] = host.hook("basic.ping")(1)
    assert impl_result == ("pong", 1)
    host.rmmod("basic")
    gc.collect()
    assert ping_ref() is None
    assert host.leaks() == []
    assert host.tainted == ()
    # The handle the test kept is still usable, and kept nothing alive.
    assert m.state is livemod.State.GONE
    assert m.name == "basic" and dict(m.exports) == {}


@pytest.mark.asserts_leak
def test_a_package_is_really_gone(host: livemod.Host) -> None:
    host.insmod(path("webpkg"))
    assert host.hook("webpkg.lazy")() == ["lazy value"]
    host.rmmod("webpkg")
    assert host.leaks() == []
    assert host.tainted == ()


@pytest.mark.asserts_leak
def test_a_function_kept_in_a_test_owned_list_is_reported(
    host: livemod.Host, probe: Any
) -> None:
    host.insmod(path("leaky"))
    kept: list[Any] = []
    probe.kept["the list"] = kept  # a list a person recognises: reachable from a global
    host.hook("leaky.give")(kept)
    ref = weakref.ref(kept[0])
    host.rmmod("leaky")
    assert host.lsmod() == []
    [leak] = host.leaks()
    assert isinstance(leak, livemod.Leak)
    assert (leak.name, leak.version) == ("leaky", "0")
    assert "leaky.handler (function)" in leak.survivors
    assert leak.chains, "the leak should say who holds it"
    assert any(
        c.startswith("leaky.handler <- list[0]") and "global 'kept' of module lm_probe" in c
        for c in leak.chains
    ), leak.chains
    assert "leaky" in str(leak) and "still alive" in str(leak)
    assert [(t.flag, t.module) for t in host.tainted] == [("module-leaked", "leaky")]
    # The report holds only text: once the list lets go, everything is collected.
    kept.clear()
    assert host.leaks() == []
    assert ref() is None
    assert len(host.tainted) == 1  # the taint stays: it happened


@pytest.mark.asserts_leak
def test_a_function_kept_in_a_local_list_names_the_list(host: livemod.Host) -> None:
    host.insmod(path("leaky"))
    kept: list[Any] = []
    host.hook("leaky.give")(kept)
    host.rmmod("leaky")
    [leak] = host.leaks()
    assert any("list[0]" in c for c in leak.chains), leak.chains


@pytest.mark.asserts_leak
def test_a_function_kept_in_a_global_of_another_module_is_reported(
    host: livemod.Host, probe: Any
) -> None:
    host.insmod(path("leaky"), how="global")
    host.hook("leaky.escape")()
    host.rmmod("leaky")
    [leak] = host.leaks()
    assert any("global 'holder' of module lm_probe" in c for c in leak.chains), leak.chains
    assert all(isinstance(c, str) for c in leak.chains + leak.survivors)
    probe.holder = None
    assert host.leaks() == []


@pytest.mark.asserts_leak
def test_a_leak_is_listed_until_collected_on_every_call(host: livemod.Host) -> None:
    host.insmod(path("leaky"))
    kept: list[Any] = []
    host.hook("leaky.give")(kept)
    host.rmmod("leaky")
    assert len(host.leaks()) == 1
    assert len(host.leaks()) == 1  # re-checked, not consumed
    # Reloading the same module does not confuse the old leak with the new instance.
    host.insmod(path("leaky"))
    assert [leak.name for leak in host.leaks()] == ["leaky"]
    kept.clear()
    assert host.leaks() == []
    host.rmmod("leaky")
    assert host.leaks() == []


def test_leak_check_can_be_turned_off(probe: Any) -> None:
    with livemod.Host(modpath=[MODULES], leak_check=False) as host:
        host.insmod(path("leaky"), how="global")
        host.hook("leaky.escape")()
        host.rmmod("leaky")
        assert host.leaks() == []
        assert host.tainted == ()
    probe.holder = None


@pytest.mark.asserts_leak
def test_a_failed_init_leaves_nothing_alive(host: livemod.Host, probe: Any) -> None:
    refs: list[weakref.ref[Any]] = []

    def watch(name: str, old: Any, new: livemod.State) -> None:
        if name == "failinit" and new is livemod.State.COMING:
            private = [n for n in sys.modules if n.endswith(f".{host._tag}.failinit")]
            refs.extend(weakref.ref(sys.modules[n]) for n in private)

    host.subscribe(watch)
    with pytest.raises(livemod.InitError):
        host.insmod(path("failinit"), step=4)
    gc.collect()
    assert len(refs) == 1
    assert refs[0]() is None
