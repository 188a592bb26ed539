"""Fails half way through init, after registering on the hook: nothing may be published."""

__livemod__ = {"name": "bad", "version": "1.0.0", "depends": ["base"]}


def init(mod):
    mod.hook("st.call").add(lambda x: ("bad", x))
    mod.export("half", 1)
    raise RuntimeError("bad fails at init step 2")
