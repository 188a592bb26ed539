"""Where loaded modules live: ``livemod.mods.<name>`` inside a module resolves, for the host
that loaded it, to that host's module ``<name>``. Outside livemod modules there is no host to
ask, so importing from here is an error that says what to do instead."""

from __future__ import annotations


def __getattr__(name: str) -> object:
    raise ImportError(
        f"livemod.mods.{name} can only be imported from inside a module loaded by a "
        f"livemod.Host; from host code use host.hold({name!r}) or the module's exports"
    )
