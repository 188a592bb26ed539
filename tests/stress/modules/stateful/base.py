"""Bottom of the dependency chain used by the state machine."""

__livemod__ = {"name": "base", "version": "1.0.0"}


def value():
    return "base"


def init(mod):
    mod.export("value", value)
    mod.hook("st.call").add(lambda x: ("base", x))
