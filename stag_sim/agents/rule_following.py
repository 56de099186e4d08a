"""A route follower that keeps the road rules: the reference "light-aware" agent of the rule scenarios.

Steering is :class:`~stag_sim.agents.pure_pursuit.PurePursuitAgent`'s. The speed is the lowest of four IDM-style
commands (:func:`stag_sim.traffic.idm_acceleration`):

* the free road, at 97 % of the speed limit (``target_speed`` where none is known) and slow enough for the route's curves;
  a lower limit ahead is met in time (the allowed speed at arc length ``s`` ahead is ``sqrt(limit(s)^2 + 2 b s)``);
* the nearest vehicle ahead on the route (:func:`stag_sim.traffic.find_leaders`);
* the next stop line on the route whose light is red, or yellow where the ego can still stop at ``decel_comfort``;
* yielding: before it enters an intersection lane, the ego waits at the lane's entry while a moving agent will be
  on a point of that stretch of its route between when the ego's front would reach it and its rear leave it (gap
  acceptance: an unprotected left turn across oncoming traffic, a merge, crossing traffic that runs a light). The
  others are predicted from what the ego may know in a simulator: agents on a path keep their speed along it and
  stop at red lights, logged agents follow their log.

The command changes by at most :data:`JERK_MAX` per second (comfort) unless it must brake harder than
:data:`EMERGENCY_DECEL`. It is privileged: it reads the episode's rules (:attr:`stag_sim.world.World.rules`: lanes, speed limits, lights) and
the other agents' poses from the env, as CARLA's rule-based autopilot and nuPlan's PDM planners read the map. On a
log without a map it is a route follower that keeps its distance. ``control`` action mode only.
"""

from __future__ import annotations

import weakref
from dataclasses import replace
from typing import Any

import numpy as np

from stag_sim.agents.pure_pursuit import PurePursuitAgent
from stag_sim.errors import AgentError
from stag_sim.road_rules import must_stop, stop_crossings
from stag_sim.traffic import IDMParameters, Obstacle, find_leaders, idm_acceleration

SAMPLE_M = 1.0  # [m] spacing of the route samples the rules are looked up at
LIMIT_MARGIN = 0.97  # [-] it drives at this fraction of a speed limit (a speedometer's margin)
SPEED_GAIN = 1.5  # [1/s] above the allowed speed, the ego brakes at this gain times the excess
JERK_MAX = 2.5  # [m/s^3] the most the commanded acceleration changes per second (nuPlan's comfort bound: 4.13)
EMERGENCY_DECEL = 3.0  # [m/s^2] a harder brake than this for a car, light or crossing is applied at once
BRAKE_START = 0.3  # [-] braking for a lower speed ahead starts when it needs this fraction of decel_comfort
CURVE_SPAN_M = 3.0  # [m] the route's curvature is its heading change over this far either side
LANE_MATCH_M = 2.5  # [m] a route sample belongs to the nearest lane within this, of compatible direction
CONFLICT_M = 3.0  # [m] an agent this close to the ego's route inside an intersection is in conflict with it
YIELD_LOOK_M = 40.0  # [m] intersections farther ahead than this are not checked yet
PREDICT_DT, PREDICT_S = 0.25, 6.0  # [s] constant-velocity prediction of the other agents: step and horizon
CLEAR_MARGIN_S = 1.0  # [s] a point of the ego's way must be free this long before and after the ego uses it

_PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def route_rules(world) -> dict:
    """Per world (cached): the route sampled every :data:`SAMPLE_M` (``s`` (S,) [m]), the speed limit there
    (``limit`` (S,) [m/s], NaN unknown), whether it is inside an intersection lane (``inter`` (S,) bool), the stop
    lines on the route (``stops``: (arc length [m], light index) pairs, :func:`stag_sim.road_rules.stop_crossings`)
    and the intersection stretches (``spans``: (s_in, s_out) [m] pairs)."""
    if world in _PLANS:
        return _PLANS[world]
    from stag_sim.road_rules import stop_crossings

    route, rules = world.route, world.rules
    s = np.arange(0.0, route.length + SAMPLE_M, SAMPLE_M)
    xy, heading = route.interpolate(s)
    limit = np.full(len(s), np.nan)
    inter = np.zeros(len(s), bool)
    stops: list = []
    if rules is not None:
        import shapely

        lanes = np.array(rules.lanes, dtype=object)
        pts = shapely.points(xy)
        best = np.full(len(s), np.inf)
        for j, lane in enumerate(lanes):
            d = shapely.distance(lane, pts)
            at = shapely.line_locate_point(lane, pts)
            a = np.asarray(shapely.get_coordinates(shapely.line_interpolate_point(lane, np.maximum(at - 0.5, 0.0))))
            b = np.asarray(shapely.get_coordinates(shapely.line_interpolate_point(lane, at + 0.5)))
            lane_heading = np.arctan2(b[:, 1] - a[:, 1], b[:, 0] - a[:, 0])
            ok = (d < LANE_MATCH_M) & (np.cos(lane_heading - heading) > 0.5) & (d < best)
            best[ok] = d[ok]
            limit[ok] = rules.speed_limits[j]
            inter[ok] = bool(rules.in_intersection[j]) if rules.in_intersection is not None else False
        stops = stop_crossings(route.points, rules.lights)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inter.astype(np.int8), [0]])))
    spans = [(float(s[a]), float(s[min(b, len(s) - 1)])) for a, b in zip(edges[::2], edges[1::2])]
    # curvature [1/m] from the heading change over +-CURVE_SPAN_M (the route's polyline kinks averaged out)
    k = max(1, int(round(CURVE_SPAN_M / SAMPLE_M)))
    h = np.unwrap(heading)
    curv = np.abs(h[np.minimum(np.arange(len(s)) + k, len(s) - 1)] - h[np.maximum(np.arange(len(s)) - k, 0)]) / (
        2 * k * SAMPLE_M)
    _PLANS[world] = {"s": s, "limit": limit, "inter": inter, "stops": stops, "spans": spans, "curv": curv}
    return _PLANS[world]


