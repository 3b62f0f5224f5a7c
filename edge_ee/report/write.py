"""`write_report`: report.md, report.json, tables/*.csv|json, figures/*.png and report.html,
every file written atomically (temporary file, then rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from device_runners.files import atomic_write_bytes, atomic_write_text
from device_runners.results import atomic_write_json
from edge_ee.errors import ResultsError
from edge_ee.report.markdown import to_markdown
from edge_ee.report.summary import as_json
from edge_ee.report.tables import Table, build_tables


def write_tables_and_figures(out: Path, tables: list[Table],
                             pngs: dict[str, tuple[str, bytes]]) -> dict[str, str]:
    """tables/<name>.csv|json and figures/<key>.png under `out`; returns {title: relative path}."""
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for t in tables:
        atomic_write_text(out / "tables" / f"{t.name}.csv", t.to_csv())
        atomic_write_json(out / "tables" / f"{t.name}.json",
                          {"title": t.title, "note": t.note, "rows": t.records()})
    paths: dict[str, str] = {}
    if pngs:
        (out / "figures").mkdir(exist_ok=True)
    for key, (title, data) in pngs.items():
        atomic_write_bytes(out / "figures" / f"{key}.png", data)
        paths[title] = f"figures/{key}.png"
    return paths


def write_report(summaries: list[dict[str, Any]], names: list[str], out_dir: str | Path, *,
                 html: bool = True, figures: bool = True) -> Path:
    """report.md, report.json, tables/*.csv|json, figures/*.png and report.html; returns the .md."""
    metrics = {s["metric"]["name"] for s in summaries}
    if len(metrics) > 1:
        raise ResultsError("cannot mix runs scored by different task metrics ("
                           f"{', '.join(sorted(metrics))}) in one report; report them separately")
    out = Path(out_dir)
    tables = build_tables(summaries, names)
    pngs: dict[str, tuple[str, bytes]] = {}
    if figures or html:
        from edge_ee.report.plots import make_figures
        pngs = make_figures(summaries, names)
    fig_paths = write_tables_and_figures(out, tables, pngs if figures else {})
    atomic_write_text(out / "report.md", to_markdown(summaries, names, tables, fig_paths))
    atomic_write_json(out / "report.json",
                      dict(zip(names, [as_json(s) for s in summaries], strict=True)))
    if html:
        from edge_ee.report.html import to_html
        atomic_write_text(out / "report.html", to_html(summaries, names, tables, pngs))
    return out / "report.md"
