"""Uses base through mod.require (and declares it)."""

__livemod__ = {"name": "mid", "version": "1.0.0", "depends": ["base>=1.0"]}

tag = "mid"


def init(mod):
    base = mod.require("base")
    mod.hook("st.call").add(lambda x: ("mid", x) if base.value() == "base" else None)


def exit(mod):
    pass
