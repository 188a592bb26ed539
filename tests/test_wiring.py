"""Import wiring: own names and declared dependencies resolve to livemod's copies (_wiring).

The fixture packages are written into a temporary modpath by each test, shaped like the
PyPI packages that broke: one that imports itself by its public name in every form (rich,
dateutil, attrs, jinja2's generated code, pkgutil.resolve_name), one that plainly imports
a declared dependency (requests -> urllib3), six's private-name ``moves``, and one that
puts a public name into ``sys.modules`` itself.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

import livemod
from helpers import write_tree as write
from livemod import _leaks

pytestmark = pytest.mark.usefixtures("no_stray_threads")


SHOP = {
    "shop/__init__.py": """
        __livemod__ = {"name": "shop", "version": "2.5.1"}
        from shop.prices import total          # own name, absolute, in the body
        import shop.util
        from shop import util as util_alias
        VERSION_META = __import__("importlib.metadata").metadata.version("shop")

        def lazy():
            from shop.later import LATER       # own name, lazily, in a function
            return LATER

        def dunder():
            return __import__("shop.util").util.X   # no globals given

        def fresh_exec():
            ns = {"x": 1}                       # jinja2: exec with fresh globals
            exec("from shop.util import X\\nresult = X + x", ns)
            return ns["result"]

        def evaluated():
            return eval("__import__('shop.util', fromlist=['X']).X")

        def by_import_module():
            import importlib
            return importlib.import_module("shop.util").X

        def by_resolve_name():
            import pkgutil                      # installed code calling import_module
            return pkgutil.resolve_name("shop.util:X")

        def direct_builtins():
            import builtins
            return builtins.__import__("shop.util")

        def old_idiom():                        # fromlist an empty list, as C passes it
            return __import__("shop.util", globals(), locals(), []).util.X

        def unpickle(data):
            import pickle                       # C code: _pickle looks classes up
            return pickle.loads(data)
        """,
    "shop/prices.py": """
        from shop.util import X
        def total(n):
            return n * X
        """,
    "shop/util.py": "X = 7\n",
    "shop/later.py": "LATER = 'late'\n",
}


def public_names(*tops: str) -> set[str]:
    return {n for n in sys.modules if n.partition(".")[0] in tops}


def test_every_form_of_own_name_import_resolves_to_livemods_copy(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    shop = wired_host.namespace("shop")
    private = wired_host._table.find("shop").private_name  # type: ignore[union-attr]
    assert shop.total(3) == 21
    assert shop.util.__name__ == private + ".util"  # a view of the submodule
    assert shop.util_alias.X == 7
    assert shop.lazy() == "late"
    assert shop.dunder() == 7
    assert shop.fresh_exec() == 8
    assert shop.evaluated() == 7
    assert shop.by_import_module() == 7
    assert shop.by_resolve_name() == 7
    assert shop.VERSION_META == "2.5.1"
    assert public_names("shop") == set()  # livemod never inserts a public name


def test_a_direct_builtins_import_is_not_wired_and_says_so(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    with pytest.raises(ImportError, match=r"module 'shop' \(.*shop\).*direct builtins"):
        wired_host.namespace("shop").direct_builtins()
    # Outside any frame of the module: a callback, or the host program itself.
    import importlib

    with pytest.raises(ImportError, match=r"host\.namespace\('shop'\)"):
        importlib.import_module("shop.util")
    import importlib.util

    assert importlib.util.find_spec("shop") is None  # asking is not importing
    assert public_names("shop") == set()


def test_an_import_from_c_by_the_public_name_gets_a_worded_error(
    modpath: Path, wired_host: livemod.Host
) -> None:
    """C's PyImport_Import (extension modules, pickle's class lookup) reads sys.modules by the
    public name after __import__ returns; CPython would raise a bare KeyError('shop.util')."""
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    shop = wired_host.namespace("shop")
    with pytest.raises(ImportError, match=r"module 'shop' \(.*\) imports 'shop\.util' from C "
                                          r"code .*never puts a public name there"):
        shop.unpickle(b"cshop.util\nX\n.")  # a pickle naming the public module
    assert shop.old_idiom() == 7  # Python code passing [] itself is wired as ever
    private = wired_host._table.find("shop").private_name  # type: ignore[union-attr]
    assert shop.unpickle(f"c{private}.util\nX\n.".encode()) == 7  # the private name works
    assert public_names("shop") == set()


def test_an_unwired_import_beside_an_installed_copy_is_recorded_as_mixed_copies(
    modpath: Path, wired_host: livemod.Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(modpath, SHOP)
    installed = tmp_path / "site"
    write(installed, {"shop/__init__.py": "INSTALLED = True\n", "shop/util.py": "X = 0\n"})
    monkeypatch.syspath_prepend(str(installed))
    try:
        wired_host.insmod(modpath / "shop")
        shop = wired_host.namespace("shop")
        assert shop.total(1) == 7  # wired imports still reach livemod's copy
        assert shop.direct_builtins().INSTALLED  # the unwired one got the installed copy
        [row] = wired_host.lsmod()
        assert "mixed-copies" in row.taints
        assert any("'shop'" in t.reason for t in wired_host.tainted)
        # An operator sees it in lsmod and modinfo (the control server's records).
        from livemod.control.ops import OPS, Call

        call = Call(wired_host, {"target": "shop"}, lambda e: True, lambda fn: None, "")
        info: Any = OPS["modinfo"][0](call)
        assert info["taints"] == ["mixed-copies"] and info["state"] == "LIVE"
    finally:
        for name in public_names("shop"):
            del sys.modules[name]


def test_a_declared_dependency_is_reached_by_a_plain_import(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {
        "urllib9/__init__.py": """
            __livemod__ = {"name": "urllib9", "version": "1.2"}
            from urllib9.pool import Pool
            """,
        "urllib9/pool.py": "class Pool:\n    size = 3\n",
        "requests9/__init__.py": """
            __livemod__ = {"name": "requests9", "depends": ["urllib9>=1"]}
            import urllib9
            from urllib9.pool import Pool
            import importlib.metadata
            DEP_VERSION = importlib.metadata.version("urllib9")
            def size():
                return urllib9.Pool.size + Pool.size
            """,
    })
    wired_host.modprobe("requests9")
    assert wired_host.namespace("requests9").size() == 6
    assert wired_host.namespace("requests9").DEP_VERSION == "1.2"
    rows = {r.name: r for r in wired_host.lsmod()}
    assert rows["requests9"].uses == ("urllib9",)
    assert rows["urllib9"].used_by == ("requests9",)
    assert public_names("urllib9", "requests9") == set()


def test_an_undeclared_livemod_module_is_refused_and_the_host_is_unchanged(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {
        "base9.py": '__livemod__ = {"name": "base9"}\nVALUE = 1\n',
        "greedy9.py": '__livemod__ = {"name": "greedy9"}\nimport base9\n',
    })
    wired_host.insmod(modpath / "base9.py")
    before = (wired_host.lsmod(), set(sys.modules))
    with pytest.raises(livemod.InitError, match="greedy9") as excinfo:
        wired_host.insmod(modpath / "greedy9.py")
    cause = excinfo.value.__cause__
    assert isinstance(cause, ImportError)
    assert "does not declare it" in str(cause) and "'base9'" in str(cause)
    assert (wired_host.lsmod(), set(sys.modules)) == before


def rmmod_takes_out(host: livemod.Host, name: str, keys: list[str],
                    module_ref: weakref.ref[Any]) -> None:
    """rmmod ``name``: each public entry of ``keys`` leaves sys.modules, one event names
    them all, and the module they held is freed (where unloaded code can die at all: not
    on 3.13t, whose immortal functions keep their globals; the rest holds there too)."""
    host.rmmod(name)
    assert [k for k in keys if k in sys.modules] == []
    [event] = [e for e in host.events() if e.kind == "sys-modules-removed"]
    assert all(k in event.message for k in keys), event.message
    gc.collect()
    assert module_ref() is None or _leaks.unverifiable() is not None


def test_sixes_private_name_moves_work_and_public_inserts_are_removed_at_unload(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {
        "six9.py": """
            __livemod__ = {"name": "six9"}
            import sys, types
            moves = types.ModuleType(__name__ + ".moves")
            moves.answer = 42
            sys.modules[__name__ + ".moves"] = moves
            sys.modules["six9_public_alias"] = sys.modules[__name__]
            sys.modules["six9_public_moves"] = moves
            def via_dunder():
                return __import__(__name__ + ".moves", fromlist=["answer"]).answer
            def via_own_name():
                from six9.moves import answer
                return answer
            """,
    })
    wired_host.insmod(modpath / "six9.py")
    view = wired_host.namespace("six9")
    assert view.via_dunder() == 42
    assert view.via_own_name() == 42
    module_ref = weakref.ref(sys.modules["six9_public_alias"])
    rmmod_takes_out(wired_host, "six9", ["six9_public_alias", "six9_public_moves"], module_ref)


def test_public_entries_are_found_even_where_earlier_unloads_saw_a_foreign_module(
    modpath: Path, wired_host: livemod.Host
) -> None:
    # Unloads remember which sys.modules entries held a foreign module (_sysmodules): an
    # entry that held one when another module unloaded and is then overwritten with the
    # module's own, and a module that renamed itself (its name no longer says whose it
    # is), must still be taken out at its own unload.
    sys.modules["lm9_was_foreign"] = foreign = __import__("types").ModuleType("lm9_was_foreign")
    write(modpath, {
        "other9.py": '__livemod__ = {"name": "other9"}\n',
        "takeover9.py": """
            __livemod__ = {"name": "takeover9"}
            import sys
            __name__ = "lm9_renamed"
            sys.modules["lm9_was_foreign"] = sys.modules[__spec__.name]  # its private name
            sys.modules["lm9_renamed_alias"] = sys.modules["lm9_was_foreign"]
            """,
    })
    try:
        wired_host.insmod(modpath / "other9.py")
        wired_host.rmmod("other9")  # its look remembers lm9_was_foreign as foreign
        wired_host.insmod(modpath / "takeover9.py")
        assert sys.modules["lm9_was_foreign"] is not foreign
        wired_host.insmod(modpath / "other9.py")
        wired_host.rmmod("other9")  # sees the renamed module: it must not be remembered
        ref = weakref.ref(sys.modules["lm9_renamed_alias"])
        rmmod_takes_out(wired_host, "takeover9", ["lm9_was_foreign", "lm9_renamed_alias"], ref)
    finally:
        sys.modules.pop("lm9_was_foreign", None)
        sys.modules.pop("lm9_renamed_alias", None)


def test_an_upgrade_runs_the_new_code_of_files_reached_by_own_name(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    assert wired_host.namespace("shop").total(1) == 7
    (modpath / "shop" / "util.py").write_text("X = 100\n")
    (modpath / "shop" / "__init__.py").write_text(
        SHOP["shop/__init__.py"].replace('"2.5.1"', '"2.6.0"').replace("\n        ", "\n"))
    wired_host.replace("shop", modpath / "shop")
    assert wired_host.namespace("shop").total(1) == 100
    assert wired_host.namespace("shop").VERSION_META == "2.6.0"


@pytest.mark.asserts_leak
def test_the_namespace_view_does_not_keep_the_module_alive(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    view = wired_host.namespace("shop")
    sub = view.prices
    assert sub.total(2) == 14 and "prices" in repr(sub)
    ref = weakref.ref(sys.modules[wired_host._table.find("shop").private_name])  # type: ignore[union-attr]
    wired_host.rmmod("shop")
    gc.collect()
    assert ref() is None
    with pytest.raises(livemod.ModuleNotFound, match="'shop' is not loaded"):
        view.total(1)
    with pytest.raises(livemod.ModuleNotFound):
        sub.total(1)


PICKLER = """
import pickle, sys
import livemod
host = livemod.Host(modpath=[sys.argv[1]], name="worker-pool")
host.insmod(sys.argv[1] + "/pick9.py")
ns = host.namespace("pick9")
if sys.argv[2] == "dump":
    sys.stdout.write(pickle.dumps(ns.Point(2, 3)).hex())