class RuleFollowingAgent:
    """Follow the route at the speed limit (``target_speed`` [m/s] where none is known), keeping lights, distance
    and right of way (see the module docstring); ``decel_comfort`` [m/s^2] is the braking it plans with, ``stop_margin`` [m] how far
    before a stop line its front stops."""

    def __init__(self, env, target_speed: float = 8.0, decel_comfort: float = 2.5, stop_margin: float = 1.0,
                 lateral_accel: float = 2.5, idm: IDMParameters | None = None) -> None:
        self.env = env.unwrapped
        if self.env.config.action_mode != "control":
            raise AgentError("agent rule_following: needs action_mode='control'")
        self.vehicle = self.env.world.config.vehicle
        self.steering = PurePursuitAgent(target_speed=target_speed, vehicle=self.vehicle)
        self.target_speed = float(target_speed)
        self.decel_comfort = float(decel_comfort)
        self.stop_margin = float(stop_margin)
        self.lateral_accel = float(lateral_accel)
        self.idm = idm or IDMParameters(target_speed=self.target_speed, min_gap=2.0, headway=1.2, accel_max=2.0,
                                        decel_comfort=self.decel_comfort)
        self.accept_accel = self.idm.accel_max  # [m/s^2] the gap acceptance assumes this acceleration

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        """Stateless: everything is read from the env at each step."""

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        world, state = self.env.world, self.env.state
        steer = float(self.steering.act(obs)[1])
        accel = self.acceleration(world, state)
        v = self.vehicle
        u_acc = accel / (v.max_accel if accel > 0 else v.max_decel)
        return np.clip(np.array([u_acc, steer], np.float32), -1.0, 1.0)

    def acceleration(self, world, state) -> float:
        """The commanded acceleration [m/s^2] in ``state`` (the lowest of the four commands)."""
        plan = route_rules(world)
        speed = float(state.ego.speed)
        v = self.vehicle
        front = state.route_s + v.front_length
        ahead = plan["s"] - front
        # free road: the target, or what the limits ahead allow
        cruise = np.where(np.isfinite(plan["limit"]), LIMIT_MARGIN * plan["limit"], self.target_speed)
        cruise = np.minimum(cruise, np.sqrt(self.lateral_accel / np.maximum(plan["curv"], 1e-6)))  # curves
        allowed = np.sqrt(cruise ** 2 + 2.0 * self.decel_comfort * np.maximum(ahead, 0.0))
        near = ahead > -v.length
        v_free = float(allowed[near].min() if near.any() else self.target_speed)
        params = replace(self.idm, target_speed=max(v_free, 0.1))
        gaps, leads = [np.inf], [0.0]
        # the vehicle ahead
        poses, valid = world.agent_poses(state)
        speeds = self._agent_speeds(world, state, poses, valid)
        obstacles = [Obstacle(tuple(poses[k, :2, 3]), float(world.sizes[k, 0]), float(speeds[k]),
                              float(np.arctan2(poses[k, 1, 0], poses[k, 0, 0]))) for k in np.flatnonzero(valid)]
        gap, lead = find_leaders(world.route, state.route_s + v.centre_offset, v.length, obstacles)
        gaps.append(gap)
        leads.append(lead)
        # lights
        rules = world.rules
        for s_stop, j in plan["stops"]:
            d = s_stop - front
            if d < -0.5:
                continue
            code = int(rules.lights[j].code_at(state.time_s))
            if must_stop(code, d, speed, self.decel_comfort):
                gaps.append(max(d - self.stop_margin, 0.0))
                leads.append(0.0)
            break  # only the next stop line matters
        # right of way
        entry = self._yield_entry(world, state, plan, poses, valid, speeds, front, speed)
        if entry is not None:
            gaps.append(max(entry - front - self.stop_margin, 0.0))
            leads.append(0.0)
        i = int(np.argmin(gaps))
        follow = float(idm_acceleration(speed, gaps[i], leads[i], params))  # road, leader, light, yield
        accel = follow
        # a lower limit or a curve ahead: once reaching its speed there needs BRAKE_START of decel_comfort, brake
        # exactly to it ((v_lim^2 - v^2) / 2d); IDM's free-road term alone brakes too gently above its target
        ahead_ok = ahead > 0.5
        if ahead_ok.any():
            need = (cruise[ahead_ok] ** 2 - speed * speed) / (2.0 * ahead[ahead_ok])
            if need.min() <= -BRAKE_START * self.decel_comfort:
                accel = min(accel, float(need.min()))
        if speed > v_free:
            accel = min(accel, SPEED_GAIN * (v_free - speed))
        if follow < -EMERGENCY_DECEL:  # a car, a light or a crossing needs hard braking now: no comfort limit
            return min(accel, follow)
        # comfort: the acceleration changes by at most JERK_MAX per second
        prev, step = float(state.ego.accel), JERK_MAX * world.config.dt
        return float(np.clip(accel, prev - step, prev + step))

    def _predict(self, world, state, poses, valid, speeds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The other agents over the next :data:`PREDICT_S`: times (T,) [s], positions (K, T, 2) [m] and (K, T) bool
        present. Agents the world moves along a path (IDM, inserted) keep their speed along it and stop at a stop
        line whose light tells them to; logged agents do what the log says; others keep their velocity."""
        t = np.arange(0.0, PREDICT_S + 1e-9, PREDICT_DT)
        K = len(valid)
        xy = np.zeros((K, len(t), 2))
        ok = np.repeat(np.asarray(valid, bool)[:, None], len(t), 1)
        src = world.agents
        simulated = np.asarray(getattr(src, "simulated", np.zeros(K, bool)), bool)
        paths = getattr(src, "agent_paths", None)
        lights = world.rules.lights if world.rules is not None else ()
        logged = None
        for k in np.flatnonzero(valid):
            if simulated[k] and paths is not None and paths[k] is not None:
                s_k = state.agent_s[k] + speeds[k] * t
                pts, yaw = paths[k].interpolate(s_k)
                lateral = src.insert_start[k][1] if k in getattr(src, "insert_start", {}) else 0.0
                xy[k] = pts + lateral * np.stack([-np.sin(yaw), np.cos(yaw)], -1)
                for s_cross, j in stop_crossings(pts, lights):
                    code = int(lights[j].code_at(state.time_s))
                    if must_stop(code, s_cross, speeds[k], self.decel_comfort):
                        ok[k, t * max(speeds[k], 0.1) > s_cross] = False  # waits at the line, out of the junction
                        break
            elif not simulated[k]:
                if logged is None:  # every logged agent's future at once
                    logged = [world.logged_object_poses(state.time_s + ti) for ti in t]
                xy[k] = [P[k, :2, 3] for P, _ in logged]
                ok[k] &= np.array([V[k] for _, V in logged])
            else:
                yaw = np.arctan2(poses[k, 1, 0], poses[k, 0, 0])
                xy[k] = poses[k, :2, 3] + speeds[k] * t[:, None] * np.array([np.cos(yaw), np.sin(yaw)])
        return t, xy, ok

    @staticmethod
    def _agent_speeds(world, state, poses, valid) -> np.ndarray:
        from stag_sim.envs.observations import agent_velocities

        return np.linalg.norm(agent_velocities(world, state, poses, valid), axis=1)

    def _yield_entry(self, world, state, plan, poses, valid, speeds, front, speed) -> float | None:
        """Arc length [m] of the intersection entry to wait at, or None when the way is clear: gap acceptance on
        each point of the route's next intersection stretch, between when the ego's front would reach it and its
        rear leave it (at :attr:`accept_accel` from the current speed), :data:`CLEAR_MARGIN_S` either side."""
        span = next(((a, b) for a, b in plan["spans"] if b > front), None)
        if span is None or span[0] - front > YIELD_LOOK_M or front > span[0] + 1.0:
            return None  # no intersection ahead, too far, or already in it (then clear it)
        t, pred, ok = self._predict(world, state, poses, valid, speeds)
        s_span = np.arange(span[0], span[1] + SAMPLE_M, SAMPLE_M)
        xy, route_yaw = world.route.interpolate(s_span)
        v, a = max(speed, 0.0), self.accept_accel
        reach = lambda x: (-v + np.sqrt(v * v + 2.0 * a * np.maximum(x, 0.0))) / a  # [s] to cover x [m]
        t_in = reach(s_span - front) - CLEAR_MARGIN_S
        t_out = reach(s_span - front + self.vehicle.length) + CLEAR_MARGIN_S
        near = np.linalg.norm(pred[:, :, None] - xy[None, None], axis=-1) < CONFLICT_M  # (K, T, n)
        when = (t[None, :, None] >= t_in[None, None]) & (t[None, :, None] <= t_out[None, None])
        conflict = (near & when & ok[:, :, None]).any(axis=(1, 2))
        # an agent going the ego's way ahead of it is a leader (find_leaders), not a crossing
        yaw = np.arctan2(poses[:, 1, 0], poses[:, 0, 0])
        here, here_yaw = world.route.interpolate(np.array([state.route_s]))
        ahead = (poses[:, :2, 3] - here[0]) @ np.array([np.cos(here_yaw[0]), np.sin(here_yaw[0])]) > 0
        follows = np.cos(yaw - here_yaw[0]) > 0.7
        conflict &= ~(ahead & follows & (speeds > 0.5)) & (speeds > 0.5)
        return span[0] if conflict.any() else None
