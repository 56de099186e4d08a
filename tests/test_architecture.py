"""The architecture's rules, checked on the source (see ARCHITECTURE.md): layers import downward only, no module
grows past 500 lines, the world is a frozen record."""

import ast
import dataclasses
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "stag_sim"
ADAPTERS = ("stag_sim.envs", "stag_sim.agents")
APP = "stag_sim.app"
#: modules allowed above the 500-line limit, with why
LONG_OK = {"stag_sim/render/kernels.py": "compiled numba kernels, kept in one module for numba's cache"}
MAX_LINES = 500


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent)
        yield ".".join(rel.with_suffix("").parts).removesuffix(".__init__"), rel.as_posix(), path


def _imports(path: Path) -> set[str]:
    """Every module name an import statement of ``path`` names (top-level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _layer(module: str) -> str:
    if module == "stag_sim.cli" or module.startswith(APP):
        return "app"
    if module.startswith(ADAPTERS):
        return "adapter"
    return "core"


def _below(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_layers_import_downward_only():
    bad = []
    for module, rel, path in _modules():
        layer = _layer(module)
        for name in _imports(path):
            if layer == "core" and _below(name, ADAPTERS + (APP, "stag_sim.cli")):
                bad.append(f"{rel} (core) imports {name}")
            elif layer == "adapter" and _below(name, (APP, "stag_sim.cli")):
                bad.append(f"{rel} (env adapter / agents) imports {name}")
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
