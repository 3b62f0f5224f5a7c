"""`edge-ee report`: one report path for every task, from raw results.json + the bundle.

`summarize(results, bundle)` computes the statistics (forked only by the registered task
metric of `edge_ee.report.metrics`: accuracy, mIoU, next-token accuracy) and
`write_report(summaries, names, out)` writes report.md, report.json, tables as CSV/JSON,
figures as PNG and one self-contained report.html. Modules: `metrics` (the registry),
`stats` (percentiles, energy, throughput), `summary`, `tables`, `plots`, `per_class`
(what mIoU adds), `markdown`, `html`, `write`.
"""

from edge_ee.report.metrics import (
    METRICS,
    Scored,
    TaskMetric,
    masked_flops,
    metric_for,
    register_metric,
)
from edge_ee.report.stats import energy_of_run, percentiles, power_line
from edge_ee.report.summary import calibration_of, summarize
from edge_ee.report.tables import ESTIMATED, Table, build_tables, fmt, warnings_of
from edge_ee.report.write import write_report

__all__ = ["ESTIMATED", "METRICS", "Scored", "Table", "TaskMetric", "build_tables",
           "calibration_of", "energy_of_run", "fmt", "masked_flops", "metric_for",
           "percentiles", "power_line", "register_metric", "summarize", "warnings_of",
           "write_report"]
