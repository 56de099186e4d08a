"""The shipped rule scenarios: the rule-following agent scores EPDMS >= 0.9 on each, and an agent that breaks the
scenario's rule is penalised on the sub-metric for it (camera-free, on the layout-only town)."""

from __future__ import annotations

import numpy as np
import pytest

from stag_sim.agents import agent_names, register_agent
from stag_sim.agents.pure_pursuit import PurePursuitAgent

CAMERA_FREE = {"cameras": (), "observations": ("ego", "route", "state")}
RULE_SCENARIOS = ("red_light_cross_traffic", "unprotected_left_turn", "wrong_way_cut", "speed_limit_zone")


class WrongWayAgent(PurePursuitAgent):
    """Pure pursuit on the route shifted one lane (3.5 m) to its left: on a two-way road, the oncoming lane."""

    def act(self, obs):
        route = np.asarray(obs["route"], np.float64).reshape(-1, 2)
        d = np.gradient(route, axis=0)
        left = np.stack([-d[:, 1], d[:, 0]], 1) / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
        return super().act({**obs, "route": (route + 3.5 * left).astype(np.float32)})


if "test_wrong_way" not in agent_names():
    register_agent("test_wrong_way", lambda env, seed: WrongWayAgent(vehicle=env.unwrapped.world.config.vehicle))


@pytest.fixture(scope="module")
def scene():
    from stag_sim.paths import ensure_default_scene

    return str(ensure_default_scene(seed=0, duration_s=20.0, sensors=False, progress=False))


def _run(scene, name, agent):
    from stag_sim.app.episode import run_episode

    return run_episode(name, agent, scene=scene, env_overrides=CAMERA_FREE)


@pytest.mark.parametrize("name", RULE_SCENARIOS)
def test_rule_following_agent_scores_high_and_keeps_every_rule(scene, name):
    row = _run(scene, name, "rule_following")
    assert row["status"] == "ok", row
    assert row["epdms"] >= 0.9, row
    for key in ("nc", "dac", "ddc", "tlc", "speed_limit_compliance"):
        assert row[key] == 1.0, (key, row)
    assert row["collisions"] == 0


@pytest.mark.parametrize("name, agent, key", [
    ("red_light_cross_traffic", "pure_pursuit", "tlc"),  # ignores the light
    ("unprotected_left_turn", "pure_pursuit", "nc"),  # turns without yielding: hits the oncoming car
    ("wrong_way_cut", "test_wrong_way", "ddc"),  # drives in the oncoming lane
    ("speed_limit_zone", "pure_pursuit", "speed_limit_compliance"),  # 8 m/s in a 20 km/h zone
])
def test_rule_breaker_is_penalised_on_the_rule_it_breaks(scene, name, agent, key):
    row = _run(scene, name, agent)
    assert row[key] is not None and row[key] < 1.0, (key, row)
    if key in ("tlc", "nc", "ddc"):  # EPDMS multipliers: the score is at most the multiplier
        assert row["epdms"] <= row[key] + 1e-9, row


def test_red_light_tlc_pure_pursuit_vs_rule_following(scene):
    """The issue's figure: TLC 0 for pure_pursuit (ignores lights), 1 for the light-aware agent."""
    assert _run(scene, "red_light_cross_traffic", "pure_pursuit")["tlc"] == 0.0
    assert _run(scene, "red_light_cross_traffic", "rule_following")["tlc"] == 1.0
