"""Bird's-eye view of an episode: map, route, traffic lights' stop lines coloured by their state now, ego trail,
boxes (ego-centred, north-up is not assumed: ego up)."""

from __future__ import annotations

import numpy as np

from stag_sim.geometry import invert_transform

BEV_RANGE = 40.0  # [m] from the ego to the image edge
_COLORS = {  # RGB
    "background": (24, 26, 30), "drivable": (70, 72, 78), "lane": (120, 124, 132), "route": (60, 140, 255),
    "trail": (80, 220, 120), "agent": (255, 170, 60), "hit": (255, 60, 60), "ego": (90, 230, 255),
}
_LIGHT_COLORS = ((60, 220, 90), (250, 205, 40), (235, 50, 50), (160, 160, 160))  # RGB by state code: green ... unknown


def bev_image(world, state, agent_poses, agent_valid, trail, size: int = 448, view_range: float = BEV_RANGE) -> np.ndarray:
    """(size, size, 3) uint8 RGB top view centred on the ego, ego heading pointing up."""
    import cv2

    img = np.full((size, size, 3), _COLORS["background"], np.uint8)
    T_ego_from_world = invert_transform(state.ego.pose())
    scale = size / (2.0 * view_range)  # [px/m]

    def px(xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        local = xy @ T_ego_from_world[:2, :2].T + T_ego_from_world[:2, 3]
        # ego x (forward) -> image up, ego y (left) -> image left
        return np.stack([size / 2 - local[:, 1] * scale, size / 2 - local[:, 0] * scale], axis=1).round().astype(np.int32)

    area = world.drivable_area  # the map's drivable area, or the LiDAR ground's
    for poly in getattr(area, "geoms", [area]) if area is not None else []:
        cv2.fillPoly(img, [px(poly.exterior.coords)], _COLORS["drivable"])
        for hole in poly.interiors:
            cv2.fillPoly(img, [px(hole.coords)], _COLORS["background"])
    m = world.log.map
    if m is not None:
        for lane in m.lanes:
            cv2.polylines(img, [px(lane.coords)], False, _COLORS["lane"], 1, cv2.LINE_AA)
    cv2.polylines(img, [px(world.route.points)], False, _COLORS["route"], 2, cv2.LINE_AA)
    for light in world.rules.lights if world.rules is not None else ():
        a, b = px(light.stop_line)
        color = _LIGHT_COLORS[int(light.code_at(state.time_s))]
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), color, max(2, int(round(scale))), cv2.LINE_AA)
    if len(trail) > 1:
        cv2.polylines(img, [px(trail)], False, _COLORS["trail"], 2, cv2.LINE_AA)
    hits = set(state.events.get("collided_with", []))
    for k, poly in world.agent_boxes(agent_poses, agent_valid):
        color = _COLORS["hit"] if world.log.objects.instance_ids[k] in hits else _COLORS["agent"]
        cv2.fillPoly(img, [px(poly.exterior.coords)], color)
    cv2.fillPoly(img, [px(world.ego_box(state.ego).exterior.coords)], _COLORS["ego"])
    cv2.putText(img, f"t={state.time_s:5.1f}s  v={state.ego.speed:4.1f}m/s", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (255, 255, 255), 1, cv2.LINE_AA)
    return img
