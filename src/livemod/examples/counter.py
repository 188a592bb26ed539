"""Counts requests, and ticks in a managed background thread."""

__livemod__ = {"name": "counter", "version": "0.3.0", "license": "MIT"}

import itertools

_exiting = False


def init(mod):
    served = itertools.count(1)
    ticks = itertools.count()

    def count(who):
        if _exiting:
            mod.log.error("call arrived after exit began")
        return next(served)

    def tick():
        while not mod.stopping.wait(0.05):  # managed: told to stop, joined at unload
            next(ticks)

    mod.hook("request").add(count, priority=10)  # runs before greet
    mod.thread(tick, name="counter-ticker")


def exit(mod):
    global _exiting
    _exiting = True
