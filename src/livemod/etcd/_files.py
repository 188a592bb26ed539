"""Module files in the engine, by content hash.

A rollout puts the new module file at ``files/<sha256>`` (written once: the same bytes
always land at the same key), with its detached signature when it has one; an agent
writes its workers' current files there too when it registers, so the content of the
generation before the first rollout is in the engine for ``undo``. An agent takes a file
out into its own cache folder (``<cache>/<sha256>/<name>``), checks that the bytes hash to
the key before anything loads them, and hands the workers that path. So a compromised
engine can stop a rollout but not run code: the hash is checked here, and with signatures
on, the workers verify the ``.sig`` beside the file like any other module's.

Only single-file modules go through the engine (etcd keeps values under 1.5 MiB by
default); a package folder is refused with what to do.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from typing import Final

from ..errors import RolloutError
from ..service import file_hash
from ._client import EtcdClient
from ._records import Keys, dump, load

__all__ = ["MAX_FILE", "fetch_file", "put_file"]

#: The largest module file put into the engine (etcd's default request limit is 1.5 MiB,
#: and base64 grows it by a third).
MAX_FILE: Final = 1024 * 1024


def put_file(client: EtcdClient, keys: Keys, path: str) -> str:
    """Put the module at ``path`` into the engine; its sha256.

    Raises:
        RolloutError: a folder, too large, or unreadable.
    """
    if os.path.isdir(path):
        raise RolloutError(f"{path} is a package folder: rollouts carry single-file modules "
                           f"through etcd; install the package on every machine and roll out "
                           f"a one-file module that imports it")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as exc:
        raise RolloutError(f"cannot read module file {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE:
        raise RolloutError(f"module file {path} is over {MAX_FILE} bytes, more than etcd "
                           f"takes in one value")
    sig: str | None = None
    with contextlib.suppress(OSError), open(path + ".sig", "rb") as f:
        sig = base64.b64encode(f.read()).decode()
    sha = file_hash(path)
    record = {"name": os.path.basename(path), "data": base64.b64encode(data).decode(),
              "sig": sig}
    client.create(keys.file(sha), dump(record))
    return sha


def fetch_file(client: EtcdClient, keys: Keys, sha: str, cache: str) -> str:
    """The local path of the module file ``sha`` (taken out of the engine if not cached).

    Raises:
        RolloutError: missing in the engine, or its bytes do not hash to ``sha``.
    """
    folder = os.path.join(cache, sha)
    with contextlib.suppress(OSError):
        names = [n for n in os.listdir(folder) if not n.endswith(".sig")]
        if len(names) == 1 and file_hash(os.path.join(folder, names[0])) == sha:
            return os.path.join(folder, names[0])
    kv = client.get(keys.file(sha))
    record = load(kv, "module file")
    if record is None:
        raise RolloutError(f"module file {sha[:12]} is not in etcd under {keys.file(sha)}; "
                           f"nothing was loaded (roll the change out again)")
    name = os.path.basename(str(record.get("name", ""))) or "module.py"
    try:
        data = base64.b64decode(str(record.get("data", "")))
    except ValueError:
        data = b""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        found = file_hash(temp)
        if found != sha:
            raise RolloutError(f"module file {name} from etcd ({keys.file(sha)}) hashes to "
                               f"{found[:12]}, not to its key {sha[:12]}: the engine's copy "
                               f"is corrupt or was tampered with; nothing was loaded")
        target = os.path.join(folder, name)
        if record.get("sig"):
            with open(target + ".sig", "wb") as f:
                f.write(base64.b64decode(str(record["sig"])))
        os.replace(temp, target)
        return target
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)

