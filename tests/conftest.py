import pytest

from stag_sim.testing import tiny_scene_log


@pytest.fixture
def tiny_log():
    return tiny_scene_log()
