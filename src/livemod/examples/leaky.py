"""Leaves a callback in the application's registry and never takes it back."""

__livemod__ = {"name": "leaky", "version": "0.1.0", "license": "MIT"}

from livemod import demo


def on_event(event):
    return event


def init(mod):
    # Unmanaged: the application's global list keeps this function (and so the whole
    # module) alive after unload. livemod's leak check finds and names it.
    demo.CALLBACKS.append(on_event)
