"""The architecture's rules, checked on the source (see ARCHITECTURE.md): layers import downward only, no module
grows past 500 lines, the world is a frozen record, the code passes ruff."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "stag_sim"
ADAPTERS = ("stag_sim.envs", "stag_sim.agents")
APP = "stag_sim.app"
#: modules allowed above the 500-line limit, with why
LONG_OK = {"stag_sim/render/kernels.py": "compiled numba kernels, kept in one module for numba's cache"}
MAX_LINES = 500
#: the calls that import a module named by a string: ``importlib.import_module(name[, package])``, ``__import__``
IMPORT_CALLS = {"import_module", "__import__"}


def _modules(pkg: Path = PKG):
    """``(dotted module name, path relative to the package's parent, path)`` of every module under ``pkg``."""
    for path in sorted(pkg.rglob("*.py")):
        rel = path.relative_to(pkg.parent)
        yield ".".join(rel.with_suffix("").parts).removesuffix(".__init__"), rel.as_posix(), path


def _package(module: str, path: Path) -> str:
    """The package a relative import in ``module`` (defined in ``path``) is resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve(name: str, level: int, package: str) -> str:
    """Absolute name of ``from <level dots><name> import ...`` in ``package`` (importlib's rule), or raise."""
    if level == 0:
        return name
    parts = package.split(".") if package else []
    if level - 1 >= len(parts) or not package:
        raise ValueError(f"relative import {'.' * level}{name} goes above the top-level package {package!r}")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{name}" if name else base


def _string_import(call: ast.Call, module: str, package: str) -> str | None:
    """The module an ``import_module("...")`` / ``__import__("...")`` call with a literal name imports, else None
    (a name computed at run time is not checked)."""
    func = call.func
    fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if fname not in IMPORT_CALLS or not call.args:
        return None
    arg = call.args[0]
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return None
    name = arg.value
    if not name.startswith("."):
        return name
    # relative: importlib.import_module(".x", package) with package a literal, __package__ or __name__
    pkg_arg = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "package"), None)
    if isinstance(pkg_arg, ast.Constant) and isinstance(pkg_arg.value, str):
        anchor = pkg_arg.value
    elif isinstance(pkg_arg, ast.Name) and pkg_arg.id in ("__package__", "__name__"):
        anchor = package if pkg_arg.id == "__package__" else module
    else:
        return None
    stripped = name.lstrip(".")
    return _resolve(stripped, len(name) - len(stripped), anchor)


def _imports(path: Path, module: str | None = None) -> set[str]:
    """Every module name ``path`` imports (top-level or inside functions): import statements, relative ones
    resolved against ``module`` (the dotted name of ``path``; a file with relative imports needs it), and
    ``import_module("...")`` / ``__import__("...")`` calls with a literal name. ``from a import b`` names both ``a``
    and ``a.b`` (``b`` may be a submodule)."""
    package = _package(module, path) if module else ""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level and not module:
                raise ValueError(f"{path}:{node.lineno}: a relative import; pass the module's name to resolve it")
            base = _resolve(node.module or "", node.level, package)
            if node.module:
                out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
        elif isinstance(node, ast.Call) and (name := _string_import(node, module or "", package)):
            out.add(name)
    return out


def _layer(module: str) -> str:
    if module == "stag_sim.cli" or module.startswith(APP):
        return "app"
    if module.startswith(ADAPTERS):
        return "adapter"
    return "core"


def _below(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(pkg: Path = PKG) -> list[str]:
    """Every import under ``pkg`` that goes up a layer: core -> adapter / app / cli, adapter -> app / cli."""
    bad = []
    for module, rel, path in _modules(pkg):
        layer = _layer(module)
        for name in sorted(_imports(path, module)):
            if layer == "core" and _below(name, ADAPTERS + (APP, "stag_sim.cli")):
                bad.append(f"{rel} (core) imports {name}")
            elif layer == "adapter" and _below(name, (APP, "stag_sim.cli")):
                bad.append(f"{rel} (env adapter / agents) imports {name}")
    return bad


def test_layers_import_downward_only():
    bad = _violations()
    assert not bad, "\n".join(bad)


def test_no_module_over_500_lines():
    long = {rel: n for _, rel, path in _modules() if (n := len(path.read_text().splitlines())) > MAX_LINES
            and rel not in LONG_OK}
    assert not long, long


def test_world_is_a_frozen_record():
    from stag_sim.world import SimState, World

    for cls in (World, SimState):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
    from stag_sim.testing import tiny_scene_log

    world = World.build(tiny_scene_log(num_frames=10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        world.route_length = 0.0


def test_the_checker_sees_a_violation(tmp_path):
    """The import scan is not vacuous: it finds a core module importing the env adapter."""
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from stag_sim.envs.stag_drive import StagDriveEnv\n")
    assert "stag_sim.envs.stag_drive" in _imports(p) and _layer("stag_sim.world") == "core"
    assert _below("stag_sim.envs.stag_drive", ADAPTERS)


def test_the_checker_resolves_relative_and_string_imports(tmp_path):
    """Relative imports (``from ..app import x``, ``from . import cli``) and ``import_module("...")`` calls with a
    literal name are resolved to absolute names and held to the same rules, on a synthetic package tree."""
    files = {
        "__init__.py": "from . import world\n",  # core -> core: fine
        "cli.py": "from .envs import e\n",  # the app may import anything
        "world.py": "from .app.report import write_report\n",  # core -> app
        "render/__init__.py": "from .splat import x\nfrom . import kernels\n",  # core -> core: fine
        "render/lazy.py": "def f():\n    from ..envs import vector\n",  # core -> adapter, inside a function
        "synth/lazy.py": "import importlib\nm = importlib.import_module('stag_sim.agents.zoo')\n",  # core -> adapter
        "synth/rel.py": "from importlib import import_module\nm = import_module('..app', __package__)\n",  # core -> app
        "synth/dyn.py": "import importlib\nm = importlib.import_module(NAME)\n",  # computed at run time: not checked
        "envs/e.py": "from ..app import evaluate\nfrom .. import world\n",  # adapter -> app; adapter -> core fine
        "agents/__init__.py": "from .. import cli\n",  # adapter -> cli
        "app/report.py": "from ..envs.e import x\n",  # app -> adapter: fine
    }
    for rel, src in files.items():
        (tmp_path / "stag_sim" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "stag_sim" / rel).write_text(src)
    assert sorted(_violations(tmp_path / "stag_sim")) == sorted([
        "stag_sim/world.py (core) imports stag_sim.app.report",
        "stag_sim/world.py (core) imports stag_sim.app.report.write_report",
        "stag_sim/render/lazy.py (core) imports stag_sim.envs",
        "stag_sim/render/lazy.py (core) imports stag_sim.envs.vector",
        "stag_sim/synth/lazy.py (core) imports stag_sim.agents.zoo",
        "stag_sim/synth/rel.py (core) imports stag_sim.app",
        "stag_sim/envs/e.py (env adapter / agents) imports stag_sim.app",
        "stag_sim/envs/e.py (env adapter / agents) imports stag_sim.app.evaluate",
        "stag_sim/agents/__init__.py (env adapter / agents) imports stag_sim.cli",
    ])
    with pytest.raises(ValueError, match="above the top-level package"):
        _resolve("x", 3, "stag_sim.render")


def test_code_passes_ruff():
    """``ruff check`` with the repository's ruff.toml (line length, rules and why some are off) passes."""
    pytest.importorskip("ruff", reason="ruff is in the dev extra: pip install -e '.[dev]'")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "stag_sim", "tests", "benchmarks",
                        "examples", "setup.py"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
