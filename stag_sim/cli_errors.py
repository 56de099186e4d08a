"""How every ``stag-sim`` command reports failure: one line, never a traceback for expected errors."""

from __future__ import annotations

import functools
import sys

import click

from stag_sim.errors import StagSimError


def one_line_errors(fn):
    """Report :class:`StagSimError` as ``error: ...`` on stderr (exit 1) and Ctrl-C as ``interrupted`` (exit 130)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StagSimError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper
