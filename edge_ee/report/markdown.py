"""The one Markdown writer of `edge-ee report`, for every task: the same warnings as the
HTML page, one short power line per run, every shown table, and links to the figures."""

from __future__ import annotations

from typing import Any

from edge_ee.report.tables import Table, estimated, table_markdown, warnings_of


def to_markdown(sums: list[dict[str, Any]], names: list[str], tables: list[Table],
                figures: dict[str, str] | None = None) -> str:
    """The report as Markdown; `figures` maps a figure title to its relative PNG path."""
    lines = ["# edge-ee run report", "",
             f"{' vs '.join(names)} · task metric: {sums[0]['metric']['label']}", ""]
    if estimated(sums):
        lines += ["> **Power is ESTIMATED** (no sensor was read): energy numbers below come from"
                  " the hardware profile's idle/max power and the runner's own CPU time, not a "
                  "measurement.", ""]
    lines += [f"- power, {nm}: {s['power_line']}" for s, nm in zip(sums, names, strict=True)]
    lines += [f"- warning: {w}" for w in warnings_of(sums, names)]
    lines.append("")
    for t in tables:
        if t.show:
            lines += table_markdown(t)
    for title, path in (figures or {}).items():
        lines += [f"![{title}]({path})", ""]
    lines.append("Tables as CSV and JSON: " + ", ".join(f"`tables/{t.name}.csv`" for t in tables))
    return "\n".join(lines) + "\n"
