"""Behaviour pinned across refactors: every shipped scenario x every baseline agent, on the synthetic town, gives
the same result rows and the same observation hash (sha256 over every step's observation bytes) as when
``tests/data/replay_golden.json`` was recorded (before the architecture refactor, commit 2a43baa). The same runs
check that the scores rank the baselines sensibly. One run of the shipped set serves both tests.

Regenerate the file only when a change of behaviour is intended, and say so in the commit:

    STAG_SIM_CACHE=.ci-cache python tests/test_replay_golden.py
"""

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "replay_golden.json"
AGENTS = ("log_replay", "pure_pursuit", "constant_velocity", "random")
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


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The shipped set's result rows, as JSON types (like the file)."""
    return json.loads(json.dumps(current_rows(tmp_path_factory.mktemp("golden"))))


@pytest.mark.slow
def test_shipped_scenarios_replay_bit_identically(rows):
    golden = json.loads(GOLDEN.read_text())
    assert sorted(rows) == sorted(golden)
    for key in golden:
        assert rows[key]["status"] == "ok", (key, rows[key]["reason"])
        diff = {k: (golden[key][k], rows[key].get(k)) for k in golden[key] if rows[key].get(k) != golden[key][k]}
        assert not diff, f"{key}: {diff}"


@pytest.mark.slow
def test_shipped_scenarios_rank_log_replay_best_and_random_worst(rows):
    """Mean PDMS and driving score over the shipped scenarios order the baselines: the log's own driving first,
    random actions last."""
    import numpy as np

    means = {}
    for agent in AGENTS:
        mine = [r for k, r in rows.items() if k.endswith(f"/{agent}")]
        assert all(r["status"] == "ok" for r in mine), [r["reason"] for r in mine]
        means[agent] = (np.mean([r["pdms"] for r in mine]), np.mean([r["driving_score"] for r in mine]))
    for k in (0, 1):
        assert means["log_replay"][k] >= max(m[k] for m in means.values())
        assert means["random"][k] <= min(m[k] for m in means.values())
        assert means["log_replay"][k] > means["random"][k]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = current_rows(Path(tmp))
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(data)} runs)", file=sys.stderr)
