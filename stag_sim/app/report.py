"""``report.html``: one self-contained page per evaluation that people read.

A sortable overview table (one row per scenario: status, success, route completion, PDMS, driving score, ADE, with
units and sensible rounding), then per scenario its video (H.264, embedded), a bird's-eye plot of the driven
trajectory against the log (collision / off-road marked where the episode ended), bars of its metrics, and the
counts behind them; a metric the episode cannot be scored on (no drivable area: no map, no LiDAR ground) reads
"n/a", with the reason. Images and videos are embedded as data URIs, so the file can be mailed or archived alone.
Plots are matplotlib (the ``rl`` / ``dev`` extras; without it the page says so and keeps the tables).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

#: overview columns: key, header, unit, format
OVERVIEW = (("scenario", "scenario", "", "{}"), ("status", "status", "", "{}"), ("success", "success", "", "{}"),
            ("steps", "steps", "", "{}"), ("termination_reason", "ended by", "", "{}"),
            ("route_completion", "route completion", "%", "{:.1f}"), ("pdms", "PDMS", "", "{:.3f}"),
            ("driving_score", "driving score", "", "{:.3f}"), ("ade", "ADE", "m", "{:.2f}"))
PERCENT = {"route_completion", "ds_route_completion", "offroad_fraction"}
#: per-scenario metric table: key, label, unit, format
DETAILS = (("pdms", "PDMS", "", "{:.3f}"), ("nc", "no at-fault collision (NC)", "", "{:.2f}"),
           ("dac", "drivable area compliance (DAC)", "", "{:.2f}"), ("ep", "ego progress (EP)", "", "{:.3f}"),
           ("ttc", "time to collision (TTC)", "", "{:.2f}"), ("comfort", "comfort (C)", "", "{:.2f}"),
           ("progress", "progress", "m", "{:.1f}"), ("collisions", "collisions", "", "{:d}"),
           ("at_fault_collisions", "at-fault collisions", "", "{:d}"), ("offroad_steps", "off-road steps", "", "{:d}"),
           ("driving_score", "driving score", "", "{:.3f}"), ("ds_route_completion", "route completion (CARLA)", "%", "{:.1f}"),
           ("infraction_penalty", "infraction penalty", "", "{:.3f}"), ("collisions_vehicle", "vehicle collisions", "", "{:d}"),
           ("collisions_pedestrian", "pedestrian collisions", "", "{:d}"), ("collisions_static", "static collisions", "", "{:d}"),
           ("offroad_fraction", "time off-road", "%", "{:.1f}"), ("ade", "ADE", "m", "{:.2f}"), ("fde", "FDE", "m", "{:.2f}"),
           ("max_displacement", "max displacement from the log", "m", "{:.2f}"), ("return", "return", "", "{:.3f}"),
           ("wall_s", "wall time", "s", "{:.1f}"), ("dac_source", "drivable area from", "", "{}"),
           ("unscored", "not scored", "", "{}"))
NOT_SCORED = "n/a"  # a metric the episode cannot be scored on (None in the row; its ``unscored`` says why)
BARS = ("pdms", "nc", "dac", "ep", "ttc", "comfort", "driving_score", "route_completion")


def fmt(key: str, value, spec: str) -> str:
    """A metric for people: percentages for fractions in :data:`PERCENT`, ``spec`` otherwise, '—' when absent."""
    if value is None or value == "":
        return "—"
    try:
        if key in PERCENT:
            return spec.format(100.0 * float(value))
        if spec == "{:d}":
            return str(int(value))
        return spec.format(float(value)) if "f" in spec else spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def bev_plot(traj: dict, title: str = "") -> str:
    """PNG data URI: the drivable area, route, logged and driven ego paths, and the end (x on a collision or off-road)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    for poly in traj.get("drivable", []):
        ax.add_patch(Polygon(poly["exterior"], closed=True, facecolor="#e6e6e6", edgecolor="#c8c8c8", lw=0.5))
        for hole in poly.get("holes", []):
            ax.add_patch(Polygon(hole, closed=True, facecolor="white", edgecolor="#c8c8c8", lw=0.5))
    for key, style in (("route", dict(color="#9ecae1", lw=6, alpha=0.6, label="route")),
                       ("logged", dict(color="#636363", lw=1.5, ls="--", label="logged ego")),
                       ("driven", dict(color="#d62728", lw=2, label="driven"))):
        pts = traj.get(key) or []
        if len(pts) > 1:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, **style)
    driven = traj.get("driven") or []
    if driven:
        ax.plot(*driven[0], "o", color="#2ca02c", ms=7, label="start")
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
    ax.legend(loc="best", fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def metric_bars(row: dict) -> str:
    """PNG data URI: the episode's scores in [0, 1] as horizontal bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in BARS if isinstance(row.get(k), (int, float))]
    fig, ax = plt.subplots(figsize=(4.6, 0.32 * len(keys) + 0.8))
    vals = [float(row[k]) for k in keys]
    ax.barh(keys[::-1], vals[::-1], color="#4c78a8")
    for i, v in enumerate(vals[::-1]):
        ax.text(min(v, 0.9) + 0.02, i, f"{v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score [0..1]")
    fig.tight_layout()
    return _png(fig)


_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
  const key = r => { const c = r.cells[col]; return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    const d = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
    return asc ? d : -d; }).forEach(r => body.appendChild(r));
}));
// media status (for people and for tests): readyState, duration and whether play() started, per video
const status = {};
document.querySelectorAll('video').forEach(v => {
  const s = status[v.id] = {readyState: v.readyState, duration: 0, played: false, error: null};
  const upd = () => { s.readyState = v.readyState; s.duration = isFinite(v.duration) ? v.duration : 0;
                      document.getElementById('media-status').textContent = JSON.stringify(status); };
  v.addEventListener('loadedmetadata', upd); v.addEventListener('canplay', upd);
  v.addEventListener('error', () => { s.error = v.error ? v.error.code : 'error'; upd(); });
  v.addEventListener('playing', () => { s.played = true; upd(); });
  v.muted = true; v.play().then(() => { s.played = true; upd(); }).catch(e => { s.error = String(e); upd(); });
});
"""


def write_report(rows: list[dict], out: Path, agent_spec: str = "") -> Path:
    """Write ``out/report.html`` for the result ``rows`` of an evaluation whose run directories are
    ``out/runs/<scenario>/`` (trajectory.json, video.mp4 when recorded), or of one run written into ``out`` itself
    (the demo). Returns its path."""
    from stag_sim.app.reports import mean_scores
    from stag_sim.fsutil import atomic_open

    out = Path(out)
    try:
        import matplotlib  # noqa: F401

        plots = True
    except ImportError:
        plots = False
    esc = html.escape
    head = "".join(f"<th>{esc(h)}{' [' + u + ']' if u else ''}</th>" for _, h, u, _ in OVERVIEW)
    body = []
    for r in rows:
        cells = []
        for k, _, _, spec in OVERVIEW:
            v = r.get(k)
            num = f" data-v='{float(v) * (100 if k in PERCENT else 1)}'" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
            text = fmt(k, v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else esc(str(v if v is not None else "—"))
            link = f"<a href='#s-{esc(r['scenario'])}'>{text}</a>" if k == "scenario" else text
            cls = " class='bad'" if k == "status" and v == "failed" else ""
            cells.append(f"<td{num}{cls}>{link}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    means = mean_scores(rows)
    sections = []
    for i, r in enumerate(rows):
        name = r["scenario"]
        run = out / "runs" / name
        if not run.is_dir() and (out / "record.json").is_file():  # a single run written into ``out`` (the demo)
            run = out
        parts = [f"<h2 id='s-{esc(name)}'>{esc(name)} <small>({esc(str(r.get('status')))}"
                 f"{', ended by ' + esc(str(r.get('termination_reason'))) if r.get('termination_reason') else ''})</small></h2>"]
        if r.get("reason"):
            parts.append(f"<p class='bad'>{esc(r['reason'])}</p>")
        video = run / "video.mp4"
        if video.is_file():
            data = base64.b64encode(video.read_bytes()).decode()
            parts.append(f"<video id='video-{i}' controls muted playsinline preload='auto' width='720' "
                         f"src='data:video/mp4;base64,{data}'></video>")
        figs = []
        traj_path = run / "trajectory.json"
        if plots and traj_path.is_file():
            figs.append(f"<img alt='bird&#39;s-eye plot of {esc(name)}' src='{bev_plot(json.loads(traj_path.read_text()), name)}'>")
        if plots and r.get("status") == "ok":
            figs.append(f"<img alt='metric bars of {esc(name)}' src='{metric_bars(r)}'>")
        if figs:
            parts.append("<div class='figs'>" + "".join(figs) + "</div>")
        detail = "".join(f"<tr><td>{esc(label)}</td><td>{esc(fmt(k, r[k], spec)) if r[k] is not None else NOT_SCORED}"
                         f"{' ' + u if u and r[k] is not None else ''}</td></tr>" for k, label, u, spec in DETAILS if k in r)
        if detail:
            parts.append(f"<table class='details'>{detail}</table>")
        sections.append("<section>" + "".join(parts) + "</section>")
    note = "" if plots else "<p>matplotlib is not installed (pip install 'stag-sim[rl]'): no plots.</p>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>StagDrive evaluation: {esc(agent_spec)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{cursor:pointer;background:#f3f3f3}.bad{color:#b00020}.figs img{margin-right:12px;vertical-align:top}"
        "section{border-top:1px solid #ddd;margin-top:18px}small{color:#666;font-weight:normal}"
        "</style></head><body>"
        f"<h1>StagDrive evaluation: {esc(agent_spec)}</h1>"
        f"<p>{len(rows)} scenario(s); mean PDMS {means['pdms']:.3f}, driving score {means['driving_score']:.3f}, "
        f"route completion {100 * means['route_completion']:.1f} %, success {100 * means['success_rate']:.0f} %. "
        "Click a column header to sort.</p>"
        f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}"
        + "".join(sections)
        + f"<pre id='media-status' hidden>{{}}</pre><script>{_SCRIPT}</script></body></html>\n")
    path = out / "report.html"
    with atomic_open(path) as f:
        f.write(page)
    return path
