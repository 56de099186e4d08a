"""Run details: what an evaluation ran (version, checkout, seeds, command line) and where (time, machine).

:func:`run_details` is cheap (a few ms, two short ``git`` calls at most) and never fails: a fact it cannot learn is
left out (no git commit outside a git work tree) or says why (the torch device while torch is not imported).
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

GIT_TIMEOUT_S = 5.0  # [s] each git call; a hung or slow git leaves the commit out instead of stalling the report


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """The commit of the git work tree that holds ``path`` (default: this package's source), with ``+dirty`` when
    tracked files are modified; None when the source is not a tracked file of a work tree (an installed copy),
    git is missing, or git fails."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    # tracked here, not merely below some other repository (a site-packages inside a checkout)
    if not git("ls-files", "--", "."):
        return None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if status else "")


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _torch() -> dict:
    """torch's version, and its device only when torch is already imported (importing it costs seconds)."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            from importlib.metadata import version

            return {"torch": version("torch"), "device": "not checked (torch was not imported by this run)"}
        except Exception:  # noqa: BLE001 - not installed, or broken metadata: say nothing
            return {}
    try:
        cuda = torch.cuda.is_available()
        device = f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"
    except Exception as e:  # noqa: BLE001 - a broken driver must not fail the report
        device = f"unknown ({type(e).__name__})"
    return {"torch": str(getattr(torch, "__version__", "?")), "device": device}


def run_details(seeds=None, argv: list[str] | None = None) -> dict:
    """What ran and where, for results.json (``"run"``) and the top of report.html.

    Keys: ``stag_sim_version``, ``git_commit`` (only in a git work tree; ``+dirty`` when modified), ``seeds`` (the
    sorted distinct ``seeds`` given, None entries dropped), ``command`` (``sys.argv`` as a shell line), ``date_utc``
    (ISO 8601), ``hostname``, ``platform``, ``python``, ``cpu``, ``cpu_count``, ``torch`` and ``device`` (see
    :func:`_torch`)."""
    from stag_sim.version import __version__

    info: dict = {"stag_sim_version": __version__}
    commit = git_commit()
    if commit:
        info["git_commit"] = commit
    info["seeds"] = sorted({int(s) for s in (seeds or ()) if s is not None})
    info["command"] = shlex.join(argv if argv is not None else sys.argv)
    info["date_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info.update(hostname=platform.node(), platform=platform.platform(), python=platform.python_version(),
                cpu=_cpu_model(), cpu_count=os.cpu_count())
    info.update(_torch())
    return info