else:
    point = pickle.loads(bytes.fromhex(sys.argv[3]))
    print(type(point).__module__, point.x + point.y, type(point) is ns.Point)
host.close()
"""


def test_private_names_are_deterministic_so_a_pickle_crosses_processes(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {"pick9.py": """
        __livemod__ = {"name": "pick9"}
        import dataclasses
        @dataclasses.dataclass
        class Point:
            x: int
            y: int
        """})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", PICKLER, str(modpath), *args],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    blob = run("dump")
    module, total, same = run("load", blob).split()
    assert module.startswith("livemod.mods._h") and module.endswith(".pick9")
    assert (total, same) == ("5", "True")
    assert json.dumps(module)  # a plain string, same in both workers


def test_package_resources_are_read_from_the_modules_folder(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {
        "res9/__init__.py": """
            __livemod__ = {"name": "res9"}
            from importlib.resources import files
            def data():
                return files("res9").joinpath("data.txt").read_text()  # certifi's where()
            """,
        "res9/data.txt": "payload\n",
    })
    wired_host.insmod(modpath / "res9")
    assert wired_host.namespace("res9").data() == "payload\n"


def test_a_view_imports_a_submodule_on_first_use_and_names_what_is_missing(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, SHOP)
    wired_host.insmod(modpath / "shop")
    assert wired_host.namespace("shop").later.LATER == "late"  # not imported by the body
    with pytest.raises(AttributeError, match="no attribute or submodule 'nothing'"):
        wired_host.namespace("shop").nothing  # noqa: B018
