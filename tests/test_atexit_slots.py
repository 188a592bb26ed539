"""atexit registrations made directly by module code: undone at unload, and the slot they
took in atexit's ever-growing table reused by the next load (certifi registers one per load).

Each test runs in a subprocess: what runs at exit can only be seen from outside.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
from pathlib import Path

import pytest

from livemod import _atexit_slots

SCRIPT = """
import atexit, os, sys, livemod
folder = sys.argv[1]
with open(os.path.join(folder, "ax.py"), "w") as f:
    f.write('''__livemod__ = {"name": "ax"}
import atexit, os
def bye():
    os.write(1, b"BYE RAN\\\\n")
def gone():
    os.write(1, b"GONE RAN\\\\n")
def lazy():  # certifi's where(): registers on first call, after the load
    atexit.register(bye)
atexit.register(gone)
atexit.unregister(gone)
''')
host = livemod.Host(modpath=[folder])
sizes = []
for cycle in range(6):
    host.modprobe("ax")
    host.namespace("ax").lazy()
    host.rmmod("ax")
    sizes.append(atexit._ncallbacks())
print("sizes", sizes, flush=True)
host.modprobe("ax")
host.namespace("ax").lazy()
if sys.argv[2] == "app-after-unload":
    host.rmmod("ax")
    atexit.register(lambda: os.write(1, b"APP RAN\\n"))
    host.modprobe("ax")
    host.namespace("ax").lazy()  # registered after APP: must run before it (LIFO)
print("leaks", host.leaks(), flush=True)
os.write(1, b"EXITING\\n")
"""


def run(tmp_path: Path, mode: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), mode],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.splitlines()


@pytest.mark.skipif(not _atexit_slots.PARKING, reason="atexit's table shrinks here")
def test_cycles_reuse_the_slots_of_earlier_loads(tmp_path: Path) -> None:
    lines = run(tmp_path, "plain")
    sizes = eval(lines[0].removeprefix("sizes "))
    assert len(set(sizes)) == 1, sizes  # the first load's slots, taken again each time
    # The live registration runs at exit; the unregistered one and the unloaded ones never.
    assert lines[-2:] == ["EXITING", "BYE RAN"], lines
    assert "GONE RAN" not in lines
    assert "leaks []" in lines, lines


def test_a_reused_slot_keeps_last_in_first_out_order(tmp_path: Path) -> None:
    lines = run(tmp_path, "app-after-unload")
    # ax's callback was registered after the application's: it runs first, so it was not
    # put into the parked slot below the application's callback.
    assert lines[-3:] == ["EXITING", "BYE RAN", "APP RAN"], lines


def test_parked_slots_are_counted() -> None:
    # A caller counting live callbacks subtracts them; never negative, never above the table.
    assert 0 <= _atexit_slots.parked() <= atexit._ncallbacks()  # type: ignore[attr-defined]
