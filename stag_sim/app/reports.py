"""What an evaluation shows: ``results.csv``, ``results.json``, ``report.html`` (:mod:`stag_sim.app.report`) and
the terminal table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from stag_sim.app.records import LEAD_COLUMNS, jsonable


def write_results(rows: list[dict], out: Path, agent_spec: str = "") -> dict[str, Path]:
    """results.csv, results.json and report.html (:mod:`stag_sim.app.report`: run details, sortable table, the
    spread over seeds, per-run video, plots, infractions and metrics) under ``out``. results.json holds the
    ``agent``, the ``run`` details (:func:`stag_sim.app.run_info.run_details`), the ``results`` rows, their
    ``mean`` (:func:`mean_scores`) and the ``per_scenario`` spread over seeds (:func:`scenario_spread`)."""
    from stag_sim.app.report import write_report
    from stag_sim.app.run_info import run_details
    from stag_sim.fsutil import atomic_open

    cols = list(LEAD_COLUMNS) + sorted({k for r in rows for k in r} - set(LEAD_COLUMNS))
    with atomic_open(out / "results.csv") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([["" if r.get(c) is None else jsonable(r.get(c, "")) for c in cols] for r in rows])
    run = run_details(seeds=[r.get("seed") for r in rows])
    with atomic_open(out / "results.json") as f:
        json.dump({"agent": agent_spec, "run": run, "results": [{k: jsonable(v) for k, v in r.items()} for r in rows],
                   "mean": mean_scores(rows), "per_scenario": scenario_spread(rows)}, f, indent=1)
    return {"csv": out / "results.csv", "json": out / "results.json",
            "html": write_report(rows, out, agent_spec, run=run)}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """Mean PDMS, EPDMS, driving score, success rate over all rows (a failed episode scores what it reached)."""
    def mean(key):
        return round(float(np.mean([float(r.get(key) or 0.0) for r in rows])), 4) if rows else 0.0

    return {"pdms": mean("pdms"), "epdms": mean("epdms"), "driving_score": mean("driving_score"),
            "success_rate": mean("success"),
            "route_completion": mean("route_completion")}


#: what :func:`scenario_spread` summarises: row key -> label (``collision`` as a rate)
SPREAD = {"route_completion": "route completion (env)", "pdms": "PDMS", "epdms": "EPDMS", "driving_score": "driving score",
          "collision": "collision rate"}


def scenario_spread(rows: list[dict]) -> dict[str, dict]:
    """Per scenario run more than once (several seeds): ``{scenario: {"runs": n, "seeds": [...], key: {"mean",
    "std", "min", "max"}}}`` for each key of :data:`SPREAD`; ``std`` is the sample standard deviation (n - 1).
    As :func:`mean_scores`, a failed episode scores what it reached (a missing value counts 0)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["scenario"], []).append(r)
    out = {}
    for name, rs in groups.items():
        if len(rs) < 2:
            continue
        entry: dict = {"runs": len(rs), "seeds": [r.get("seed") for r in rs]}
        for key in SPREAD:
            v = np.array([float(r.get(key) or 0.0) for r in rs])
            entry[key] = {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)), 4),
                          "min": round(float(v.min()), 4), "max": round(float(v.max()), 4)}
        out[name] = entry
    return out


def format_table(rows: list[dict], cols=("scenario", "status", "success", "steps", "route_completion", "pdms",
                                         "epdms", "driving_score", "ade")) -> str:
    """A plain-text table of result rows (for the terminal); a value that is None (not scored) reads n/a."""
    cells = [[str(_fmt(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line, "  ".join("-" * w for w in widths)] + ["  ".join(x.ljust(w) for x, w in zip(row, widths))
                                                                   for row in cells])


def _fmt(v):
    """A cell: floats to 3 decimals, None (a metric the episode cannot be scored on) as n/a."""
    if isinstance(v, float):
        return f"{v:.3f}"
    return "n/a" if v is None else v
