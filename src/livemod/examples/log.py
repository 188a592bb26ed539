"""Keeps the last lines other modules write, like a tiny dmesg."""

__livemod__ = {
    "name": "log",
    "version": "1.2.0",
    "license": "MIT",
    "author": "livemod examples",
    "params": {"size": {"type": "int", "default": 100, "doc": "lines kept"}},
}

import collections
import threading


def init(mod):
    lines = collections.deque(maxlen=mod.params.size)
    lock = threading.Lock()

    def write(text):
        with lock:
            lines.append(text)

    def tail(n=10):
        with lock:
            return list(lines)[-n:]

    mod.export("write", write)
    mod.export("tail", tail)
