"""Behaviour pinned across refactors: every shipped scenario x three baseline agents, on the synthetic town, gives
the same result rows and the same observation hash (sha256 over every step's observation bytes) as when
``tests/data/replay_golden.json`` was recorded.

Regenerate the file only when a change of behaviour is intended, and say so in the commit:

    STAG_SIM_CACHE=.ci-cache python tests/test_replay_golden.py
"""

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "replay_golden.json"
AGENTS = ("log_replay", "pure_pursuit", "random")
SMALL = {"image_size": (36, 64), "cameras": ["CAM_FRONT"]}
VOLATILE = ("wall_s",)  # timing, not behaviour


def current_rows(out: Path) -> dict:
    """{"scenario/agent": result row without timings} of the shipped scenarios."""
    from stag_sim.app import evaluate
    from stag_sim.scenario import find_scenarios, shipped_dir

    scen = find_scenarios([shipped_dir()])
    rows = {}
    for agent in AGENTS:
        for r in evaluate(scen, agent, out / agent, env_overrides=SMALL, progress=False):
            rows[f"{r['scenario']}/{agent}"] = {k: v for k, v in r.items() if k not in VOLATILE}
    return rows


@pytest.mark.slow
def test_shipped_scenarios_replay_bit_identically(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    rows = json.loads(json.dumps(current_rows(tmp_path)))  # the same JSON types as the file
    assert sorted(rows) == sorted(golden)
    for key in golden:
        assert rows[key]["status"] == "ok", (key, rows[key]["reason"])
        diff = {k: (golden[key][k], rows[key].get(k)) for k in golden[key] if rows[key].get(k) != golden[key][k]}
        assert not diff, f"{key}: {diff}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = current_rows(Path(tmp))
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(data)} runs)", file=sys.stderr)
