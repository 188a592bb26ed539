"""Signed modules (livemod._signing, Host(signatures=...)): keygen, sign, the three policies,
refusal before any code runs, the same bytes checked and run, upgrades, and the CLI.

Every module here is written at test time into a temporary modpath; its body writes a marker
file, so "no code ran" is a file that does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import livemod
from livemod.cli import EXIT_CODES
from livemod.cli import main as cli

pytest.importorskip(
    "cryptography",
    reason="the sign extra (cryptography) is not installed: it has no wheel for free-threaded "
    "3.13t (pip install 'livemod[sign]' where it has one)",
)

pytestmark = pytest.mark.usefixtures("no_stray_threads")

LIVEMOD = [sys.executable, "-m", "livemod.cli"]


@dataclass
class Env:
    root: Path
    mods: Path  # the modpath
    trusted: Path  # the trusted_keys folder (holds key.pub)
    key: Path  # a trusted private key
    other_key: Path  # a private key whose public half is not trusted
    markers: Path

    def marker(self, name: str) -> Path:
        return self.markers / name

    def single(self, name: str, version: str = "1.0", folder: Path | None = None,
               file: str | None = None) -> Path:
        """A one-file module whose body writes its marker; hook ``<name>.h`` -> version."""
        target = (folder or self.mods) / (file or f"{name}.py")
        target.write_text(
            f'"""Test module {name}."""\n'
            f'__livemod__ = {{"name": "{name}", "version": "{version}"}}\n'
            "import pathlib\n"
            f"pathlib.Path({str(self.marker(name))!r}).write_text({version!r})\n\n\n"
            "def init(mod):\n"
            f"    mod.hook({name + '.h'!r}).add(lambda: {version!r})\n"
        )
        return target

    def package(self, name: str) -> Path:
        """A package: __init__ (marker, manifest) imports sub.py; data.txt is a plain file."""
        pkg = self.mods / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(
            f'__livemod__ = {{"name": "{name}"}}\n'
            "import pathlib\n"
            f"pathlib.Path({str(self.marker(name))!r}).write_text('ran')\n"
            "from . import sub\n\n\n"
            "def init(mod):\n"
            f"    mod.hook({name + '.h'!r}).add(lambda: sub.VALUE)\n"
        )
        (pkg / "sub.py").write_text("VALUE = 'sub'\n")
        (pkg / "data.txt").write_text("some data\n")
        return pkg

    def sign(self, module: Path, key: Path | None = None) -> Path:
        assert cli(["sign", str(module), "--key", str(key or self.key)]) == 0
        return Path(str(module) + ".sig")

    def host(self, policy: str = "enforce", **kwargs: Any) -> livemod.Host:
        kwargs.setdefault("modpath", [self.mods])
        return livemod.Host(signatures=policy, trusted_keys=self.trusted, timeout=2.0,
                            **kwargs)


@pytest.fixture
def env(tmp_path: Path, probe: Any) -> Env:
    mods, trusted, markers = tmp_path / "mods", tmp_path / "trusted", tmp_path / "markers"
    for folder in (mods, trusted, markers):
        folder.mkdir()
    key, other = tmp_path / "key", tmp_path / "other"
    assert cli(["keygen", str(key)]) == 0
    assert cli(["keygen", str(other)]) == 0
    shutil.copy(str(key) + ".pub", trusted / "key.pub")
    return Env(tmp_path, mods, trusted, key, other, markers)


@pytest.fixture
def hosts() -> Iterator[Callable[[livemod.Host], livemod.Host]]:
    """Register hosts to be closed after the test."""
    made: list[livemod.Host] = []
    yield lambda h: made.append(h) or h  # type: ignore[func-returns-value]
    for h in made:
        h.close(timeout=2.0)


# ------------------------------------------------------------------------- keygen and sign


def test_keygen_writes_a_private_key_0600_and_refuses_to_overwrite(tmp_path: Path,
                                                                   capsys: Any) -> None:
    key = tmp_path / "signing"
    assert cli(["keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PUBLIC KEY" in Path(str(key) + ".pub").read_bytes()
    first = key.read_bytes()
    capsys.readouterr()
    assert cli(["keygen", str(key)]) == EXIT_CODES[livemod.LivemodError]
    assert "refusing to overwrite" in capsys.readouterr().err
    assert key.read_bytes() == first


def test_sign_writes_module_sig_covering_every_file(env: Env) -> None:
    single = env.single("solo")
    pkg = env.package("bundle")
    sig = env.sign(single)
    assert sig == env.mods / "solo.py.sig"
    record = json.loads(sig.read_text())
    assert record["module"] == "solo" and set(record["files"]) == {"solo.py"}
    record = json.loads(env.sign(pkg).read_text())
    assert record["module"] == "bundle"
    assert set(record["files"]) == {"__init__.py", "sub.py", "data.txt"}
    assert (env.mods / "bundle.sig").exists()
    assert not env.marker("solo").exists() and not env.marker("bundle").exists()


# ------------------------------------------------------------------------------- enforce


def test_enforce_loads_a_module_signed_by_a_trusted_key(env: Env, hosts: Any) -> None:
    env.sign(env.single("good"))
    env.sign(env.package("goodpkg"))
    host = hosts(env.host())
    host.modprobe("good")
    host.insmod(env.mods / "goodpkg")
    assert host.hook("good.h")() == ["1.0"] and host.hook("goodpkg.h")() == ["sub"]
    assert env.marker("good").exists() and env.marker("goodpkg").exists()
    assert host.tainted == ()


def _unsigned(env: Env) -> Path:
    return env.single("victim")


def _tampered_byte(env: Env) -> Path:
    module = env.single("victim")
    env.sign(module)
    data = bytearray(module.read_bytes())
    data[data.index(b"1.0")] = ord("2")  # one byte: version 1.0 -> 2.0
    module.write_bytes(bytes(data))
    return module


def _tampered_package_file(env: Env) -> Path:
    pkg = env.package("victim")
    env.sign(pkg)
    (pkg / "data.txt").write_text("some dat4\n")  # a file that is not even code
    return pkg


def _tampered_package_code(env: Env) -> Path:
    pkg = env.package("victim")
    env.sign(pkg)
    (pkg / "sub.py").write_text("VALUE = 'sub'\nimport os\n")
    return pkg


def _file_added(env: Env) -> Path:
    pkg = env.package("victim")
    env.sign(pkg)
    (pkg / "extra.py").write_text("EXTRA = 1\n")
    return pkg


def _file_added_in_subfolder(env: Env) -> Path:
    pkg = env.package("victim")
    env.sign(pkg)
    (pkg / "deep").mkdir()
    (pkg / "deep" / "__init__.py").write_text("")
    return pkg


def _file_removed(env: Env) -> Path:
    pkg = env.package("victim")
    env.sign(pkg)
    (pkg / "data.txt").unlink()
    return pkg


def _untrusted_key(env: Env) -> Path:
    module = env.single("victim")
    env.sign(module, env.other_key)
    return module


def _sig_of_another_module(env: Env) -> Path:
    other = env.single("other", folder=env.root)
    sig = env.sign(other)
    module = env.single("victim")
    shutil.copy(sig, str(module) + ".sig")
    return module


def _sig_of_renamed_module(env: Env) -> Path:
    # Signed as "victim", then the file renamed and its manifest name changed to match.
    module = env.single("victim")
    sig = env.sign(module)
    moved = env.single("victim2")
    shutil.copy(sig, str(moved) + ".sig")
    module.unlink()
    sig.unlink()
    return moved


def _garbage_sig(env: Env) -> Path:
    module = env.single("victim")
    Path(str(module) + ".sig").write_bytes(b"\x00garbage\xff not json")
    return module


def _not_a_livemod_sig(env: Env) -> Path:
    module = env.single("victim")
    Path(str(module) + ".sig").write_text('{"format": "gpg", "version": 1}')
    return module


def _forged_signature(env: Env) -> Path:
    # Digests that match the files, a trusted key id, and a signature that is not its.
    module = env.single("victim")
    sig = env.sign(module)
    record = json.loads(sig.read_text())
    other = json.loads(env.sign(env.single("victim", folder=env.root), env.key).read_text())
    assert other["signature"] == record["signature"]  # same name and bytes: same signature
    raw = bytearray(__import__("base64").b64decode(record["signature"]))
    raw[0] ^= 1
    record["signature"] = __import__("base64").b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(record))
    return module


REFUSALS: dict[str, tuple[Callable[[Env], Path], str]] = {
    "unsigned": (_unsigned, "it is unsigned"),
    "one-byte-changed": (_tampered_byte, "changed: victim.py"),
    "package-data-file-changed": (_tampered_package_file, "changed: data.txt"),
    "package-submodule-changed": (_tampered_package_code, "changed: sub.py"),
    "file-added-to-package": (_file_added, "added: extra.py"),
    "file-added-in-a-subfolder": (_file_added_in_subfolder, "added: deep/__init__.py"),
    "file-removed-from-package": (_file_removed, "removed: data.txt"),
    "untrusted-key": (_untrusted_key, "which is not trusted"),
    "sig-for-another-module": (_sig_of_another_module, "its signature is for module 'other'"),
    "sig-of-a-renamed-module": (_sig_of_renamed_module, "its signature is for module 'victim'"),
    "garbage-sig": (_garbage_sig, "unreadable"),
    "not-a-livemod-sig": (_not_a_livemod_sig, "not a livemod signature"),
    "forged-signature": (_forged_signature, "does not verify"),
}


@pytest.mark.parametrize("how", ["insmod", "modprobe"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_enforce_refuses_before_any_code_runs(env: Env, hosts: Any, case: str,
                                              how: str) -> None:
    make, fragment = REFUSALS[case]
    module = make(env)
    name = module.name.removesuffix(".py")
    host = hosts(env.host())
    with pytest.raises(livemod.SignatureError) as caught:
        if how == "insmod":
            host.insmod(module)
        else:
            host.modprobe(name)
    assert fragment in str(caught.value)
    assert f"refusing module {name!r}" in str(caught.value)
    assert caught.value.module == name
    assert not env.marker(name).exists(), "the module's body ran"
    assert host.hook(f"{name}.h")() == []
    assert host.tainted == ()


def test_a_refused_module_leaves_the_host_as_it_was(env: Env, hosts: Any) -> None:
    module = _unsigned(env)
    host = hosts(env.host())
    with pytest.raises(livemod.SignatureError):
        host.insmod(module)
    assert host.lsmod() == []
    env.sign(module)  # fixed: now it loads
    host.insmod(module)
    assert host.hook("victim.h")() == ["1.0"]


@pytest.mark.parametrize("content", [b"[]", b'"text"', b"[" * 100_000 + b"]" * 100_000],
                         ids=["json-list", "json-string", "deeply-nested"])
def test_a_sig_of_the_wrong_json_shape_is_a_signature_error(
    env: Env, hosts: Any, content: bytes
) -> None:
    module = env.single("victim")
    Path(str(module) + ".sig").write_bytes(content)
    host = hosts(env.host())
    with pytest.raises(livemod.SignatureError, match="unreadable"):
        host.insmod(module)
    assert not env.marker("victim").exists()


def test_enforce_refuses_paths_outside_the_modpath(env: Env, hosts: Any) -> None:
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    module = env.single("outsider", folder=elsewhere)
    env.sign(module)
    lookalike = env.root / "modsX"  # a sibling whose name starts like the modpath
    lookalike.mkdir()
    near = env.single("nearby", folder=lookalike)
    env.sign(near)
    host = hosts(env.host())
    for path in (module, env.mods / ".." / "elsewhere" / "outsider.py", near):
        with pytest.raises(livemod.SignatureError, match="outside the modpath"):
            host.insmod(path)
    assert not env.marker("outsider").exists() and not env.marker("nearby").exists()
    assert host.lsmod() == []
    allowed = hosts(env.host(allow_outside_modpath=True))
    allowed.insmod(module)
    assert allowed.hook("outsider.h")() == ["1.0"]
    # ... but the signature is still enforced there.
    unsigned = env.single("stranger", folder=elsewhere)
    with pytest.raises(livemod.SignatureError, match="unsigned"):
        allowed.insmod(unsigned)
    assert not env.marker("stranger").exists()


# ---------------------------------------------------------------------------- warn and off


@pytest.mark.parametrize("case", ["unsigned", "one-byte-changed", "untrusted-key",
                                  "file-added-to-package", "garbage-sig"])
def test_warn_loads_and_taints(env: Env, hosts: Any, case: str) -> None:
    make, fragment = REFUSALS[case]
    module = make(env)
    host = hosts(env.host("warn"))
    started = time.time()
    host.insmod(module)
    assert env.marker("victim").exists()
    [taint] = host.tainted
    assert (taint.flag, taint.module) == ("unsigned-module", "victim")
    assert fragment in taint.reason
    assert started <= taint.when <= time.time()
    assert host.statistics().taints == (taint,)
    # Permanent: unloading the module does not clean the host.
    host.rmmod("victim")
    assert host.tainted == (taint,)


def test_warn_does_not_taint_for_a_good_signature(env: Env, hosts: Any) -> None:
    env.sign(env.single("good"))
    host = hosts(env.host("warn"))
    host.modprobe("good")
    assert host.tainted == ()


@pytest.mark.parametrize("case", ["unsigned", "one-byte-changed", "garbage-sig",
                                  "untrusted-key"])
def test_off_checks_nothing(env: Env, hosts: Any, case: str) -> None:
    module = REFUSALS[case][0](env)
    host = hosts(livemod.Host(modpath=[env.mods]))  # the default policy is off
    host.insmod(module)
    assert env.marker("victim").exists()
    assert host.tainted == ()


def test_an_unknown_policy_is_refused(env: Env) -> None:
    with pytest.raises(livemod.LivemodError, match="'off', 'warn' or 'enforce'"):
        livemod.Host(signatures="strict")  # type: ignore[arg-type]


# ---------------------------------------------------- the check and the load read the same bytes


SWAP_INIT = '''\
__livemod__ = {"name": "swappkg"}
import lm_probe


def init(mod):
    lm_probe.record("swappkg", "waiting")
    if not lm_probe.gate("swappkg.go").wait(10):
        raise TimeoutError("never released")
    from . import sub
    lm_probe.record("swappkg", "sub", sub.VALUE)
    try:
        from . import added
    except ImportError:
        lm_probe.record("swappkg", "added", None)
    else:
        lm_probe.record("swappkg", "added", added.VALUE)
    mod.hook("swappkg.h").add(lambda: sub.VALUE)
'''


def _load_paused(env: Env, hosts: Any, probe: Any, wait_for: Any, policy: str,
                 change: Callable[[Path], None]) -> tuple[livemod.Host, Path]:
    """insmod the signed swappkg in a thread; while its init waits, ``change`` the files on
    disk; then let init import its submodules. Returns the host and the package."""
    pkg = env.mods / "swappkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(SWAP_INIT)
    (pkg / "sub.py").write_text("VALUE = 'checked'\n")
    env.sign(pkg)
    host = hosts(env.host(policy))
    out: dict[str, Any] = {}

    def load() -> None:
        try:
            out["module"] = host.insmod(pkg)
        except BaseException as exc:
            out["error"] = exc

    loader = threading.Thread(target=load, name="swap-loader")
    loader.start()
    try:
        wait_for(lambda: probe.seen("swappkg", "waiting"), timeout=5, what="init to start")
        change(pkg)  # between the check (done) and the import (not yet)
    finally:
        probe.gate("swappkg.go").set()
        loader.join(10)
    assert not loader.is_alive()
    assert "error" not in out, out.get("error")
    return host, pkg


@pytest.mark.parametrize("change", ["rewritten", "replaced-by-rename", "deleted"])
@pytest.mark.parametrize("policy", ["enforce", "off"])
def test_a_submodule_swapped_after_the_check_is_never_run(
    env: Env, hosts: Any, probe: Any, wait_for: Any, policy: str, change: str
) -> None:
    evil = (f"import pathlib\npathlib.Path({str(env.marker('swapped'))!r}).write_text('x')\n"
            "VALUE = 'swapped'\n")

    def swap(pkg: Path) -> None:
        if change == "rewritten":
            (pkg / "sub.py").write_text(evil)
        elif change == "replaced-by-rename":  # a new inode, as editors and deploys do
            (pkg / "sub.py.new").write_text(evil)
            os.replace(pkg / "sub.py.new", pkg / "sub.py")
        else:
            (pkg / "sub.py").unlink()

    host, pkg = _load_paused(env, hosts, probe, wait_for, policy, swap)
    assert probe.seen("swappkg", "sub") == [("swappkg", "sub", "checked")]
    assert not env.marker("swapped").exists()
    assert host.hook("swappkg.h")() == ["checked"]
    host.rmmod("swappkg")
    if policy == "enforce":  # the files on disk now are not what was signed
        what = "removed" if change == "deleted" else "changed"
        with pytest.raises(livemod.SignatureError, match=rf"{what}: sub\.py"):
            host.insmod(pkg)
        assert not env.marker("swapped").exists()


@pytest.mark.parametrize("policy", ["enforce", "off"])
def test_a_submodule_added_after_the_check_is_never_run(
    env: Env, hosts: Any, probe: Any, wait_for: Any, policy: str
) -> None:
    def add(pkg: Path) -> None:
        (pkg / "added.py").write_text(
            f"import pathlib\npathlib.Path({str(env.marker('added'))!r}).write_text('x')\n"
            "VALUE = 'added'\n"
        )

    _load_paused(env, hosts, probe, wait_for, policy, add)
    assert probe.seen("swappkg", "sub") == [("swappkg", "sub", "checked")]
    assert not env.marker("added").exists(), "an unchecked file ran"
    assert probe.seen("swappkg", "added") == [("swappkg", "added", None)]


# --------------------------------------------------------------------------------- upgrade


def test_replace_with_a_tampered_version_is_refused_and_v1_keeps_serving(
    env: Env, hosts: Any
) -> None:
    v1 = env.single("svc", "1.0")
    env.sign(v1)
    host = hosts(env.host())
    host.modprobe("svc")
    env.marker("svc").unlink()
    v2 = env.single("svc", "2.0", file="svc_v2.py")
    env.sign(v2)
    v2.write_text(v2.read_text() + "# one more line\n")
    with pytest.raises(livemod.SignatureError, match=r"changed: svc_v2\.py"):
        host.replace("svc", v2)
    unsigned = env.single("svc", "3.0", file="svc_v3.py")
    with pytest.raises(livemod.SignatureError, match="unsigned"):
        host.replace("svc", unsigned)
    # Its own file, tampered on disk, re-read by replace(name).
    v1.write_text(v1.read_text().replace("1.0", "1.1"))
    with pytest.raises(livemod.SignatureError, match=r"changed: svc\.py"):
        host.replace("svc")
    assert not env.marker("svc").exists(), "a refused version's body ran"
    assert host.hook("svc.h")() == ["1.0"]
    [row] = host.lsmod()
    assert (row.name, row.version, row.state) == ("svc", "1.0", livemod.State.LIVE)
    # A properly signed v2 goes through.
    good = env.single("svc", "2.0", file="svc_good.py")
    env.sign(good)
    host.replace("svc", good)
    assert host.hook("svc.h")() == ["2.0"]
    assert host.tainted == ()


def test_replace_under_warn_taints_for_an_unsigned_version(env: Env, hosts: Any) -> None:
    env.sign(env.single("svc", "1.0"))
    host = hosts(env.host("warn"))
    host.modprobe("svc")
    v2 = env.single("svc", "2.0", file="svc_v2.py")
    host.replace("svc", v2)
    assert host.hook("svc.h")() == ["2.0"]
    assert [(t.flag, t.module) for t in host.tainted] == [("unsigned-module", "svc")]


# ----------------------------------------------------------------------------- the CLI


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIVEMOD, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


def test_cli_keygen_and_sign_end_to_end(env: Env, hosts: Any) -> None:
    key = env.root / "cli-key"
    r = run("keygen", str(key))
    assert r.returncode == 0, r.stderr
    assert "mode 0600" in r.stdout and str(key) + ".pub" in r.stdout
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    again = run("keygen", str(key))
    assert again.returncode == EXIT_CODES[livemod.LivemodError]
    assert "refusing to overwrite" in again.stderr
    trusted = env.root / "cli-trusted"
    trusted.mkdir()
    shutil.copy(str(key) + ".pub", trusted / "cli.pub")

    module = env.single("clisigned")
    env.package("clipkg")
    r = run("sign", str(module), "--key", str(key))
    assert r.returncode == 0, r.stderr
    assert "signed clisigned 1.0 (1 file(s))" in r.stdout
    r = run("sign", "clipkg", "--key", str(key), cwd=env.mods)  # a relative path
    assert r.returncode == 0, r.stderr
    assert "(3 file(s))" in r.stdout and (env.mods / "clipkg.sig").exists()
    assert not env.marker("clisigned").exists(), "signing ran the module"

    host = hosts(livemod.Host(modpath=[env.mods], signatures="enforce", trusted_keys=trusted))
    host.modprobe("clisigned")
    host.modprobe("clipkg")
    assert host.hook("clipkg.h")() == ["sub"]
    # The key made by the fixture is not trusted by this host.
    env.sign(env.single("fixturesigned"))
    with pytest.raises(livemod.SignatureError, match="not trusted"):
        host.modprobe("fixturesigned")

    bad = run("sign", str(module), "--key", str(module))  # not a key
    assert bad.returncode == EXIT_CODES[livemod.SignatureError], bad.stderr
    assert "cannot read an Ed25519 private key" in bad.stderr
    broken = run("sign", str(env.root / "nothing.py"), "--key", str(key))
    assert broken.returncode == EXIT_CODES[livemod.ModuleNotFound], broken.stderr


# --------------------------------------------------------------- the public livemod.signing


def test_the_public_signing_module_signs_and_verifies_without_a_host(env: Env) -> None:
    from livemod import signing

    key, _public = signing.keygen(env.root / "api-key")
    shutil.copy(str(key) + ".pub", env.trusted / "api-key.pub")
    pkg = env.package("apipkg")
    with pytest.raises(livemod.SignatureError, match="unsigned"):
        signing.verify(pkg, env.trusted)
    signed = signing.sign(pkg, key)
    assert signed.info.name == "apipkg"
    assert sorted(signed.files) == ["__init__.py", "data.txt", "sub.py"]
    assert Path(signed.signature) == Path(str(pkg) + ".sig")
    assert signing.verify(pkg, env.trusted).name == "apipkg"
    assert not env.marker("apipkg").exists()  # no code ran
    (pkg / "data.txt").write_text("changed\n")
    with pytest.raises(livemod.SignatureError, match=r"changed: data\.txt"):
        signing.verify(pkg, env.trusted)
    signing.sign(pkg, env.other_key)
    with pytest.raises(livemod.SignatureError, match="not trusted"):
        signing.verify(pkg, env.trusted)


def test_enforce_checks_the_signature_before_reading_the_manifest(env: Env, hosts: Any) -> None:
    # The manifest's cost is the file's to decide: an unsigned file is refused for its
    # signature before its manifest is read (this one is broken and over a limit too).
    hostile = env.mods / "hostile.py"
    aliases = ", ".join(f'"a{i}"' for i in range(5000))
    hostile.write_text(f'__livemod__ = {{"name": "hostile", "aliases": [{aliases}]}}\n')
    host = hosts(env.host("enforce"))
    with pytest.raises(livemod.SignatureError, match="unsigned"):
        host.insmod(str(hostile))
    assert host.lsmod() == []
    off = hosts(env.host("off"))  # without the check, the manifest is read: over a limit
    with pytest.raises(livemod.ManifestError, match="limit aliases"):
        off.insmod(str(hostile))
