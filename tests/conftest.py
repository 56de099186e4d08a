import pytest

from stag_sim.paths import CACHE_ENV, LAYOUT_SUFFIX
from stag_sim.testing import tiny_scene_log

#: markers of the tests outside the default suite (pytest.ini deselects them); they keep the user's cache
OPT_IN = ("slow", "gpu", "carla")


@pytest.fixture
def tiny_log():
    return tiny_scene_log()


@pytest.fixture(scope="session")
def _default_suite_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stag_sim_cache")


@pytest.fixture(autouse=True)
def _cold_cache(request, monkeypatch):
    """The default suite runs on a cache of its own, empty at the start of the session (``$STAG_SIM_CACHE``): it
    takes as long on a fresh machine as on a developer's warm one, and a test that caches a sensor town fails here
    (the default one takes minutes on a cold cache): give it a tiny fixture (``stag_sim.testing.tiny_scene_log``,
    a layout-only town ``sensors=False``, a small ``generate_scene``) or mark it ``slow``. A test that sets
    ``$STAG_SIM_CACHE`` itself (monkeypatch) still wins; slow, gpu and carla tests keep the user's cache."""
    if any(request.node.get_closest_marker(m) for m in OPT_IN):
        yield
        return
    cache = request.getfixturevalue("_default_suite_cache")
    monkeypatch.setenv(CACHE_ENV, str(cache))

    def full_towns():
        return {p.name for p in (cache / "scenes").glob("synth-town-*") if not p.name.endswith(LAYOUT_SUFFIX)}

    before = full_towns()
    yield
    new = sorted(full_towns() - before)
    if new:
        pytest.fail(f"{request.node.nodeid} cached the sensor town(s) {', '.join(new)} in the default suite (the "
                    "default one takes minutes on a cold cache): use a tiny fixture or a layout-only town (generated "
                    "in code or sensors=False), or mark the test slow")
