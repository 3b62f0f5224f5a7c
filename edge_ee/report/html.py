"""The one HTML template of `edge-ee report`, for every task: inline CSS, figures as base64 PNG.

No scripts, fonts or URLs outside the page (the relative links point at the CSV files
written beside it), so it opens offline and can be mailed as one file. It shows exactly
the warnings the Markdown shows (`tables.warnings_of`), one short power line per run (the
runner's full reason folds away), and flags estimated energy in a banner, in the figure
titles and in every table cell that carries it.
"""

from __future__ import annotations

import base64
import datetime as dt
from html import escape
from typing import Any

from edge_ee.report.tables import ESTIMATED, Table, estimated, fmt, warnings_of

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0; background: #f5f6f8; color: #1d2330; }
header { background: #23395d; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 0; opacity: 0.85; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 32px 48px 32px; }
section { background: #fff; border-radius: 8px; padding: 14px 20px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
h2 { font-size: 17px; margin: 4px 0 10px 0; color: #23395d; }
.banner { background: #fff3cd; border-left: 6px solid #e0a800; padding: 10px 16px;
          border-radius: 6px; margin: 16px 0; font-size: 14px; }
.banner.est { background: #fde8ea; border-left-color: #b00020; }
.warn { color: #8a5300; font-size: 13px; margin: 2px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 4px 10px; text-align: right; }
th { background: #eef1f5; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
td.est { background: #fde8ea; color: #8b0016; font-weight: 600; }
.note { font-size: 12px; color: #555; margin: 4px 0 0 0; }
img { max-width: 100%; height: auto; display: block; margin: 6px auto; }
.runs { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.run { border: 1px solid #e3e6ea; border-radius: 6px; padding: 8px 12px; font-size: 13px; }
.scroll { overflow-x: auto; }
details { margin-top: 4px; }
summary { cursor: pointer; color: #23395d; }
.run b { color: #23395d; }
.tag { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
       font-weight: 600; }
.tag.est { background: #b00020; color: #fff; }
.tag.meas { background: #2e7d32; color: #fff; }
.tag.none { background: #9e9e9e; color: #fff; }
"""

FIGURE_TEXT = {
    "latency": "Boxes: p25-p75 with the median; whiskers p5-p95 (p99 is in the end-to-end "
               "panel). A segment only counts the "
               "units that reached it.",
    "exits": "Share leaving at each exit (the last one is the final classifier).",
    "energy": "Energy of the run window by the trapezoid rule, divided by the inferences in "
              "it; above idle subtracts the idle baseline measured before the run.",
    "metric_cost": "Threshold sweep from the manifest's calibration curve when it has one, "
                   "the operating point chosen at export, and each measured run.",
    "metric_latency": "One point per run: the metric against the measured median latency.",
    "risk": "Empirical risk of the calibration's threshold path and the band up to its "
            "certified upper bound; dashed: the requested epsilon; dot: this run's drop.",
    "throughput": "FLOPs per segment over its median latency against the profile's peak; "
                  "bytes are an ESTIMATE (params x 4 + segment input/output activations).",
    "power": "Grey: idle-baseline window; coloured: the measured run window; dashed: idle "
             "baseline.",
}


def _tag(e: dict[str, Any] | None) -> str:
    if e is None:
        return '<span class="tag none">no power data</span>'
    if e["is_estimate"]:
        return '<span class="tag est">ESTIMATED power</span>'
    return '<span class="tag meas">measured power</span>'


def table_html(t: Table) -> str:
    if not t.rows:
        return f"<section><h2>{escape(t.title)}</h2><p class='note'>no data</p></section>"
    est_cols = {i for i, c in enumerate(t.columns) if c == "power_label"}
    head = "".join(f"<th>{escape(c).replace('_', '_<wbr>')}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        est_row = any(r[i] == ESTIMATED for i in est_cols)
        cells = []
        for v in r:
            text = fmt(v)
            is_est = (isinstance(v, str) and ESTIMATED in v.lower()) or (
                est_row and t.name == "energy" and isinstance(v, float))
            cells.append(f"<td class='est'>{escape(text)}</td>" if is_est
                         else f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f"<p class='note'>{escape(t.note)}</p>" if t.note else ""
    files = (f"<p class='note'>as <a href='tables/{t.name}.csv'>CSV</a> · "
             f"<a href='tables/{t.name}.json'>JSON</a></p>")
    return (f"<section><h2>{escape(t.title)}</h2><div class='scroll'><table><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>{note}{files}</section>")


def _runs_html(sums: list[dict[str, Any]], names: list[str]) -> str:
    cards = []
    for s, nm in zip(sums, names, strict=True):
        e = s.get("energy")
        b = s["backend"]
        reason = escape((e or {}).get("reason") or "no power samples in the results")
        cards.append(
            f"<div class='run'><b>{escape(nm)}</b> {_tag(e)}<br>model {escape(str(s['model']))}"
            f" ({escape(s['variant'])})<br>{escape(str(b['version']))}, {b['threads']} "
            f"thread(s), {escape(s['mode'])} mode<br>profile "
            f"{escape(str(s['profile']['name']))}<br>{s['samples']} {s['metric']['unit']}s"
            f"{'' if s['complete'] else ' (INCOMPLETE)'}<br>power: {escape(s['power_line'])}"
            f"<details><summary>how power and profile were chosen</summary><span class='note'>"
            f"{reason}<br>profile: {escape(str(s['profile']['how']))}</span></details></div>")
    return "<section><h2>Runs</h2><div class='runs'>" + "".join(cards) + "</div></section>"


def to_html(sums: list[dict[str, Any]], names: list[str], tables: list[Table],
            figures: dict[str, tuple[str, bytes]], title: str = "edge-ee run report") -> str:
    """The whole page as one string."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
             f"<header><h1>{escape(title)}</h1><p>{escape(' vs '.join(names))} · "
             f"{escape(sums[0]['metric']['label'])} · generated {when} by edge-ee report</p>"
             "</header><main>"]
    if estimated(sums):
        parts.append("<div class='banner est'><b>Power is ESTIMATED, not measured.</b> No power "
                     "sensor was read on the device; every energy and power number on this page "
                     "comes from the hardware profile (idle power + the runner's CPU share x "
                     "(max - idle)). Cells and figures that carry it are marked <b>estimated</b>."
                     "</div>")
    warns = warnings_of(sums, names)
    if warns:
        parts.append("<div class='banner'>" + "".join(
            f"<p class='warn'>⚠ warning: {escape(w)}</p>" for w in warns) + "</div>")
    parts.append(_runs_html(sums, names))
    by_name = {t.name: t for t in tables}
    if "overview" in by_name:
        parts.append(table_html(by_name["overview"]))
    for key, (ftitle, png) in figures.items():
        data = base64.b64encode(png).decode("ascii")
        text = FIGURE_TEXT.get(key, "")
        parts.append(f"<section><h2>{escape(ftitle)}</h2><img alt='{escape(ftitle)}' "
                     f"src='data:image/png;base64,{data}'><p class='note'>{escape(text)}</p>"
                     "</section>")
    for t in tables:
        if t.show and t.name != "overview":
            parts.append(table_html(t))
    hidden = [t for t in tables if not t.show]
    if hidden:
        parts.append("<section><h2>More tables</h2><p class='note'>" + " · ".join(
            f"{escape(t.title)} ({len(t.rows)} rows): <a href='tables/{t.name}.csv'>CSV</a>"
            for t in hidden) + "</p></section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
