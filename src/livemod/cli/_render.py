"""How the ``livemod`` command shows things to people (``--json`` bypasses all of this)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["config", "depmod", "dump_json", "event_line", "hooks", "leaks", "lsmod", "modinfo",
           "params", "status", "table"]


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
    """Like the kernel's: ``Size`` is the bytes the module's objects hold, ``Used by`` a
    count and then the names. ``Holds`` counts holds and pins together (both keep a module
    from being removed)."""
    tainted = any(r.get("taints") for r in rows)
    native = any(r.get("native") for r in rows)  # a column only when some module has any
    table(
        ["Module", "Version", "State", "Size", "Holds", "Used by",
         *(["Native"] if native else []), *(["Taints"] if tainted else [])],
        [[r["name"], r["version"], r["state"], r.get("size", 0), r["holds"] + r.get("pins", 0),
          f"{len(r['used_by'])} {','.join(r['used_by'])}".rstrip(),
          *([_native(r.get("native", ()))] if native else []),
          *([",".join(r.get("taints", ())) or "-"] if tainted else [])] for r in rows],
        out,
    )


def _native(extensions: Sequence[str]) -> str:
    """lsmod's Native cell: how many extension modules are loaded (their libraries stay
    mapped after an unload)."""
    return f"{len(extensions)} ext" if extensions else "-"


def modinfo(info: Mapping[str, Any], out: TextIO) -> None:
    """kmod's layout and field names: ``filename``, ``name``, ``version``, ``description``,
    ``license``, ``author``, one ``alias`` line per alias, ``depends`` (comma-separated) and
    one ``parm`` line per parameter. Empty fields are left out, as kmod leaves them out.
    livemod adds one ``native`` line per extension module file (native code), and for a
    loaded module its ``state`` and the ``taints`` it caused (``mixed-copies``...)."""
    fields: list[tuple[str, object]] = [
        ("filename", info.get("path")), ("name", info.get("name")),
        ("version", info.get("version")), ("description", info.get("description")),
        ("license", info.get("license")), ("author", info.get("author")),
        *(("alias", a) for a in info.get("aliases", ())),
        ("depends", ",".join(info.get("depends", ()))),
    ]
    for name, p in info.get("params", {}).items():
        default = "required" if p["required"] else f"default {p['default']!r}"
        flag = ", writable" if p["writable"] else ""
        doc = f" {p['doc']}" if p.get("doc") else ""
        fields.append(("parm", f"{name}:{p['type']} ({default}{flag}){doc}"))
    loaded = set(info.get("native_loaded", ()))
    for rel in info.get("native", ()):
        dotted = f"{info.get('name')}.{rel.split('.', 1)[0].replace('/', '.')}"
        note = " (loaded; stays mapped after an unload)" if dotted in loaded else ""
        fields.append(("native", f"{rel}{note}"))
    fields += [("state", info.get("state")), ("taints", ",".join(info.get("taints", ())))]
    for key, value in fields:
        if value not in (None, ""):
            out.write(f"{key + ':':<13}{value}\n")


def depmod(report: Any, out: TextIO) -> None:
    """``depmod``'s report: counts aligned in one column, lists counted, seconds rounded."""
    if not isinstance(report, Mapping):
        out.write(f"{report}\n")
        return
    rows: list[tuple[str, str]] = []
    for key, value in report.items():
        if key == "seconds" and isinstance(value, int | float):
            shown = f"{value:.3f} s"
        elif isinstance(value, list | dict):
            shown = str(len(value))
        else:
            shown = str(value)
        rows.append((key.replace("_", " "), shown))
    width = max(len(k) for k, _ in rows) + 2
    for key, shown in rows:
        out.write(f"{key + ':':<{width}}{shown}\n")
    broken = report.get("broken")
    for item in broken if isinstance(broken, list) else ():
        path, why = (item if isinstance(item, list) and len(item) == 2 else (item, ""))
        out.write(f"  broken: {path}: {why}\n")


def config(record: Mapping[str, Any], out: TextIO) -> None:
    """``modprobe -c``: the effective configuration, one kmod-style line per setting."""
    out.write(f"# {record.get('config') or 'no configuration file'}\n")
    for folder in record.get("modpath", ()):
        out.write(f"modpath {folder}\n")
    for alias, target in record.get("aliases", {}).items():
        out.write(f"alias {alias} {target}\n")
    for name in record.get("blacklist", ()):
        out.write(f"blacklist {name}\n")
    for module, options in record.get("options", {}).items():
        values = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                          for k, v in options.items())
        out.write(f"options {module} {values}\n")
    for module, deps in record.get("softdeps", {}).items():
        parts = [f"pre: {' '.join(deps['pre'])}" if deps.get("pre") else "",
                 f"post: {' '.join(deps['post'])}" if deps.get("post") else ""]
        out.write(f"softdep {module} {' '.join(p for p in parts if p)}\n")
    for name in record.get("load", ()):
        out.write(f"load {name}\n")


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
        ("leaked", _leaked(st)),
        ("tainted", "no" if not st["taints"] else f"yes, {len(st['taints'])} taint(s)"),
    ]
    for key, value in lines:
        out.write(f"{key + ':':<10}{value}\n")
    for t in st["taints"]:
        out.write(f"  {t['flag']} ({t['module']}): {t['reason']}\n")


def _leaked(st: Mapping[str, Any]) -> str:
    """The leak count, or why there is none to trust: the check is off, or it cannot give a
    verdict on the host's interpreter (free-threaded 3.13)."""
    check = st.get("leak_check", "on")
    if check == "on":
        return str(st["leaked"])
    return f"{st['leaked']} (leak check off)" if check == "off" else str(check)


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


def hooks(found: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    """Each hook: its spec (signature, firstresult, first doc line), then its implementations
    in call order (wrappers marked)."""
    if not found:
        out.write("no hooks with a spec or an implementation\n")
    for hook in found:
        spec = hook["spec"]
        if spec is None:
            out.write(f"{hook['name']}  (no spec)\n")
        else:
            first = "  firstresult" if spec["firstresult"] else ""
            out.write(f"{hook['name']}{spec['signature']}{first}\n")
            if spec["doc"]:
                out.write(f"    {spec['doc'].splitlines()[0]}\n")
        if hook.get("historic"):
            out.write(f"    {hook['historic']} remembered historic call(s)\n")
        for i, impl in enumerate(hook["implementations"], 1):
            marks = [m for m, on in (("wrapper", impl["wrapper"]), ("async", impl["async"]))
                     if on]
            extra = f" [{', '.join(marks)}]" if marks else ""
            out.write(f"  {i}. {impl['impl']} (priority {impl['priority']}){extra}\n")
