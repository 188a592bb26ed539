"""What an unload or upgrade looks at is its own module, whatever else the host holds.

Shortcuts keep rmmod and replace from reading the whole host: the hook table's index of
the hooks each module has implementations on (``_hooktable``), the "used by" map built in
one pass (``_table.used_by_map_unlocked``), the remembered ``sys.modules`` entries of the
other loaded modules (``_sysmodules``), the logging scrub that takes a module's loggers by
name and looks at the rest in a few passes (``_scrub_logging``), and the livemod module
names along each class's MRO remembered per class (``_owned``). Each test here fails if its
shortcut loses something: an implementation left on a hook, a dependent missed, a private
entry left in ``sys.modules``, a logger left waiting in a placeholder, a stale owner.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import livemod
from helpers import write_tree as write
from livemod import _sysmodules
from livemod._owned import Owner

pytestmark = pytest.mark.usefixtures("no_stray_threads")


def on_hooks(name: str, version: str, hooks: list[str], seen: Path | None = None) -> str:
    """A module with one implementation on each of ``hooks``. With ``seen``, its exit
    writes there what each of its hooks calls then: after the unpublish, before the managed
    undo takes each registration back one by one (which would hide a hook the unpublish
    missed)."""
    adds = "\n".join(f"    mod.hook({h!r}).add(impl)" for h in hooks)
    text = (f'__livemod__ = {{"name": {name!r}, "version": {version!r}}}\n\n'
            f"def impl(x):\n    return ({version!r}, x)\n\n"
            f"def init(mod):\n{adds}\n")
    if seen is not None:
        text += (f"\ndef exit(mod):\n    with open({str(seen)!r}, 'a') as out:\n"
                 f"        out.write(repr([mod.hook(h)(0) for h in {hooks!r}]) + '\\n')\n")
    return text


def test_unload_and_upgrade_take_a_module_off_exactly_its_own_hooks(
    modpath: Path, wired_host: livemod.Host, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.txt"
    for i in range(5):  # other modules, each on a hook of its own and on the shared one
        (modpath / f"n{i}.py").write_text(on_hooks(f"n{i}", "1.0.0", [f"own.{i}", "b"]))
        wired_host.insmod(modpath / f"n{i}.py")
    for version, hooks in (("1", ["a", "b"]), ("2", ["b", "c"])):
        (modpath / f"v{version}").mkdir()
        (modpath / f"v{version}" / "m.py").write_text(
            on_hooks("m", f"{version}.0.0", hooks, seen))
    wired_host.insmod(modpath / "v1" / "m.py")

    def exits_saw() -> list[str]:
        lines = seen.read_text().splitlines()
        seen.unlink()
        return lines

    # An unload rolled back (held while it waited) puts the module back on every hook; the
    # upgrade after it finds them there.
    hold = wired_host.hold("m")
    with pytest.raises(livemod.ModuleBusy, match="rolled back"):
        wired_host.rmmod("m", wait=True, timeout=0.05)
    assert [len(wired_host.hook(h)(0)) for h in ("a", "b")] == [1, 6]
    hold.release()
    wired_host.replace("m", modpath / "v2" / "m.py")
    others = [("1.0.0", 0)] * 5
    assert exits_saw() == [repr([[], [*others, ("2.0.0", 0)]])]  # v1's exit: v2 serves
    assert (wired_host.hook("a")(0), wired_host.hook("c")(0)) == ([], [("2.0.0", 0)])
    wired_host.replace("m", modpath / "v1" / "m.py", downgrade=True)  # and back: c is left
    assert exits_saw() == [repr([[*others, ("1.0.0", 0)], []])]  # v2's: on b and c no more
    wired_host.rmmod("m")
    assert exits_saw() == [repr([[], others])]
    assert [wired_host.hook(h)(0) for h in ("a", "c")] == [[], []]
    assert wired_host.hook("b")(0) == others
    assert [wired_host.hook(f"own.{i}")(0) for i in range(5)] == [[("1.0.0", 0)]] * 5


def test_the_used_by_map_is_what_asking_each_module_gives(
    modpath: Path, wired_host: livemod.Host
) -> None:
    # A diamond (top <- left, right <- bottom), a module nobody uses, and an old version of
    # "left" still draining after an upgrade (it still uses what it used).
    write(modpath, {
        "top.py": '__livemod__ = {"name": "top", "version": "1.0.0"}\n',
        "alone.py": '__livemod__ = {"name": "alone", "version": "1.0.0"}\n',
        "left.py": '__livemod__ = {"name": "left", "version": "1.0.0", "depends": ["top"]}\n',
        "left2/left.py": '__livemod__ = {"name": "left", "version": "1.1.0", '
                         '"depends": ["alone"]}\n',
        "right.py": '__livemod__ = {"name": "right", "version": "1.0.0", "depends": ["top"]}\n',
        "bottom.py": '__livemod__ = {"name": "bottom", "version": "1.0.0", '
                     '"depends": ["left", "right"]}\n',
    })
    for name in ("top", "alone", "left", "right", "bottom"):
        wired_host.insmod(modpath / f"{name}.py")
    hold = wired_host.hold("left")
    wired_host.replace("left", modpath / "left2" / "left.py", timeout=0.05)  # 1.0.0 pending
    try:
        table = wired_host._table
        assert [i.info.version for i in table.pending] == ["1.0.0"]
        with table.lock:
            one_by_one = {n: table.used_by_unlocked(i) for n, i in table.names.items()}
        assert table.used_by_map() == one_by_one == {
            "top": ["left", "right"], "alone": ["left"], "left": ["bottom"],
            "right": ["bottom"], "bottom": [],
        }
    finally:
        hold.release()


def test_an_unload_takes_out_its_own_entries_that_other_unloads_remembered(
    modpath: Path, wired_host: livemod.Host
) -> None:
    write(modpath, {
        "pkg9/__init__.py": '__livemod__ = {"name": "pkg9"}\nfrom pkg9 import sub\n',
        "pkg9/sub.py": "X = 1\n",
        "plain9.py": '__livemod__ = {"name": "plain9"}\nY = 2\n',
        "other9.py": '__livemod__ = {"name": "other9"}\n',
    })
    wired_host.insmod(modpath / "pkg9")
    wired_host.insmod(modpath / "plain9.py")
    pkg = wired_host._table.names["pkg9"].private_name
    plain = wired_host._table.names["plain9"].private_name
    wired_host.insmod(modpath / "other9.py")
    wired_host.rmmod("other9")  # its look remembers pkg9's and plain9's entries as theirs
    assert {pkg, pkg + ".sub"} <= set(_sysmodules._own.get(pkg, ()))
    assert plain in _sysmodules._own.get(plain, ())
    wired_host.rmmod("pkg9")
    assert [k for k in (pkg, pkg + ".sub") if k in sys.modules] == []
    assert wired_host.namespace("plain9").Y == 2 and plain in sys.modules  # another's: kept
    wired_host.rmmod("plain9")
    assert plain not in sys.modules


def loggers_under(prefix: str) -> list[str]:
    """Every logger named under ``prefix``: in the manager's table, or waiting in a
    placeholder's list of the loggers below it."""
    manager = logging.Logger.manager
    names = [n for n in manager.loggerDict if isinstance(n, str) and n.startswith(prefix)]
    for value in list(manager.loggerDict.values()):
        if isinstance(value, logging.PlaceHolder):
            names += [lg.name for lg in value.loggerMap if lg.name.startswith(prefix)]
    return sorted(set(names))


