"""How the ``livemod`` command shows things to people (``--json`` bypasses all of this)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["dump_json", "event_line", "leaks", "lsmod", "modinfo", "params", "status", "table"]


def dump_json(value: Any, out: TextIO, *, lines: bool = False) -> None:
    """``value`` as JSON: indented, or compact on one line (``lines``: JSON lines)."""
    out.write(json.dumps(value, indent=None if lines else 2, sort_keys=not lines) + "\n")
    if lines:
        out.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO) -> None:
    """Columns as wide as their widest cell, two spaces apart; the last one unpadded."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.write("  ".join([*padded, row[-1]]).rstrip() + "\n")


def lsmod(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    """Like the kernel's: ``Used by`` is a count and then the names. ``Holds`` counts holds
    and pins together (both keep a module from being removed)."""
    tainted = any(r.get("taints") for r in rows)
    table(
        ["Module", "Version", "State", "Holds", "Used by", *(["Taints"] if tainted else [])],
        [[r["name"], r["version"], r["state"], r["holds"] + r.get("pins", 0),
          f"{len(r['used_by'])} {','.join(r['used_by'])}".rstrip(),
          *([",".join(r.get("taints", ())) or "-"] if tainted else [])] for r in rows],
        out,
    )


def modinfo(info: Mapping[str, Any], out: TextIO) -> None:
    """One ``key: value`` line per field and one ``parm:`` line per parameter."""
    for key in ("name", "version", "description", "license", "author", "path"):
        out.write(f"{key + ':':<13}{info.get(key, '')}\n")
    out.write(f"{'depends:':<13}{', '.join(info.get('depends', ())) or '-'}\n")
    out.write(f"{'aliases:':<13}{', '.join(info.get('aliases', ())) or '-'}\n")
    for name, p in info.get("params", {}).items():
        default = "required" if p["required"] else f"default {p['default']!r}"
        flag = ", writable" if p["writable"] else ""
        out.write(f"{'parm:':<13}{name}:{p['type']} ({default}{flag}) {p['doc']}\n")


def params(values: Mapping[str, Mapping[str, Any]], out: TextIO) -> None:
    """Every parameter of a loaded module: name, type, writable, value, description."""
    table(
        ["Parameter", "Type", "Writable", "Value", "Description"],
        [[k, p.get("type", "?"), "yes" if p.get("writable") else "no",
          json.dumps(p.get("value")), p.get("doc", "")] for k, p in values.items()],
        out,
    )


def event_line(event: Mapping[str, Any]) -> str:
    """One event log entry: local time with milliseconds, kind, module and message."""
    when = float(event.get("when", 0.0))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return (f"{stamp}.{int(when % 1 * 1000):03d} {event.get('kind', '?'):<14} "
            f"{event.get('module', '?')}: {event.get('message', '')}")


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    text = f"{hours}h {minutes:02d}m {s:02d}s" if hours or days else f"{minutes}m {s:02d}s"
    return f"{days}d {text}" if days else text


def status(st: Mapping[str, Any], out: TextIO) -> None:
    """The host's identity, uptime, counts and taints."""
    lines = [
        ("host", f"{st['name']} (pid {st['pid']})"),
        ("socket", st.get("socket", "?")),
        ("uptime", _duration(float(st["uptime"]))),
        ("modules", f"{st['modules']} ({st['live']} live), {st['hooks']} hook(s)"),
        ("loads", f"{st['loads']} ({st['failed_loads']} failed)"),
        ("unloads", f"{st['unloads']} ({st['refused_unloads']} refused)"),
        ("leaked", str(st["leaked"])),
        ("leak check", st.get("leak_check", "on")),
        ("tainted", "no" if not st["taints"] else f"yes, {len(st['taints'])} taint(s)"),
    ]
    for key, value in lines:
        out.write(f"{key + ':':<12}{value}\n")
    for t in st["taints"]:
        out.write(f"  {t['flag']} ({t['module']}): {t['reason']}\n")


def leaks(found: Sequence[Mapping[str, Any]], out: TextIO, *, leak_check: str = "on") -> None:
    """Each leaked module with what survives and the referrer chains. ``leak_check`` is the
    host's (``status``): an empty list proves nothing when the check is off or cannot be
    verified (free-threaded 3.13)."""
    if not found and leak_check == "off":
        out.write("no leaks reported: the leak check is off on this host\n")
    elif not found and leak_check != "on":
        out.write(f"no verdict: the leak check {leak_check}\n")
    elif not found:
        out.write("no leaks: every unloaded module's code is gone\n")
    for leak in found:
        out.write(f"{leak['name']} {leak['version']}: "
                  f"{len(leak['survivors'])} object(s) still alive\n")
        for chain in leak["chains"] or leak["survivors"]:
            out.write(f"  {chain}\n")
