"""How every ``stag-sim`` command reports failure: one line, never a traceback.

A :class:`StagSimError` (bad input, a missing file, an unreachable server) is ``error: <what>`` on stderr, exit 1.
An operating-system error (permission denied, disk full) is ``error: <file>: <reason>``, exit 1. Anything else is
a bug: one line that names the exception and the file its traceback was saved to (``$STAG_SIM_CACHE/crashes``),
exit 1; ``STAG_SIM_DEBUG=1`` re-raises it instead. Ctrl-C is ``interrupted``, exit 130.
"""

from __future__ import annotations

import datetime
import functools
import os
import sys
import traceback

import click

from stag_sim.errors import StagSimError


def _save_traceback(exc: BaseException) -> str:
    """Write the traceback of ``exc`` (with the command line) to a new file; its path, or a reason it could not."""
    from stag_sim.paths import user_cache_dir

    try:
        folder = user_cache_dir() / "crashes"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"{stamp}-{os.getpid()}.txt"
        path.write_text("command: " + " ".join(sys.argv) + "\n\n" + "".join(traceback.format_exception(exc)))
        return str(path)
    except OSError as e:
        return f"(not saved: {e.strerror or e})"


def one_line_errors(fn):
    """Report every failure of a command as one line on stderr (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StagSimError as e:
            click.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except OSError as e:
            where = e.filename if e.filename is not None else ""
            click.echo(f"error: {where + ': ' if where else ''}{e.strerror or e}", err=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - a bug: still one line, with the traceback kept for the report
            if os.environ.get("STAG_SIM_DEBUG"):
                raise
            saved = _save_traceback(e)
            msg = str(e).splitlines()[0] if str(e) else ""
            click.echo(f"error: unexpected {type(e).__name__}{': ' + msg if msg else ''} (a bug in stag-sim; "
                       f"traceback saved to {saved}; STAG_SIM_DEBUG=1 shows it)", err=True)
            sys.exit(1)

    return wrapper
