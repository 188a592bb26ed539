"""Uses mid through an import of livemod.mods.mid (and declares it)."""

__livemod__ = {"name": "top", "version": "1.0.0", "depends": ["mid"]}

from livemod.mods.mid import tag


def init(mod):
    mod.hook("st.call").add(lambda x: ("top", x) if tag == "mid" else None)
