"""What an evaluation shows: ``results.csv``, ``results.json``, a bar chart and an HTML summary, and the terminal
table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from stag_sim.app.records import LEAD_COLUMNS, jsonable


def write_results(rows: list[dict], out: Path, agent_spec: str = "") -> dict[str, Path]:
    """results.csv, results.json, summary.png (bar chart) and summary.html (table + chart) under ``out``."""
    from stag_sim.fsutil import atomic_open

    cols = list(LEAD_COLUMNS) + sorted({k for r in rows for k in r} - set(LEAD_COLUMNS))
    with atomic_open(out / "results.csv") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(cols)
        writer.writerows([["" if r.get(c) is None else jsonable(r.get(c, "")) for c in cols] for r in rows])
    with atomic_open(out / "results.json") as f:
        json.dump({"agent": agent_spec, "results": [{k: jsonable(v) for k, v in r.items()} for r in rows],
                   "mean": mean_scores(rows)}, f, indent=1)
    png = out / "summary.png"
    from stag_sim.viz import write_png

    write_png(png, summary_chart(rows, title=f"{agent_spec}: PDMS and driving score per scenario"))
    with atomic_open(out / "summary.html") as f:
        f.write(summary_html(rows, cols, agent_spec))
    return {"csv": out / "results.csv", "json": out / "results.json", "png": png, "html": out / "summary.html"}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """Mean PDMS, driving score, success rate over all rows (a failed episode scores what it reached)."""
    def mean(key):
        return round(float(np.mean([float(r.get(key) or 0.0) for r in rows])), 4) if rows else 0.0

    return {"pdms": mean("pdms"), "driving_score": mean("driving_score"), "success_rate": mean("success"),
            "route_completion": mean("route_completion")}


def summary_chart(rows: list[dict], title: str = "", width: int = 900, bar_h: int = 22) -> np.ndarray:
    """(H, W, 3) uint8 horizontal bar chart: PDMS (blue) and driving score (orange) per scenario."""
    import cv2

    pad, label_w = 10, 230
    h = 40 + len(rows) * (2 * bar_h + 10) + 30
    img = np.full((h, width, 3), 255, np.uint8)
    cv2.putText(img, title[:90], (pad, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    span = width - label_w - 3 * pad - 50
    for i, r in enumerate(rows):
        y = 40 + i * (2 * bar_h + 10)
        name = f"{r['scenario']}{'  (failed)' if r.get('status') == 'failed' else ''}"
        cv2.putText(img, name[:30], (pad, y + bar_h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j, (key, colour) in enumerate((("pdms", (31, 119, 180)), ("driving_score", (255, 127, 14)))):
            v = float(r.get(key) or 0.0)
            y0 = y + j * bar_h
            cv2.rectangle(img, (label_w, y0 + 2), (label_w + int(span * v), y0 + bar_h - 2), colour, -1)
            cv2.putText(img, f"{v:.2f}", (label_w + int(span * v) + 5, y0 + bar_h - 6), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "blue: PDMS   orange: driving score   (0..1)", (pad, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (60, 60, 60), 1, cv2.LINE_AA)
    return img


def summary_html(rows: list[dict], cols: list[str], agent_spec: str) -> str:
    import html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(jsonable(r.get(c, ''))))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    means = mean_scores(rows)
    mean_txt = ", ".join(f"{k} {v:.3f}" for k, v in means.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>StagDrive eval: {html.escape(agent_spec)}</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:2px 6px;font-size:12px}</style></head><body>"
            f"<h2>StagDrive evaluation: {html.escape(agent_spec)}</h2><p>Mean: {html.escape(mean_txt)}</p>"
            f"<img src='summary.png' alt='PDMS and driving score per scenario'><table><tr>{head}</tr>{body}</table>"
            "</body></html>\n")


def format_table(rows: list[dict], cols=("scenario", "status", "success", "steps", "route_completion", "pdms",
                                         "driving_score", "ade")) -> str:
    """A plain-text table of result rows (for the terminal)."""
    cells = [[str(_fmt(r.get(c, ""))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line, "  ".join("-" * w for w in widths)] + ["  ".join(x.ljust(w) for x, w in zip(row, widths))
                                                                   for row in cells])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else v
