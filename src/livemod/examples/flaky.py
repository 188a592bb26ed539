"""Registers a hook and a thread, then fails half way through init."""

__livemod__ = {"name": "flaky", "version": "0.1.0", "license": "MIT"}


def handle(who):
    return f"flaky saw {who}"  # never reachable: the load is rolled back


def init(mod):
    mod.hook("request").add(handle)
    mod.thread(lambda: mod.stopping.wait())
    mod.on_exit(lambda: mod.log.info("flaky: managed cleanup ran"))
    raise RuntimeError("database unreachable")  # half way: nothing above is ever visible
