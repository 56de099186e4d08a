"""Small filesystem helpers shared by every atomic writer."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a temporary file (0600) or directory (0700) from :mod:`tempfile` the permissions a normal
    ``open``/``mkdir`` would have (0666 / 0777 minus the umask) before it is renamed into place."""
    os.chmod(Path(path), (0o777 if directory else 0o666) & ~_umask())
