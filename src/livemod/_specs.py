"""Hook specs (pluggy parity): a declared signature, how each implementation is called, wrappers.

A spec is a plain function whose signature is the hook's and whose docstring documents it.
An implementation may take fewer of the spec's parameters (it is called by name with the ones
it takes, as pluggy does); a required parameter the spec does not have is a ``SpecError`` at
``add()``. Everything here produces *source text* for ``_dispatch`` (the dispatcher's
parameter list and each implementation's argument list), so the checks cost nothing per call.

Wrappers (``add(fn, wrapper=True)``) are generator functions around the other
implementations, as pluggy's new-style wrappers: the code before ``result = yield`` runs
first (outermost wrapper first), the yield receives the result (or raises the exception the
implementations raised), and what the wrapper returns becomes the result.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, Protocol, final

from .errors import SpecError

__all__ = ["Spec", "arun_wrapped", "run_wrapped", "uniform_shape"]

_P = inspect.Parameter
_RESERVED: Final = ("concurrent",)  # acall's own keyword


@final
class Spec:
    """A hook's declared signature (from ``host.spec``)."""

    __slots__ = ("defaults", "doc", "firstresult", "fn", "forward", "hook", "kinds", "names",
                 "params", "signature")

    def __init__(self, hook: str, fn: Callable[..., Any], firstresult: bool) -> None:
        self.hook = hook
        self.fn = fn
        self.firstresult = firstresult
        self.doc = inspect.getdoc(fn) or ""
        where = f"spec {getattr(fn, '__qualname__', fn)!r} of hook {hook!r}"
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: its signature cannot be read ({exc}); declare the "
                            f"spec as a plain Python function", hook=hook) from None
        # Without annotations: this is what messages and ``livemod hooks`` show.
        self.signature = str(sig.replace(
            parameters=[p.replace(annotation=_P.empty) for p in sig.parameters.values()],
            return_annotation=inspect.Signature.empty,
        ))
        params: list[str] = []
        forward: list[str] = []
        defaults: list[Any] = []
        names: list[str] = []
        kinds: list[Any] = []
        seen_kwonly = False
        posonly = False
        for p in sig.parameters.values():
            if p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD):
                raise SpecError(f"{where}: parameter {p.name!r} is *args/**kwargs; a spec names "
                                f"each parameter (list them one by one)", hook=hook)
            if p.name.startswith("_lm_") or p.name in _RESERVED:
                raise SpecError(f"{where}: parameter name {p.name!r} is reserved by livemod; "
                                f"rename it", hook=hook)
            if p.kind is _P.POSITIONAL_ONLY:
                posonly = True
            elif posonly:
                params.append("/")
                posonly = False
            if p.kind is _P.KEYWORD_ONLY and not seen_kwonly:
                if posonly:
                    params.append("/")
                    posonly = False
                params.append("*")
                seen_kwonly = True
            text = p.name
            if p.default is not _P.empty:
                text += f"=_lm_d{len(defaults)}"
                defaults.append(p.default)
            params.append(text)
            forward.append(f"{p.name}={p.name}" if p.kind is _P.KEYWORD_ONLY else p.name)
            names.append(p.name)
            kinds.append(p.kind)
        if posonly:
            params.append("/")
        self.params = ", ".join(params)
        self.forward = ", ".join(forward)
        self.defaults = tuple(defaults)
        self.names = tuple(names)
        self.kinds = tuple(kinds)

    def args_for(self, fn: Callable[..., Any], owner: str) -> str:
        """The argument list (source) that calls ``fn`` with the spec's parameters it takes.

        Raises:
            SpecError: ``fn`` requires a parameter the spec does not have, or has a
                positional-only parameter that does not line up with the spec's.
        """
        what = f"hook {self.hook!r}: implementation {_describe(fn)} of {owner!r}"
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return self.forward  # no signature to read (a builtin): pass everything
        out: list[str] = []
        passed: set[str] = set()
        positional = True  # still passing the spec's parameters positionally, in order
        for index, p in enumerate(sig.parameters.values()):
            if p.kind is _P.VAR_POSITIONAL:
                positional = False
                continue
            if p.kind is _P.VAR_KEYWORD:
                out += [f"{n}={n}" for n in self.names if n not in passed]
                passed.update(self.names)
                continue
            if p.name not in self.names:
                if p.default is not _P.empty:
                    positional = False
                    continue  # keeps its default, as pluggy does
                raise SpecError(
                    f"{what} takes parameter {p.name!r}, which the spec "
                    f"{self.hook}{self.signature} does not have (remove it, give it a "
                    f"default, or add it to the spec)",
                    hook=self.hook,
                )
            lines_up = (positional and index < len(self.names) and self.names[index] == p.name
                        and self.kinds[index] is not _P.KEYWORD_ONLY
                        and p.kind is not _P.KEYWORD_ONLY)
            if lines_up:
                out.append(p.name)
            elif p.kind is _P.POSITIONAL_ONLY:
                raise SpecError(
                    f"{what}: positional-only parameter {p.name!r} is not in its place in "
                    f"the spec {self.hook}{self.signature} (make it a normal parameter, or "
                    f"reorder it)",
                    hook=self.hook,
                )
            else:
                positional = False
                out.append(f"{p.name}={p.name}")
            passed.add(p.name)
        return ", ".join(out)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The spec's parameters by name for one call (historic and concurrent calls)."""
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)


