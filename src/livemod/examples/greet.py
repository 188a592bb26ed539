"""Greets whoever makes a request."""

__livemod__ = {
    "name": "greet",
    "version": "1.0.0",
    "license": "MIT",
    "depends": ["log>=1.0"],
    "aliases": ["greeter"],
    "params": {
        "greeting": {"type": "str", "default": "hello", "writable": True,
                     "doc": "word to greet with"},
    },
}
# What `livemod check` calls the module's hooks with (livemod.testing).
__livemod_smoke__ = {"request": [["Ada"]]}

_exiting = False


def init(mod):
    log = mod.require("log")  # records "log used by greet"
    greeting = mod.params.greeting

    def handle(who):
        if _exiting:  # livemod guarantees this never happens; the demo counts it if it did
            mod.log.error("call arrived after exit began")
        log.write(f"greeted {who}")
        return f"{greeting}, {who}"

    mod.hook("request").add(handle)


def exit(mod):
    global _exiting
    _exiting = True
