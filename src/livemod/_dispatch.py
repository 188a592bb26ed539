"""Generating a hook's dispatchers: the source of ``call``, ``__call__`` and ``acall``.

Why generated code
------------------

A call through a hook must cost about what a hand-written ``[f(x) for f in impls]`` costs
(issue 12). What costs more than the loop is not the read-side marker alone (two C calls),
it is everything generic: ``*a``/``**k`` packing, ``CALL_FUNCTION_EX`` per implementation,
and on 3.12+ a call that CPython cannot specialise (a function with ``*args`` or ``**kwargs``
never gets ``CALL_PY_EXACT_ARGS``, and an instance's ``__call__`` goes through the type slot).
So for each snapshot we compile (once per *shape*, cached) a factory whose dispatchers

* take the hook's **real signature** when it is known -- from the hook's spec, or, for an
  undeclared hook, from its implementations when they all have the same plain signature
  (``def impl(x)``): a call of any other shape would fail in every implementation anyway,
  so refusing it at the dispatcher's own binding changes nothing a caller could rely on.
  Otherwise they take ``*a, **k`` (the generic shape);
* call the implementations **directly in a list display** (``[_lm_f0(x), _lm_f1(x)]``),
  each with the arguments it takes (a spec'd hook's implementation may take fewer of the
  spec's parameters and is called by name, as pluggy does); past ``UNROLL`` implementations
  a comprehension over one tuple, which costs the same per implementation and does not
  compile a new function per size;
* keep the read-side handshake of ``_hooks`` exactly: announce, check that the snapshot is
  still current, call, leave. A dispatcher whose snapshot was replaced leaves first and then
  forwards to the current one, so a caller may keep ``hook.call`` for ever.

Every name of ours in the generated code starts with ``_lm_``, and spec parameters may not,
so a hook parameter can never shadow the snapshot or the marker.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, Final, Literal

__all__ = ["UNROLL", "Plan", "compile_maker"]

ErrorPolicy = Literal["raise", "isolate"]

#: Up to this many implementations the calls are unrolled; past it a comprehension.
UNROLL: Final = 16

GENERIC_PARAMS: Final = "*_lm_a, **_lm_k"


@functools.lru_cache(maxsize=256)
def compile_maker(plan: Plan) -> Callable[..., tuple[Callable[..., Any], ...]]:
    """The factory for ``plan``, compiled once per distinct plan."""
    source = plan.source()
    namespace: dict[str, Any] = {
        "_lm_isaw": inspect.isawaitable,
        "_lm_CT": types.CoroutineType,
    }
    code = compile(source, f"<livemod hook dispatch ({plan.label()})>", "exec")
    exec(code, namespace)
    maker: Callable[..., tuple[Callable[..., Any], ...]] = namespace["make"]
    return maker


class Plan:
    """Everything the generated source depends on (hashable: it is the cache key).

    Args:
        params: the dispatcher's parameter list (source), ``GENERIC_PARAMS`` if unknown.
        forward: how the dispatcher passes its arguments on to another dispatcher.
        ndefaults: how many spec defaults are bound as ``_lm_d0``...
        calls: per implementation, its argument list (source); one entry in loop form.
        wrappers: per wrapper, its argument list (source).
        is_async: per implementation, whether it is a coroutine function (direct ``await``).
        loop: the comprehension form (``calls`` has one entry, used for every impl).
        policy, firstresult: the hook's error policy and result mode.
        sync_ok: False when a coroutine implementation makes ``hook(...)`` refuse.
    """

    __slots__ = ("_key", "calls", "firstresult", "forward", "is_async", "loop", "ndefaults",
                 "params", "policy", "sync_ok", "wrappers")

    def __init__(
        self, *, params: str, forward: str, ndefaults: int, calls: tuple[str, ...],
        wrappers: tuple[str, ...], is_async: tuple[bool, ...], loop: bool,
        policy: ErrorPolicy, firstresult: bool, sync_ok: bool,
    ) -> None:
        self.params = params
        self.forward = forward
        self.ndefaults = ndefaults
        self.calls = calls
        self.wrappers = wrappers
        self.is_async = is_async
        self.loop = loop
        self.policy: ErrorPolicy = policy
        self.firstresult = firstresult
        self.sync_ok = sync_ok
        self._key = (params, forward, ndefaults, calls, wrappers, is_async, loop, policy,
                     firstresult, sync_ok)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and other._key == self._key

    def label(self) -> str:
        n = "loop" if self.loop else str(len(self.calls))
        return f"{n}, {self.policy}{', first' if self.firstresult else ''}"

    # ------------------------------------------------------------------------- source

    def source(self) -> str:
        generic = self.params == GENERIC_PARAMS
        n = len(self.calls)
        fns = [] if self.loop else [f"_lm_f{i}" for i in range(n)]
        wraps = [f"_lm_w{i}" for i in range(len(self.wrappers))]
        defaults = [f"_lm_d{i}" for i in range(self.ndefaults)]
        head = ", ".join(["_lm_hook", "_lm_snap", "_lm_enter", "_lm_leave", "_lm_fail",
                          "_lm_wrap", "_lm_awrap", "_lm_concurrent", "_lm_fns",
                          *defaults, *fns, *wraps])
        out = [f"def make({head}):"]
        out += self._sync("call", self.params, generic)
        out += self._sync("__call__", _join("_lm_self", self.params), generic)
        out += self._async(generic)
        out.append("    return call, __call__, acall")
        return "\n".join(out) + "\n"

    def _sync(self, name: str, params: str, generic: bool) -> list[str]:
        lines = [f"    def {name}({params}):"]
        if not self.sync_ok:
            return [*lines, "        if _lm_hook._snap is _lm_snap:",
                    "            raise _lm_snap.refusal(_lm_hook.name)",
                    f"        return _lm_hook._snap.call({self.forward})", ""]
        if not self.calls and not self.wrappers:
            # Nothing to reach, so no read-side section; still forwards once there is.
            none = "None" if self.firstresult else "[]"
            return [*lines, "        if _lm_hook._snap is _lm_snap:", f"            return {none}",
                    f"        return _lm_hook._snap.call({self.forward})", ""]
        lines += ["        _lm_enter(None)", "        try:",
                  "            if _lm_hook._snap is _lm_snap:"]
        if generic and not self.wrappers:
            # Calls without keywords are the usual ones: skip passing an empty dict on.
            lines.append("                if not _lm_k:")
            lines += _indent(self._body(False, "*_lm_a"), 20)
        lines += _indent(self._wrapped(False, None), 16)
        lines += ["        finally:", "            _lm_leave()",
                  f"        return _lm_hook._snap.call({self.forward})", ""]
        return lines

    def _async(self, generic: bool) -> list[str]:
        params = _join(self.params, "*, concurrent=False") if not generic else (
            "*_lm_a, concurrent=False, **_lm_k")
        if "*" in self.params.replace("**", "") and not generic:
            params = _join(self.params, "concurrent=False")  # already has keyword-only ones
        packed = "_lm_a, _lm_k" if generic else f"*_lm_pack({self.forward})"
        lines = [
            f"    async def acall({params}):",
            "        if concurrent:",
            f"            return await _lm_concurrent(_lm_hook, {packed})",
            "        _lm_enter(None)", "        try:",
            "            if _lm_hook._snap is _lm_snap:",
        ]
        lines += _indent(self._wrapped(True, None), 16)
        lines += ["        finally:", "            _lm_leave()",
                  f"        return await _lm_hook._snap.acall({self.forward})", ""]
        if not generic:
            # Gives the concurrent path (args, kwargs) from the real signature.
            lines = ["    def _lm_pack(*_lm_a, **_lm_k):", "        return _lm_a, _lm_k",
                     *lines]
        return lines

    def _wrapped(self, is_async: bool, args: str | None) -> list[str]:
        if not self.wrappers:
            return self._body(is_async, args)
        gens = "".join(f"_lm_w{i}({a}), " for i, a in enumerate(self.wrappers))
        if is_async:
            return [
                "async def _lm_inner():",
                *_indent(self._body(True, args), 4),
                f"return await _lm_awrap(_lm_hook, _lm_snap.wraps, ({gens}), _lm_inner)",
            ]
        return [
            "def _lm_inner():",
            *_indent(self._body(False, args), 4),
            f"return _lm_wrap(_lm_hook, _lm_snap.wraps, ({gens}), _lm_inner)",
        ]

    def _body(self, is_async: bool, args: str | None) -> list[str]:
        """Statements that call every implementation and return the hook's result."""
        if self.loop:
            call = f"_lm_f({args if args is not None else self.calls[0]})"
            exprs = [_awaited(call, None) if is_async else call]
            fns = "_lm_fns[0]"
        else:
            exprs = []
            for i, a in enumerate(self.calls):
                call = f"_lm_f{i}({args if args is not None else a})"
                exprs.append(_awaited(call, self.is_async[i]) if is_async else call)
            fns = ""
        none = "None" if self.firstresult else "[]"
        if self.loop:
            return self._loop_body(exprs[0], fns, none)
        if not exprs:
            return [f"return {none}"]
        if self.policy == "raise" and not self.firstresult:
            return [f"return [{', '.join(exprs)}]"]
        lines = [] if self.firstresult else ["_lm_out = []"]
        for i, e in enumerate(exprs):
            lines += _one(i, e, self.policy, self.firstresult)
        lines.append(f"return {'None' if self.firstresult else '_lm_out'}")
        return lines

    def _loop_body(self, expr: str, fns: str, none: str) -> list[str]:
        if self.policy == "raise" and not self.firstresult:
            return [f"return [{expr} for _lm_f in {fns}]"]
        lines = [] if self.firstresult else ["_lm_out = []"]
        lines.append(f"for _lm_i, _lm_f in enumerate({fns}):")
        lines += _indent(_one("_lm_i", expr, self.policy, self.firstresult), 4)
        lines.append(f"return {none if self.firstresult else '_lm_out'}")
        return lines


def _one(index: int | str, expr: str, policy: ErrorPolicy, firstresult: bool) -> list[str]:
    """Statements for one implementation under ``policy`` (in an unrolled or loop body)."""
    if policy == "raise":
        return [f"_lm_r = {expr}", "if _lm_r is not None:", "    return _lm_r"]
    if firstresult:
        return ["try:", f"    _lm_r = {expr}", "except Exception as _lm_e:",
                f"    _lm_fail({index}, _lm_e)", "else:", "    if _lm_r is not None:",
                "        return _lm_r"]
    return ["try:", f"    _lm_out.append({expr})", "except Exception as _lm_e:",
            f"    _lm_fail({index}, _lm_e)"]


def _awaited(call: str, is_async: bool | None) -> str:
    """``call`` awaited in ``acall``: directly for a coroutine function, else if awaitable."""
    if is_async:
        return f"(await {call})"
    return (f"(await _lm_v if type(_lm_v := {call}) is _lm_CT or _lm_isaw(_lm_v) "
            f"else _lm_v)")


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _indent(lines: list[str], by: int) -> list[str]:
    pad = " " * by
    return [pad + line for line in lines]
