"""Small filesystem helpers shared by every atomic writer."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from stag_sim.errors import ValidationError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temporary file (0600) or directory (0700) from :mod:`tempfile` the permissions a normal
    ``open``/``mkdir`` would have (0666 / 0777 minus the umask) before it is renamed into place."""
    os.chmod(Path(path), (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """Open a temporary file beside ``path`` for writing; on success it is fsynced, given normal permissions and
    renamed to ``path``; on any error it is removed and ``path`` is left as it was."""
    if mode not in ("w", "wb"):
        raise ValidationError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        publish_mode(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Build a directory in a hidden temporary sibling of ``target`` and move it into place on success.

    Yields the temporary directory. On success its files are fsynced and it replaces ``target`` (an existing
    ``target`` is moved aside first and deleted after the swap); on any error, Ctrl-C included, the temporary
    directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        publish_mode(tmp, directory=True)
        yield tmp
        for p in tmp.rglob("*"):  # make the data durable before it becomes visible
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, trash / "old")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
