"""The plots of ``report.html`` (:mod:`stag_sim.app.report`), each a PNG data URI: the bird's-eye view of an episode
(drivable area, route, logged and driven ego paths, the other agents' tracks and boxes, the infractions), its time
series (speed against the log's, time to collision, lateral offset) and its metric bars. matplotlib (Agg)."""

from __future__ import annotations

import base64
import io
import math

#: colours of the other agents by collision class (:func:`stag_sim.metrics.agent_class`)
CLASS_COLOURS = {"vehicle": "#1f77b4", "pedestrian": "#9467bd", "static": "#8c564b"}
INFRACTION_COLOUR = "#d62728"
#: bar labels of the metric bars: key -> label
BARS = {"pdms": "PDMS", "epdms": "EPDMS", "nc": "NC", "dac": "DAC", "ddc": "DDC", "tlc": "TLC", "ep": "EP",
        "ttc": "TTC", "lk": "LK", "comfort": "comfort",
        "driving_score": "driving score", "route_completion": "route completion (env)",
        "ds_route_completion": "route completion (DS)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def box_corners(box) -> list[tuple[float, float]]:
    """The four corners [m] of ``[cx, cy, yaw, length, width]``."""
    cx, cy, yaw, length, width = box
    c, s = math.cos(yaw), math.sin(yaw)
    return [(cx + c * dx - s * dy, cy + s * dx + c * dy)
            for dx, dy in ((length / 2, width / 2), (-length / 2, width / 2), (-length / 2, -width / 2),
                           (length / 2, -width / 2))]


def _agent_class(category: str) -> str:
    from stag_sim.metrics import agent_class

    return agent_class(category or "")


def bev_plot(traj: dict, title: str = "", infractions: list | None = None) -> str:
    """The drivable area, route, logged and driven ego paths, the other agents (tracks, boxes at the end), the ego's
    box at the end, and each infraction (the ego's and the other's box at that step, a cross where the episode ended
    on a collision or off-road)."""
    plt = _pyplot()
    from matplotlib.patches import Polygon

    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    for poly in traj.get("drivable", []):
        ax.add_patch(Polygon(poly["exterior"], closed=True, facecolor="#e6e6e6", edgecolor="#c8c8c8", lw=0.5))
        for hole in poly.get("holes", []):
            ax.add_patch(Polygon(hole, closed=True, facecolor="white", edgecolor="#c8c8c8", lw=0.5))
    labelled = set()
    for a in traj.get("agents", []):
        cls = _agent_class(a.get("category"))
        colour = CLASS_COLOURS.get(cls, "#7f7f7f")
        label = None if cls in labelled else f"{cls} (track, end box)"
        labelled.add(cls)
        pts = a.get("track") or []
        if len(pts) > 1:
            ax.plot(*zip(*pts), color=colour, lw=1, alpha=0.7, label=label)
            label = None
        if a.get("end"):
            ax.add_patch(Polygon(box_corners(a["end"]), closed=True, fill=False, edgecolor=colour, lw=1, label=label))
    for key, style in (("route", dict(color="#9ecae1", lw=6, alpha=0.6, label="route")),
                       ("logged", dict(color="#636363", lw=1.5, ls="--", label="logged ego")),
                       ("driven", dict(color="#d62728", lw=2, label="driven"))):
        pts = traj.get(key) or []
        if len(pts) > 1:
            ax.plot(*zip(*pts), **style)
    driven = traj.get("driven") or []
    if driven:
        ax.plot(*driven[0], "o", color="#2ca02c", ms=7, label="start")
    if traj.get("ego_end"):
        ax.add_patch(Polygon(box_corners(traj["ego_end"]), closed=True, fill=False, edgecolor="#d62728", lw=1.5))
    for n, inf in enumerate(infractions or []):
        if inf.get("agent_box"):
            ax.add_patch(Polygon(box_corners(inf["agent_box"]), closed=True, facecolor=INFRACTION_COLOUR, alpha=0.35,
                                 edgecolor=INFRACTION_COLOUR, label=None if n else "infraction (boxes at that step)"))
        if inf.get("ego_box"):
            ax.add_patch(Polygon(box_corners(inf["ego_box"]), closed=True, fill=False, hatch="//", lw=1,
                                 edgecolor=INFRACTION_COLOUR))
        ax.annotate(str(n + 1), (inf["x_m"], inf["y_m"]), fontsize=8, color=INFRACTION_COLOUR, weight="bold",
                    xytext=(4, 4), textcoords="offset points")
    end = traj.get("end") or {}
    if end.get("xy") and end.get("reason") in ("collision", "offroad"):
        ax.plot(*end["xy"], "x", color="black", ms=12, mew=3, label=end["reason"])
    pts = [p for k in ("driven", "logged") for p in (traj.get(k) or [])]
    if pts:
        xs, ys = zip(*pts)
        pad = 10.0
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.legend(loc="best", fontsize=6)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _column(steps: list[dict], key: str) -> list[float]:
    """A steps.csv column as floats, NaN where empty or absent."""
    out = []
    for s in steps:
        try:
            out.append(float(s.get(key)))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return out


def series_plot(steps: list[dict], infractions: list | None = None, ttc_horizon_s: float = 0.9) -> str:
    """Speed (driven, and the logged ego's), time to collision and lateral offset from the route over time, from
    the rows of steps.csv; a vertical line at each infraction (numbered as in its table)."""
    plt = _pyplot()
    t = _column(steps, "t_s")
    fig, axes = plt.subplots(3, 1, figsize=(4.8, 4.8), sharex=True)
    ax = axes[0]
    ax.plot(t, _column(steps, "speed_mps"), color="#d62728", lw=1.5, label="driven")
    if any(s.get("logged_speed_mps") not in (None, "") for s in steps):
        ax.plot(t, _column(steps, "logged_speed_mps"), color="#636363", lw=1.2, ls="--", label="logged ego")
    ax.set_ylim(bottom=0.0)
    ax.set_ylabel("speed [m/s]")
    ax.legend(loc="lower right", fontsize=7)
    ax = axes[1]
    ttc = _column(steps, "ttc_s")
    if "ttc_s" in (steps[0] if steps else {}):
        ax.plot(t, ttc, "o-", color="#ff7f0e", ms=3, lw=1)
        ax.set_ylim(-0.05, ttc_horizon_s + 0.15)
        ax.text(0.01, 0.95, f"blank: no projected collision within {ttc_horizon_s:g} s", transform=ax.transAxes,
                fontsize=7, va="top", color="#666666")
    else:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", fontsize=8, color="#666666")
    ax.set_ylabel("TTC [s]")
    ax = axes[2]
    ax.plot(t, _column(steps, "lateral_offset_m"), color="#2ca02c", lw=1.5)
    ax.axhline(0.0, color="#999999", lw=0.5)
    ax.set_ylabel("lateral offset [m]")
    ax.set_xlabel("t [s]")
    for n, inf in enumerate(infractions or []):
        for a in axes:
            a.axvline(inf["t_s"], color=INFRACTION_COLOUR, lw=0.8, ls=":")
        axes[0].annotate(str(n + 1), (inf["t_s"], 1.0), xycoords=("data", "axes fraction"), fontsize=8,
                         color=INFRACTION_COLOUR, weight="bold", va="top", xytext=(2, -2), textcoords="offset points")
    fig.tight_layout()
    return _png(fig)


def metric_bars(row: dict, expert: dict | None = None) -> str:
    """The episode's scores in [0, 1] as horizontal bars, the log expert's beside them where known."""
    plt = _pyplot()
    keys = [k for k in BARS if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)]
    fig, ax = plt.subplots(figsize=(3.8, 0.36 * len(keys) + 0.9))
    ys = list(range(len(keys)))[::-1]
    vals = [float(row[k]) for k in keys]
    h = 0.4 if expert else 0.8
    ax.barh([y + (h / 2 if expert else 0) for y in ys], vals, height=h, color="#4c78a8", label="agent")
    for y, v in zip(ys, vals):
        ax.text(min(v, 0.9) + 0.02, y + (h / 2 if expert else 0), f"{v:.2f}", va="center", fontsize=7)
    if expert:
        ev = [float(expert[k]) if isinstance(expert.get(k), (int, float)) else float("nan") for k in keys]
        ax.barh([y - h / 2 for y in ys], ev, height=h, color="#bbbbbb", label="log expert")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=7, frameon=False)
    ax.set_yticks(ys)
    ax.set_yticklabels([BARS[k] for k in keys], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score [0..1]")
    fig.tight_layout()
    return _png(fig)