def check_wrapper(hook: str, fn: Callable[..., Any], owner: str) -> None:
    """A wrapper must be a generator function (``result = yield`` inside)."""
    target = getattr(fn, "__func__", fn)
    if not inspect.isgeneratorfunction(target):
        raise SpecError(
            f"hook {hook!r}: wrapper {_describe(fn)} of {owner!r} is not a generator function; "
            f"a wrapper runs its code up to `result = yield`, then returns the result "
            f"(add the yield, or register it without wrapper=True)", hook=hook,
        )


def shape_key(fn: Callable[..., Any]) -> tuple[int, int, tuple[str, ...]] | None:
    """What ``uniform_shape`` compares of one function: equal keys, the same plain
    signature; None if it is not plain. Kept per implementation, so that a hook with
    many compares them in one C-level pass (a set of keys) on every publish."""
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if (code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
            or code.co_kwonlyargcount or fn.__defaults__ or fn.__kwdefaults__):
        return None
    return code.co_argcount, code.co_posonlyargcount, code.co_varnames[:code.co_argcount]


def uniform_shape(fns: list[Callable[..., Any]]) -> tuple[str, str] | None:
    """(params, forward) when every function has the same plain signature, else None.

    Plain: a Python function with only positional-or-keyword (or positional-only)
    parameters, no defaults, no ``*args``/``**kwargs``. A call of another shape would fail
    in every one of them, so a dispatcher with exactly this signature refuses nothing that
    could have worked.
    """
    code0: types.CodeType | None = None
    for fn in fns:
        if type(fn) is not types.FunctionType:
            return None
        code = fn.__code__
        if (code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
                or code.co_kwonlyargcount or fn.__defaults__ or fn.__kwdefaults__):
            return None
        if code0 is None:
            code0 = code
        elif (code.co_argcount != code0.co_argcount
              or code.co_posonlyargcount != code0.co_posonlyargcount
              or code.co_varnames[:code.co_argcount]
              != code0.co_varnames[:code0.co_argcount]):
            return None
    if code0 is None:
        return None
    names = list(code0.co_varnames[:code0.co_argcount])
    if any(n.startswith("_lm_") or n in _RESERVED for n in names):
        return None
    forward = ", ".join(names)
    if code0.co_posonlyargcount:
        names.insert(code0.co_posonlyargcount, "/")
    return ", ".join(names), forward


def _describe(fn: Callable[..., Any]) -> str:
    return repr(getattr(fn, "__qualname__", fn))


# ------------------------------------------------------------------------------ wrappers

_Gen = Generator[None, Any, Any]


class Hook(Protocol):  # what the wrappers' messages need (no import of _hooks: a leaf)
    @property
    def name(self) -> str: ...


class Impl(Protocol):
    def describe(self) -> str: ...


def run_wrapped(hook: Hook, wraps: tuple[Impl, ...], gens: tuple[_Gen, ...],
                inner: Callable[[], Any]) -> Any:
    """Run ``inner`` inside the wrapper generators ``gens`` (outermost first)."""
    started: list[_Gen] = []
    result: Any = None
    error: BaseException | None = None
    try:
        for impl, gen in zip(wraps, gens, strict=True):
            _start(hook, impl, gen)
            started.append(gen)
        result = inner()
    except BaseException as exc:
        error = exc
    return _unwind(hook, wraps, started, result, error)


async def arun_wrapped(hook: Hook, wraps: tuple[Impl, ...], gens: tuple[_Gen, ...],
                       inner: Callable[[], Awaitable[Any]]) -> Any:
    """``run_wrapped`` for ``acall``: the wrappers stay plain generators."""
    started: list[_Gen] = []
    result: Any = None
    error: BaseException | None = None
    try:
        for impl, gen in zip(wraps, gens, strict=True):
            _start(hook, impl, gen)
            started.append(gen)
        result = await inner()
    except BaseException as exc:
        error = exc
    return _unwind(hook, wraps, started, result, error)


def _start(hook: Hook, impl: Impl, gen: _Gen) -> None:
    try:
        next(gen)
    except StopIteration:
        raise RuntimeError(
            f"hook {hook.name!r}: wrapper {impl.describe()} returned without yielding; a "
            f"wrapper must reach `result = yield` exactly once"
        ) from None


def _unwind(hook: Hook, wraps: tuple[Impl, ...], started: list[_Gen], result: Any,
            error: BaseException | None) -> Any:
    try:
        for index in range(len(started) - 1, -1, -1):
            gen = started[index]
            try:
                if error is not None:
                    gen.throw(error)
                else:
                    gen.send(result)
            except StopIteration as stop:
                result, error = stop.value, None
            except BaseException as exc:
                error = exc
            else:
                gen.close()
                error = RuntimeError(
                    f"hook {hook.name!r}: wrapper {wraps[index].describe()} yielded more "
                    f"than once; a wrapper yields exactly once"
                )
        if error is not None:
            raise error
        return result
    finally:
        del error, started
