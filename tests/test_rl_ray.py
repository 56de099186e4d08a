"""The Ray vector env (stag_sim.app.rl_ray): 2 actors x 2 envs step exactly like one local batched env of 4 with
the same seeds, PPO trains on it, close() gives the actors' CPUs back; a tiny scene built in code travels to the
actors by pickling. Slow (Ray starts a local cluster: ~15 s on 2 cores); CI runs it with the ``ray`` extra."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
pytest.importorskip("stable_baselines3")

from stag_sim.app import rl, rl_ray  # noqa: E402
from stag_sim.errors import MissingExtraError, ValidationError  # noqa: E402
from stag_sim.testing import tiny_scene_log  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # even beside ray start
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def env_kwargs():
    return {"scene": tiny_scene_log(num_frames=80, width=32, height=18), "max_steps": 25}


@pytest.fixture(scope="module")
def venv(cluster, env_kwargs):
    """2 actors x 2 envs, shared by the tests (actors take seconds to start); the last test closes it."""
    v = rl_ray.ray_vec_env(2, 2, **env_kwargs)
    yield v
    v.close()


def _cpus(expect: float | None = None, wait_s: float = 20.0) -> float:
    """Free CPUs of the Ray cluster; with ``expect``, waits up to ``wait_s`` for that many (killing is async)."""
    import time

    end = time.monotonic() + wait_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if expect is None or free == expect or time.monotonic() > end:
            return free
        time.sleep(0.1)


def test_rollouts_equal_a_local_batched_env_with_the_same_seeds(venv, env_kwargs):
    remote = venv
    local = rl.sb3_vec_env(4, **env_kwargs)
    assert remote.num_envs == 4 and remote.observation_space == local.observation_space
    assert remote.action_space == local.action_space
    remote.seed(11)
    local.seed(11)
    obs_r, obs_l = remote.reset(), local.reset()
    for k in obs_l:
        np.testing.assert_array_equal(obs_r[k], obs_l[k])
    assert len({obs_l["state"][i].tobytes() for i in range(4)}) == 4  # random starts: four different episodes
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(60):
        actions = rng.uniform(-1, 1, (4, 2)).astype(np.float32)
        remote.step_async(actions)
        local.step_async(actions)
        (o_r, r_r, d_r, i_r), (o_l, r_l, d_l, i_l) = remote.step_wait(), local.step_wait()
        for k in o_l:
            np.testing.assert_array_equal(o_r[k], o_l[k])
            assert o_r[k].flags.writeable
        np.testing.assert_array_equal(r_r, r_l)
        np.testing.assert_array_equal(d_r, d_l)
        assert r_r.dtype == np.float32 and d_r.dtype == bool and len(i_r) == 4
        for a, b in zip(i_r, i_l):
            assert a.keys() == b.keys()
            if "terminal_observation" in b:
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
                for k in b["terminal_observation"]:
                    np.testing.assert_array_equal(a["terminal_observation"][k], b["terminal_observation"][k])
                    assert a["terminal_observation"][k].flags.writeable  # a copy, not a view of Ray's store
        ended += int(d_l.sum())
    assert ended >= 4  # episodes of 25 steps: every env ended and was reset inside the rollout
    # a fresh seed reproduces the first episode; another seed does not
    remote.seed(11)
    np.testing.assert_array_equal(remote.reset()["state"], obs_l["state"])
    remote.seed(12)
    assert not np.array_equal(remote.reset()["state"], obs_l["state"])
    local.close()


def test_attributes_and_methods_reach_the_right_env(venv):
    assert venv.get_attr("max_steps") == [25] * 4
    venv.set_attr("max_steps", 7, indices=[3, 0])
    assert venv.get_attr("max_steps") == [7, 25, 25, 7]
    assert venv.get_attr("max_steps", indices=[3, 1]) == [7, 25]
    assert venv.env_method("__getattribute__", "max_steps", indices=[3, 1]) == [7, 25]
    assert venv.env_is_wrapped(object) == [False] * 4
    venv.set_attr("max_steps", 25)
    assert venv.get_attr("max_steps") == [25] * 4


def test_ppo_trains_a_few_hundred_steps(venv):
    from stable_baselines3 import PPO

    venv.seed(0)
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, verbose=0)
    model.learn(256)
    assert model.num_timesteps >= 256
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (4, 2)


def test_close_releases_the_actors(venv):
    workers = list(venv.workers)
    assert _cpus() == 0.0  # one CPU per actor while they live
    venv.close()
    venv.close()  # twice is harmless
    assert _cpus(2.0) == 2.0
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(workers[0].spaces.remote(), timeout=30)
    assert ray.is_initialized()  # Ray was started by the caller, not by ray_vec_env: it stays up


@pytest.mark.parametrize("args, kw, message", [
    ((0, 2), {}, r"num_workers: must be >= 1, got 0"),
    ((2, 0), {}, r"envs_per_worker: must be >= 1, got 0"),
    ((3, 1), {}, r"3 workers x 1 CPU need 3 CPUs; the Ray cluster has 2"),
])
def test_bad_settings_are_one_clear_line(cluster, env_kwargs, args, kw, message):
    with pytest.raises(ValidationError, match=message) as e:
        rl_ray.ray_vec_env(*args, **kw, **env_kwargs)
    assert "\n" not in str(e.value)


def test_missing_ray_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'stag-sim\[ray\]'"):
        rl_ray.ray_vec_env(1, 1)