def test_a_modules_loggers_go_and_every_other_modules_stay(
    modpath: Path, wired_host: livemod.Host
) -> None:
    # Every module of a host asks for a logger of its own; the one unloaded also has one
    # below it, and a handler of logging's own class on it (which goes with it).
    for i in range(30):
        (modpath / f"lg{i}.py").write_text(
            f'__livemod__ = {{"name": "lg{i}"}}\nimport logging\n'
            f"log = logging.getLogger(__name__)\n")
        wired_host.insmod(modpath / f"lg{i}.py")
    write(modpath, {"mine.py": """
        __livemod__ = {"name": "mine"}
        import logging
        log = logging.getLogger(__name__)
        log.addHandler(logging.NullHandler())
        sub = logging.getLogger(__name__ + ".sub")
        """})
    others = {i: logging.getLogger(wired_host._table.names[f"lg{i}"].private_name)
              for i in range(30)}
    for _ in range(3):  # again and again: what an earlier unload saw clean is still right
        wired_host.insmod(modpath / "mine.py")
        private = wired_host._table.names["mine"].private_name
        assert loggers_under(private) == [private, private + ".sub"]
        wired_host.rmmod("mine")
        assert loggers_under(private) == []
        [event] = [e for e in wired_host.events() if e.kind == "scrubbed"][-1:]
        assert "logger 'mine'" in event.message and "logger 'mine.sub'" in event.message
    assert all(logging.getLogger(wired_host._table.names[f"lg{i}"].private_name) is lg
               for i, lg in others.items())


def test_class_ownership_remembered_per_class_follows_a_new_mro() -> None:
    # _owned remembers, per class, the livemod module names along its MRO (so that a
    # scrub in a host of many modules does not walk every module's classes each time).
    # The answer must be the one a fresh walk gives, for each module asking, and follow
    # the class when its bases are assigned anew.
    base = type("Base", (UserWarning,), {"__module__": "livemod.mods._hz.base"})
    other = type("Other", (UserWarning,), {"__module__": "livemod.mods._hz.other"})
    derived = type("Derived", (base,), {"__module__": "livemod.mods._hz.user"})
    owners = {n: Owner(n, f"livemod.mods._hz.{n}") for n in ("base", "other", "user")}
    for _ in range(2):  # the second time from what was remembered
        assert {n: o.owns(derived) for n, o in owners.items()} == {
            "base": True, "other": False, "user": True}
        owners = {n: Owner(n, f"livemod.mods._hz.{n}") for n in owners}  # a new scrub
    derived.__bases__ = (other,)
    assert {n: o.owns(derived) for n, o in owners.items()} == {
        "base": False, "other": True, "user": True}
