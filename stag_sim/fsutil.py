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


def check_writable(path: str | os.PathLike, what: str = "--out", directory: bool = True) -> Path:
    """Check, before any work, that ``path`` (a directory, or a file with ``directory=False``) can be created or
    replaced: its nearest existing ancestor is a directory we can create files in, and ``path`` itself, if it
    exists, is of the right kind. Nothing is left behind (a probe file is created and removed). Returns ``path``.

    Raises:
        OutputError: one line naming ``what``, the path and the reason.
    """
    from stag_sim.errors import OutputError

    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise OutputError(f"{what}: {path} is {'a file' if directory else 'a directory'}, expected "
                          f"{'a directory' if directory else 'a file'}")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what}: cannot create {path}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".stag-sim-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{what}: cannot write under {parent} ({e.strerror or e})") from None
    return path


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, what: str = "run"):
    """Hold an exclusive lock on the output ``directory`` (created if missing) while the block runs; a second
    holder is refused at once with one :class:`~stag_sim.errors.OutputError` line naming the process that has it.
    The lock is an ``flock`` on ``<directory>/.stag-sim.lock``: the operating system drops it when the process
    ends, however it ends, so a crashed run never leaves the directory locked."""
    import fcntl

    from stag_sim.errors import OutputError

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".stag-sim.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise OutputError(f"{directory}: another {holder} is writing there; wait for it to finish or choose "
                              "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"stag-sim {what} (pid {os.getpid()})".encode(), 0)
        yield directory
    finally:
        os.close(fd)  # closing drops the lock
