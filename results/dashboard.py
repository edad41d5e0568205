"""The dashboard's page: one JSON payload per set of runs (the figures of `results.figures`, the children, the
counts), rendered by one page, live or static.

The live dashboard (results/server.py) serves the page and lets it poll the payload; the report (write_report)
inlines the payload and plotly.js into a single HTML file. Both run the same script (static/dashboard.js), so the
shared report shows what the dashboard showed.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import threading
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from mnas.results import views
from mnas.results.figures import failures_figure, progress_figure, scatter_figure
from mnas.results.views import RunSnapshot
from mnas.search.fileio import atomic_write

DEFAULT_REFRESH_S = 3.0
def run_version(n_children: int, stats) -> str:
    """What changes when a run gains data: children are only ever added, controller steps added or redone."""
    last = stats["recorded_at"].max() if len(stats) else ""
    return f"{n_children}.{len(stats)}.{last}"


def payload_version(run_versions: Sequence[str]) -> str:
    """An opaque token of the runs' versions, safe in a URL query."""
    return hashlib.sha1("|".join(run_versions).encode("utf-8")).hexdigest()[:16]


def _figure_json(fig: go.Figure) -> dict:
    return json.loads(pio.to_json(fig, validate=False))  # Plotly's encoder: NaN -> null, dates, numpy


def build_payload(snapshots: Sequence[RunSnapshot]) -> dict[str, Any]:
    """Everything the page draws, as JSON-ready data."""
    runs = []
    for i, snap in enumerate(snapshots):
        space = snap.config.get("space") if isinstance(snap.config.get("space"), dict) else {}
        summaries = views.child_summaries(snap)
        runs.append({
            "index": i, "label": snap.label, "run_dir": snap.run_dir,
            "color": views.RUN_COLORS[i % len(views.RUN_COLORS)],
            "symbol": views.RUN_SYMBOLS[i % len(views.RUN_SYMBOLS)],
            "target_ms": snap.target_ms, "reward_preset": snap.reward_preset, "strategy": snap.config.get("strategy"),
            "stem": space.get("stem"), "head": space.get("head"),
            "counts": views.status_counts(snap.children), "failures": views.failure_counts(snap.children),
            "predicted_by": views.predicted_by(snap.children),
            "table": views.table_rows(snap, summaries=summaries), "children": summaries,
        })
    return {
        "version": payload_version([run_version(len(snap.children), snap.stats) for snap in snapshots]),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": runs, "blocks": views.block_views(snapshots),
        "figures": {"scatter": _figure_json(scatter_figure(snapshots)),
                    "progress": _figure_json(progress_figure(snapshots)),
                    "failures": _figure_json(failures_figure(snapshots))},
    }


class DashboardSource:
    """The runs a dashboard was given, opened read-only once; builds the payload only when a run has changed.

    Args:
        run_dirs: run directories as the user wrote them (shown in replay commands).

    Raises:
        ValueError: a path is not a run directory (results.store.NoStoreError).
    """

    def __init__(self, run_dirs: Sequence[str]):
        from mnas.results.store import ResultStore

        if not run_dirs:
            raise ValueError("no run directory given")
        # A store file given instead of its run directory: labels and replay commands name the directory.
        self.run_dirs = [str(Path(run_dir).parent) if Path(run_dir).is_file() else str(run_dir)
                         for run_dir in run_dirs]
        self.labels = views.run_labels(self.run_dirs)
        self._stores = []
        try:
            for run_dir in self.run_dirs:
                self._stores.append(ResultStore.open_run(run_dir, readonly=True))
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._cached: tuple[str, dict] | None = None

    def snapshots(self) -> list[RunSnapshot]:
        return [views.read_run(store, label, run_dir)
                for store, label, run_dir in zip(self._stores, self.labels, self.run_dirs)]

    def _quick_version(self) -> str:
        """The payload version without reading the children: a count suffices, they are never rewritten."""
        return payload_version([run_version(store.count(), store.controller_stats()) for store in self._stores])

    def payload(self) -> dict[str, Any]:
        """The current payload; rebuilt only when a run has gained children or controller steps."""
        with self._lock:
            if self._cached is None or self._cached[0] != self._quick_version():
                payload = build_payload(self.snapshots())
                self._cached = (payload["version"], payload)
            return self._cached[1]

    def close(self) -> None:
        for store in self._stores:
            store.close()


# ---------------------------------------------------------------------------------------------------------------
# The page.


def static_text(name: str) -> str:
    """A file of results/static (package data, so an installed package has it too)."""
    return resources.files("results").joinpath("static", name).read_text(encoding="utf-8")


def plotly_js() -> str:
    """plotly.js as shipped inside the plotly Python package: no CDN, the page works offline."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no '<' at all, so neither '</script' nor '<!--' can end or bend it."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def render_page(title: str, config: dict[str, Any], plotly_tag: str) -> str:
    """The page: the template with the stylesheet, plotly, the page config (and payload) and the script inlined.

    Args:
        config: {"live": bool, "refresh_seconds": float, "payload": dict | None} read by dashboard.js.
        plotly_tag: the <script> element that loads plotly.js (a served file, or the library inlined).
    """
    parts = {"TITLE": html.escape(title), "STYLE": f"<style>\n{static_text('dashboard.css')}</style>",
             "PLOTLY": plotly_tag,
             "CONFIG": f'<script id="mnas-config" type="application/json">{_script_json(config)}</script>',
             "SCRIPT": f"<script>\n{static_text('dashboard.js')}</script>"}
    # One pass: text inserted for one marker is never searched for another.
    return re.sub(r"<!--MNAS:(\w+)-->", lambda match: parts[match.group(1)], static_text("dashboard.html"))


def page_title(labels: Sequence[str]) -> str:
    return "MNAS · " + ", ".join(labels)


def report_html(run_dirs: Sequence[str]) -> str:
    """The whole report as one self-contained HTML string."""
    source = DashboardSource(run_dirs)
    try:
        payload = source.payload()
    finally:
        source.close()
    script = plotly_js()
    if "</script" in script.lower():  # would end the inline element early; plotly's own to_html relies on this too
        raise RuntimeError("plotly.js contains '</script' and cannot be inlined")
    return render_page(page_title(source.labels), {"live": False, "payload": payload},
                       f"<script>{script}</script>")


def write_report(run_dirs: Sequence[str], out: str | os.PathLike) -> Path:
    """Writes the report to `out` atomically (a reader never sees half a file). Returns the path."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"cannot write the report to {out}: it is a directory")
    if not out.parent.is_dir():
        raise ValueError(f"cannot write the report to {out}: directory {out.parent} does not exist")
    text = report_html(run_dirs)
    try:
        atomic_write(out, text.encode("utf-8"))
    except OSError as err:  # a read-only file system, no permission, a full disk: nothing is left behind
        raise ValueError(f"cannot write the report to {out}: {err.strerror or err}") from None
    return out
