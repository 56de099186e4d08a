"""Multi-view photo-consistency of depth points (stag_sim.consistency) and the vote-based ego-body mask
(stag_sim.ego_body), on tiny scenes built in code."""

import numpy as np

from stag_sim.consistency import COLOUR_TOLERANCE, View, consistency_votes, consistent
from stag_sim.ego_body import MAX_MASK_FRACTION, mask_from_votes

H, W = 40, 60
K = np.array([[50.0, 0, W / 2], [0, 50.0, H / 2], [0, 0, 1]])


def _view(colour=(100, 100, 100), depth=10.0, body=None, x=0.0):
    """A camera at (x, 0, 0) looking along world +z, seeing a flat wall of ``colour`` at z = ``depth`` (0: no
    geometry, e.g. sky)."""
    T = np.eye(4)
    T[0, 3] = x
    rgb = np.zeros((H, W, 3), np.uint8) + np.array(colour, np.uint8)
    return View.make(T, K, rgb, np.full((H, W), depth, np.float32), body)


def test_a_point_of_the_right_colour_on_the_surface_is_confirmed():
    pts = np.array([[0.0, 0.0, 10.0], [1.0, 0.5, 10.0]])
    confirm, contradict = consistency_votes(pts, np.full((2, 3), 105, np.uint8), [_view(), _view(x=0.5)])
    assert confirm.tolist() == [2, 2] and contradict.tolist() == [0, 0]


def test_a_floating_point_of_another_colour_is_contradicted_and_dropped():
    # a dark point at 4 m in front of a bright wall every view sees: a "flying pixel" or a missed ego-body pixel
    pts = np.array([[0.0, 0.0, 4.0], [0.2, 0.0, 10.0]])
    cols = np.array([[20, 20, 20], [200, 200, 200]], np.uint8)
    views = [_view((200, 200, 200)), _view((200, 200, 200), x=0.3)]
    confirm, contradict = consistency_votes(pts, cols, views)
    assert contradict.tolist() == [2, 0] and confirm.tolist() == [0, 2]
    assert consistent(pts, cols, views).tolist() == [False, True]


def test_a_point_in_front_of_the_sky_is_judged_and_one_behind_a_surface_is_not():
    dark = np.array([[30, 30, 30]], np.uint8)
    # the view has no geometry (sky): it sees whatever is there, so it judges (and rejects) the dark point
    assert consistency_votes(np.array([[0.0, 0.0, 30.0]]), dark, [_view((220, 220, 250), depth=0.0)])[1].tolist() == [1]
    # behind the view's own surface (20 m > 10 m): hidden, no vote either way
    confirm, contradict = consistency_votes(np.array([[0.0, 0.0, 20.0]]), dark, [_view((220, 220, 250))])
    assert confirm.tolist() == [0] and contradict.tolist() == [0]


def test_no_vote_from_outside_the_image_behind_the_camera_or_through_the_ego_body():
    pts = np.array([[100.0, 0.0, 10.0], [0.0, 0.0, -5.0], [0.0, 0.0, 10.0]])
    body = np.zeros((H, W), bool)
    body[H // 2 - 2: H // 2 + 3, W // 2 - 2: W // 2 + 3] = True  # the centre pixel shows the ego's own body
    confirm, contradict = consistency_votes(pts, np.zeros((3, 3), np.uint8), [_view((250, 250, 250), body=body)])
    assert confirm.tolist() == [0, 0, 0] and contradict.tolist() == [0, 0, 0]


def test_a_point_no_view_judges_is_kept_and_a_tie_keeps_it():
    pts = np.array([[0.0, 0.0, 10.0]])
    assert consistent(pts, np.zeros((1, 3), np.uint8), []).tolist() == [True]
    views = [_view((0, 0, 0)), _view((255, 255, 255), x=0.2)]
    confirm, contradict = consistency_votes(pts, np.zeros((1, 3), np.uint8), views)
    assert confirm.tolist() == [1] and contradict.tolist() == [1]
    assert consistent(pts, np.zeros((1, 3), np.uint8), views).tolist() == [True]


def test_colour_tolerance_absorbs_exposure_differences():
    pts = np.array([[0.0, 0.0, 10.0]])
    view = _view((100, 100, 100))
    near = np.full((1, 3), 100 + int(COLOUR_TOLERANCE) - 5, np.uint8)
    far = np.full((1, 3), 100 + int(COLOUR_TOLERANCE) + 10, np.uint8)
    assert consistent(pts, near, [view]).tolist() == [True]
    assert consistent(pts, far, [view]).tolist() == [False]


def test_mask_from_votes_spans_scattered_misses_from_the_bottom_up():
    votes = np.zeros((100, 80), np.int32)
    votes[70:] = 1  # the body: bottom 30 rows ...
    votes[75:78, ::3] = -1  # ... with scattered world votes (reflections on a shiny hood)
    votes[:40] = -1  # the world above
    mask = mask_from_votes(votes)
    assert mask is not None
    assert mask[70:].all() and not mask[:69].any()


def test_mask_from_votes_ignores_weak_evidence_and_rejects_a_whole_image():
    weak = np.zeros((100, 80), np.int32)
    weak[-2:] = 1  # two rows of body votes: below the net-vote minimum
    assert not mask_from_votes(weak).any()
    everything = np.ones((100, 80), np.int32)
    assert mask_from_votes(everything) is None  # more than MAX_MASK_FRACTION of the image
    assert MAX_MASK_FRACTION < 1.0
