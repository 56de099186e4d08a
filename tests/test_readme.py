"""The README's commands stay true.

Fast (default suite): every ``stag-sim`` line of the README's bash blocks parses against the real command line (each
option and sub-command exists, choices are valid), every ``python examples/... / benchmarks/...`` line names a file
that takes the flags shown, every extra in a ``pip install`` line exists, every Python block compiles.

Slow (CI's docs step): the README's command lines of this project's tools (``stag-sim``, and the
``carla-driver-interface`` policy server the egodriver example talks to) run as written, in README order, in a fresh
working directory (``scenarios/`` and ``../shared`` as beside a clone); a line ending in ``&`` is started as a
server, waited for on its ``--port`` and stopped at the end. Each must exit 0; the few in :data:`NOT_RUN` are not
run, each with its reason.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: README lines the docs step does not run, and why (a prefix of the line -> reason)
NOT_RUN = {
    "stag-sim eval --agent mypkg.planner:Planner": "a placeholder for the user's own planner package",
    "stag-sim ingest nuscenes": "needs the nuScenes dataset (tests/test_nuscenes_real.py ingests the shared keyframe)",
    "stag-sim train-refiner": "SCENE_CACHE is a placeholder; training takes hours "
                              "(tests/test_refiner_train.py trains a tiny model)",
}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def readme_commands(background: bool = False) -> list:
    """Every command of the README's bash blocks: comments dropped, ``a && b`` / ``a ; b`` split, a trailing ``&``
    removed (``background=True``: (command, ran in the background) pairs)."""
    out = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            for part in re.split(r"\s(?:&&|;)\s", line):
                part = part.strip()
                bg = part.endswith("&")
                part = part.removesuffix("&").strip()
                if part:
                    out.append((part, bg) if background else part)
    return out


def _stag_sim_lines() -> list[str]:
    return [c for c in readme_commands() if c.startswith("stag-sim ")]


def test_the_readme_has_the_commands_a_newcomer_needs():
    cmds = readme_commands()
    assert cmds[:2] == ["pip install torch==2.13.0", "pip install -e ."] and cmds[2] == "stag-sim demo"
    assert "pytest" in cmds  # the test command CI runs
    assert len(_stag_sim_lines()) >= 20


@pytest.mark.parametrize("line", [c for c in _stag_sim_lines() if "..." not in c])
def test_every_stag_sim_line_parses(line):
    from stag_sim.cli import main

    args = shlex.split(line)[1:]
    cmd, name, parent = main, "stag-sim", None
    while True:
        try:
            ctx = cmd.make_context(name, list(args), parent=parent)
        except click.BadParameter as e:  # a path that must exist on the reader's machine is fine here
            assert "does not exist" in str(e), f"{line}: {e}"
            return
        except click.UsageError as e:
            raise AssertionError(f"README: {line}: {e}") from None
        if not isinstance(cmd, click.Group):
            return
        name, cmd, args = cmd.resolve_command(ctx, ctx._protected_args + ctx.args)
        parent = ctx


@pytest.mark.parametrize("line", [c for c in readme_commands() if c.startswith("python ")])
def test_every_script_line_names_a_script_that_takes_its_flags(line):
    words = shlex.split(line)
    script = ROOT / words[1]
    assert script.is_file(), f"README: {line}: no {words[1]}"
    source = script.read_text()
    for flag in (w.split("=")[0].strip("[]") for w in words[2:] if w.lstrip("[").startswith("--")):
        assert f'"{flag}"' in source or f"'{flag}'" in source, f"README: {line}: {words[1]} has no {flag}"


def test_every_pip_extra_exists():
    setup = (ROOT / "setup.py").read_text()
    extras = set(re.findall(r'^\s+"([a-z]+)": \[', setup, flags=re.M))
    named = {e for c in readme_commands() if c.startswith("pip install") for m in re.findall(r"\[([a-z,]+)\]", c)
             for e in m.split(",")}
    assert named and named <= extras, f"README names extras {sorted(named - extras)} that setup.py lacks"


def test_every_python_block_compiles():
    for block in _blocks("python"):
        ast.parse(block)


@pytest.mark.slow
def test_the_readme_stag_sim_lines_run(tmp_path):
    """CI's docs step: every README `stag-sim` line not in NOT_RUN, as written, in order, exit status 0."""
    work = tmp_path / "clone"
    work.mkdir()
    (work / "scenarios").symlink_to(ROOT / "scenarios")
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp_path / "shared").symlink_to(shared)
    bindir = Path(sys.executable).parent
    ran, skipped, servers = [], [], []
    try:
        for line, background in readme_commands(background=True):
            words = shlex.split(line)
            if words[0] not in ("stag-sim", "carla-driver-interface"):  # pip, pytest, python: not ours to run here
                continue
            reason = next((r for p, r in NOT_RUN.items() if line.startswith(p)), None)
            if reason or "..." in line:
                skipped.append((line, reason or "an elided example"))
                continue
            if "../shared/" in line and not shared.is_dir():
                skipped.append((line, "../shared is not beside this clone"))
                continue
            argv = [str(bindir / words[0]), *words[1:]]
            if background:  # a server the next lines talk to: started, waited for, stopped at the end
                servers.append(subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                _wait_for_port(int(words[words.index("--port") + 1]), servers[-1], line)
            else:
                res = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=1800,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
                assert res.returncode == 0, f"README: {line}: exit {res.returncode}\n{res.stderr[-2000:]}"
            ran.append(line)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    print(f"ran {len(ran)} README lines; not run: " + "; ".join(f"{line} ({why})" for line, why in skipped))
    assert len(ran) >= 15


def _wait_for_port(port: int, proc, line: str, timeout_s: float = 120.0) -> None:
    import socket
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, f"README: {line}: exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"README: {line}: nothing listens on port {port} after {timeout_s:.0f} s")
