"""``report.html``: one self-contained page per evaluation that people read and keep.

At the top, what ran and where (:func:`stag_sim.app.run_info.run_details`: version, git commit, seeds, command line,
date, machine). Then a sortable overview table (one row per run: scenario, seed, status, success, route completion,
PDMS beside the log expert's, driving score, ADE, with units and sensible rounding) and, for a scenario run with
several seeds, its spread (mean ± std, min..max: :func:`stag_sim.app.reports.scenario_spread`). Then per run its
video (H.264, embedded), a bird's-eye plot (the driven path against the log, the other agents' tracks and boxes,
the infractions), its time series (speed against the logged ego's, time to collision, lateral offset), metric bars
beside the log expert's, the infraction table (what was hit or left, when, where) and every metric with the counts
behind it, the log expert's beside it. A metric the episode cannot be scored on (no drivable area: no map, no LiDAR
ground) reads "n/a", with the reason. Images and videos are embedded as data URIs, so the file can be mailed or
archived alone. Plots are matplotlib (:mod:`stag_sim.app.report_plots`); without it the page says so and keeps the
tables.

Two route completions, labelled apart everywhere: the env's (``route_completion``: route progress over the usable
route, its length less the completion margin; what ends an episode as completed) and the driving score's
(``ds_route_completion``: furthest progress over the whole route, CARLA's definition).
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path

RC_ENV = "route completion (env)"
RC_ENV_HELP = "route progress / usable route (its length less the completion margin); 100 % ends the episode"
RC_DS = "route completion (DS)"
RC_DS_HELP = "the driving score's: furthest progress / the whole route (CARLA leaderboard)"
#: overview columns: key, header, unit, format, tooltip
OVERVIEW = (("scenario", "scenario", "", "{}", ""), ("seed", "seed", "", "{:d}", "episode seed"),
            ("status", "status", "", "{}", ""), ("success", "success", "", "{}", ""),
            ("steps", "steps", "", "{:d}", ""),
            ("termination_reason", "ended by", "", "{}", ""),
            ("route_completion", RC_ENV, "%", "{:.1f}", RC_ENV_HELP), ("pdms", "PDMS", "", "{:.3f}", ""),
            ("expert_pdms", "log expert PDMS", "", "{:.3f}", "the logged ego scored on the same steps"),
            ("epdms", "EPDMS", "", "{:.3f}", "NAVSIM v2 extended PDMS (see docs/metrics.md)"),
            ("driving_score", "driving score", "", "{:.3f}", ""), ("ade", "ADE", "m", "{:.2f}", ""))
PERCENT = {"route_completion", "ds_route_completion", "offroad_fraction"}
#: per-run metric table: key, label, unit, format
DETAILS = (("pdms", "PDMS", "", "{:.3f}"), ("nc", "no at-fault collision (NC)", "", "{:.2f}"),
           ("dac", "drivable area compliance (DAC)", "", "{:.2f}"), ("ep", "ego progress (EP)", "", "{:.3f}"),
           ("ttc", "time to collision (TTC)", "", "{:.2f}"), ("comfort", "comfort (C)", "", "{:.2f}"),
           ("epdms", "EPDMS", "", "{:.3f}"), ("ddc", "driving direction compliance (DDC)", "", "{:.2f}"),
           ("oncoming_progress", "oncoming progress in 1 s", "m", "{:.1f}"),
           ("tlc", "traffic light compliance (TLC)", "", "{:.2f}"), ("red_light_crossings", "red lights run", "", "{:d}"),
           ("lk", "lane keeping (LK)", "", "{:.2f}"), ("hc", "history comfort (HC)", "", "{:.2f}"),
           ("ec", "extended comfort (EC)", "", "{:.2f}"),
           ("epdms_human_filtered", "met because the logged human failed them too", "", "{}"),
           ("speed_limit_compliance", "speed limit compliance", "", "{:.3f}"),
           ("max_overspeed", "max overspeed", "m/s", "{:.2f}"),
           ("progress", "progress", "m", "{:.1f}"), ("collisions", "collisions", "", "{:d}"),
           ("at_fault_collisions", "at-fault collisions", "", "{:d}"), ("offroad_steps", "off-road steps", "", "{:d}"),
           ("route_completion", RC_ENV, "%", "{:.1f}"), ("driving_score", "driving score", "", "{:.3f}"),
           ("ds_route_completion", RC_DS, "%", "{:.1f}"), ("infraction_penalty", "infraction penalty", "", "{:.3f}"),
           ("collisions_vehicle", "vehicle collisions", "", "{:d}"),
           ("collisions_pedestrian", "pedestrian collisions", "", "{:d}"),
           ("collisions_static", "static collisions", "", "{:d}"),
           ("offroad_fraction", "route off-road", "%", "{:.1f}"),
           ("ade", "ADE", "m", "{:.2f}"), ("fde", "FDE", "m", "{:.2f}"),
           ("max_displacement", "max displacement from the log", "m", "{:.2f}"), ("return", "return", "", "{:.3f}"),
           ("wall_s", "wall time", "s", "{:.1f}"), ("dac_source", "drivable area from", "", "{}"),
           ("unscored", "not scored", "", "{}"))
NOT_SCORED = "n/a"  # a metric the episode cannot be scored on (None in the row; its ``unscored`` says why)
#: run details shown at the top: key of run_details -> label
RUN_LABELS = (("stag_sim_version", "stag_sim"), ("git_commit", "git commit"), ("seeds", "seeds"),
              ("command", "command"), ("date_utc", "date (UTC)"), ("hostname", "host"), ("platform", "platform"),
              ("python", "python"), ("cpu", "CPU"), ("cpu_count", "CPU count"), ("torch", "torch"),
              ("device", "torch device"))
#: infraction kinds for people
INFRACTION_KINDS = {"collision": "collision", "offroad": "off-road (episode check)",
                    "dac": "corner off the drivable area (DAC)", "ttc": "projected collision (TTC)"}


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


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def run_dir_of(row: dict, out: Path) -> Path:
    """The run directory of ``row``: ``out / row["run_dir"]`` when the evaluation set it, else ``out/runs/<scenario>``,
    else ``out`` itself when it holds a single run (the demo)."""
    if row.get("run_dir"):
        return out / row["run_dir"]
    run = out / "runs" / str(row.get("scenario"))
    if not run.is_dir() and (out / "record.json").is_file():
        return out
    return run


def _read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_steps(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _anchors(rows: list[dict]) -> list[str]:
    """Unique, readable ids for the runs' sections: ``s-<run dir name>`` (``s-<scenario>`` without one), with
    ``-<n>`` added where two would be the same."""
    out: list[str] = []
    for i, r in enumerate(rows):
        a = "s-" + (Path(r["run_dir"]).name if r.get("run_dir") else str(r.get("scenario")))
        out.append(a if a not in out else f"{a}-{i}")
    return out


def _run_table(run: dict) -> str:
    esc = html.escape
    cells = []
    for key, label in RUN_LABELS:
        if key in run and run[key] not in (None, "", []):
            v = run[key]
            v = ", ".join(str(s) for s in v) if isinstance(v, list) else str(v)
            cells.append(f"<tr><th>{esc(label)}</th><td><code>{esc(v)}</code></td></tr>")
    return f"<table class='run'>{''.join(cells)}</table>"


def _th(header: str, unit: str = "", tip: str = "") -> str:
    """A header cell: the header, its unit in brackets, the tooltip ``tip``."""
    title = f" title='{html.escape(tip)}'" if tip else ""
    return f"<th{title}>{html.escape(header)}{' [' + unit + ']' if unit else ''}</th>"


def _overview(rows: list[dict], anchors: list[str], experts: list[dict | None]) -> str:
    esc = html.escape
    head = "".join(_th(h, u, tip) for _, h, u, _, tip in OVERVIEW)
    body = []
    for r, anchor, expert in zip(rows, anchors, experts):
        view = {**r, "expert_pdms": (expert or {}).get("pdms")}
        cells = []
        for k, _, _, spec, _ in OVERVIEW:
            v = view.get(k)
            num = f" data-v='{float(v) * (100 if k in PERCENT else 1)}'" if _number(v) else ""
            text = fmt(k, v, spec) if _number(v) else esc(str(v if v is not None else "—"))
            link = f"<a href='#{esc(anchor)}'>{text}</a>" if k == "scenario" else text
            cls = " class='bad'" if k == "status" and v == "failed" else ""
            cells.append(f"<td{num}{cls}>{link}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _spread_table(spread: dict) -> str:
    """Per scenario with several runs: mean ± std and min..max of each :data:`~stag_sim.app.reports.SPREAD` key."""
    from stag_sim.app.reports import SPREAD

    if not spread:
        return ""
    esc = html.escape
    pct = {"route_completion", "collision"}
    head = "<th>scenario</th><th>runs</th><th>seeds</th>" + "".join(
        _th(label, "%" if k in pct else "", RC_ENV_HELP if k == "route_completion" else "")
        for k, label in SPREAD.items())
    body = []
    for name, s in spread.items():
        cells = [f"<td>{esc(name)}</td><td>{s['runs']}</td><td>{esc(', '.join(str(x) for x in s['seeds']))}</td>"]
        for k in SPREAD:
            m = {q: (100.0 if k in pct else 1.0) * s[k][q] for q in ("mean", "std", "min", "max")}
            spec = "{:.1f}" if k in pct else "{:.3f}"
            cells.append(f"<td data-v='{m['mean']}'>{spec.format(m['mean'])} ± {spec.format(m['std'])}"
                         f"<br><small>{spec.format(m['min'])} .. {spec.format(m['max'])}</small></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Spread over seeds</h2><p>Scenarios run more than once: mean ± sample standard deviation, "
            "min .. max below.</p>"
            f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _infraction_table(infractions: list | None) -> str:
    if infractions is None:
        return ""
    if not infractions:
        return "<p>No infractions recorded.</p>"
    esc = html.escape
    head = ("<tr><th>#</th><th>t [s]</th><th>step</th><th>what</th><th>with</th><th>at fault</th><th>x [m]</th>"
            "<th>y [m]</th><th>details</th></tr>")
    body = []
    for n, inf in enumerate(infractions, start=1):
        who = f"{inf['with']} ({inf.get('category', '?')})" if inf.get("with") else "—"
        fault = {True: "yes", False: "no"}.get(inf.get("at_fault"), "—")
        notes = [str(inf["type"]).replace("_", " ")] if inf.get("type") else []
        if inf.get("duration_s") is not None:
            notes.append(f"for {inf['duration_s']:.1f} s")
        if inf.get("ttc_s") is not None:
            notes.append(f"within {inf['ttc_s']:.1f} s")
        if inf.get("source") == "metrics" and inf.get("kind") == "collision":
            notes.append("found by the metrics only")
        body.append(f"<tr><td>{n}</td><td>{inf['t_s']:.2f}</td><td>{inf['step']}</td>"
                    f"<td>{esc(INFRACTION_KINDS.get(inf['kind'], inf['kind']))}</td><td>{esc(who)}</td><td>{fault}</td>"
                    f"<td>{inf['x_m']:.2f}</td><td>{inf['y_m']:.2f}</td><td>{esc('; '.join(notes))}</td></tr>")
    return f"<table class='infractions'>{head}{''.join(body)}</table>"


def _details(r: dict, expert: dict | None) -> str:
    esc = html.escape

    def cell(d, k, u, spec):
        if d is None or k not in d:
            return "—"
        return (esc(fmt(k, d[k], spec)) + (" " + u if u else "")) if d[k] is not None else NOT_SCORED

    rows = "".join(f"<tr><td>{esc(label)}</td><td>{cell(r, k, u, spec)}</td>"
                   f"{'<td>' + cell(expert, k, u, spec) + '</td>' if expert else ''}</tr>"
                   for k, label, u, spec in DETAILS if k in r)
    if not rows:
        return ""
    head = "<tr><th>metric</th><th>agent</th>" + ("<th>log expert</th>" if expert else "") + "</tr>"
    note = f"<p><small>log expert: {esc(expert.get('note', ''))}.</small></p>" if expert else ""
    return f"<table class='details'>{head}{rows}</table>{note}"


def _section(i: int, r: dict, run: Path, anchor: str, expert: dict | None, plots: bool) -> str:
    from stag_sim.app import report_plots

    esc = html.escape
    name = str(r.get("scenario"))
    seed = f", seed {r['seed']}" if r.get("seed") is not None else ""
    ended = f", ended by {esc(str(r.get('termination_reason')))}" if r.get("termination_reason") else ""
    parts = [f"<h2 id='{esc(anchor)}'>{esc(name)} <small>({esc(str(r.get('status')))}{esc(seed)}{ended})</small></h2>"]
    if r.get("reason"):
        parts.append(f"<p class='bad'>{esc(r['reason'])}</p>")
    if _number(r.get("pdms")):
        vs = f" (log expert {expert['pdms']:.3f})" if expert and _number(expert.get("pdms")) else ""
        parts.append(f"<p>PDMS {r['pdms']:.3f}{vs}</p>")
    video = run / "video.mp4"
    if video.is_file():
        data = base64.b64encode(video.read_bytes()).decode()
        parts.append(f"<video id='video-{i}' controls muted playsinline preload='auto' width='720' "
                     f"src='data:video/mp4;base64,{data}'></video>")
    infractions = _read_json(run / "infractions.json")
    traj = _read_json(run / "trajectory.json")
    steps = _read_steps(run / "steps.csv")
    figs = []
    if plots and traj is not None:
        figs.append(f"<img alt='bird&#39;s-eye plot of {esc(name)}' "
                    f"src='{report_plots.bev_plot(traj, name + seed, infractions)}'>")
    if plots and steps:
        figs.append(f"<img alt='time series of {esc(name)}' src='{report_plots.series_plot(steps, infractions)}'>")
    if plots and r.get("status") == "ok":
        figs.append(f"<img alt='metric bars of {esc(name)}' src='{report_plots.metric_bars(r, expert)}'>")
    if figs:
        parts.append("<div class='figs'>" + "".join(figs) + "</div>")
    if infractions is not None:
        parts.append("<h3>Infractions</h3>" + _infraction_table(infractions))
    parts.append(_details(r, expert))
    return "<section>" + "".join(parts) + "</section>"


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

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}table.sortable th{cursor:pointer}"
    "table.run td,table.run th{text-align:left}.bad{color:#b00020}"
    ".figs{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}"
    "section{border-top:1px solid #ddd;margin-top:18px}small{color:#666;font-weight:normal}"
)


def write_report(rows: list[dict], out: Path, agent_spec: str = "", run: dict | None = None) -> Path:
    """Write ``out/report.html`` for the result ``rows`` of an evaluation whose run directories are
    ``out/<row["run_dir"]>`` (default ``out/runs/<scenario>/``: :func:`run_dir_of`; trajectory.json, steps.csv,
    infractions.json, log_expert.json, video.mp4 when recorded), or of one run written into ``out`` itself (the
    demo). ``run``: the run details (default: :func:`stag_sim.app.run_info.run_details` now). Returns its path."""
    from stag_sim.app.reports import mean_scores, scenario_spread
    from stag_sim.app.run_info import run_details
    from stag_sim.fsutil import atomic_open

    out = Path(out)
    try:
        import matplotlib  # noqa: F401

        plots = True
    except ImportError:
        plots = False
    esc = html.escape
    run = run if run is not None else run_details(seeds=[r.get("seed") for r in rows])
    anchors = _anchors(rows)
    dirs = [run_dir_of(r, out) for r in rows]
    experts = [_read_json(d / "log_expert.json") for d in dirs]
    sections = [_section(i, r, d, a, e, plots) for i, (r, d, a, e) in enumerate(zip(rows, dirs, anchors, experts))]
    means = mean_scores(rows)
    note = "" if plots else "<p>matplotlib is not installed (pip install matplotlib): no plots.</p>"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>StagDrive evaluation: {esc(agent_spec)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>StagDrive evaluation: {esc(agent_spec)}</h1>{_run_table(run)}"
        f"<p>{len(rows)} run(s); mean PDMS {means['pdms']:.3f}, driving score {means['driving_score']:.3f}, "
        f"<span title='{esc(RC_ENV_HELP)}'>{RC_ENV}</span> {100 * means['route_completion']:.1f} %, "
        f"success {100 * means['success_rate']:.0f} %. Click a column header to sort.</p>"
        f"{_overview(rows, anchors, experts)}{note}{_spread_table(scenario_spread(rows))}"
        + "".join(sections)
        + f"<pre id='media-status' hidden>{{}}</pre><script>{_SCRIPT}</script></body></html>\n")
    path = out / "report.html"
    with atomic_open(path) as f:
        f.write(page)
    return path
