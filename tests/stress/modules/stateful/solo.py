"""No declared dependencies; uses base if it happens to be loaded; hands out pinned objects."""

__livemod__ = {"name": "solo", "version": "2.0.0", "aliases": ["lonely"]}

import contextlib

import livemod


class Packet:
    """Carries a callback into this module, as a network packet might."""

    def __init__(self, callback):
        self.callback = callback


def init(mod):
    with contextlib.suppress(livemod.DependencyError):
        mod.require("base")  # an edge "base used by solo" only when base is live

    def make_pinned():
        packet = Packet(lambda: "solo")
        mod.pin(packet)
        return packet

    mod.export("make_pinned", make_pinned)
    mod.hook("st.call").add(lambda x: ("solo", x), priority=10)


def exit(mod):
    pass
