"""The dashboard's figures and page: one JSON payload per set of runs, rendered by one page, live or static.

The live dashboard (results/server.py) serves the page and lets it poll the payload; the report (write_report)
inlines the payload and plotly.js into a single HTML file. Both run the same script (static/dashboard.js), so the
shared report shows what the dashboard showed. The figures are Plotly figures built here in Python -- the browser
only draws them -- so what they hold is decided (and tested) on this side.
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
from plotly.colors import make_colorscale, sequential
from plotly.subplots import make_subplots

from mnas.results import views
from mnas.results.views import RunSnapshot
from mnas.search.fileio import atomic_write

DEFAULT_REFRESH_S = 3.0
_TEMPLATE = "plotly_white"
_HOVER = ("<b>%{customdata[7]}</b><br>accuracy %{y:.4f} · latency %{x:.2f} ms (%{customdata[5]})<br>"
          "reward %{customdata[6]} · %{customdata[3]} params · %{customdata[4]} multiply-adds<br>"
          "%{customdata[2]}<extra>%{fullData.name}</extra>")


def _millions(value) -> str:
    value = views.json_number(value)
    return "-" if value is None else f"{value / 1e6:.2f}M"


def _color_values(children) -> tuple[str, list]:
    """The 'search step' colour of each child: the controller's PPO step, or the sample order without one."""
    steps = children["controller_step"]
    if steps.notna().any():
        return "controller step", [views.json_number(v) for v in steps]
    return "sample", [views.json_number(v) for v in children["sample"]]


def _points(run: int, children) -> dict[str, Any]:
    """x, y and the hover/click payload of a set of children.

    customdata[0:2] (run index, trial id) is what a click selects; the rest is hover text, HTML-escaped because
    Plotly renders a little HTML in hover labels.
    """
    return {
        "x": [views.json_number(v) for v in children["latency_ms"]],
        "y": [views.json_number(v) for v in children["accuracy"]],
        "customdata": [[run, row.trial_id, views.hover_arch(row.arch), _millions(row.params), _millions(row.madds),
                        html.escape(row.latency_source) if isinstance(row.latency_source, str) else "-",
                        "-" if views.json_number(row.reward) is None else f"{row.reward:.4f}",
                        html.escape(row.trial_id)]
                       for row in children.itertuples()],
        "hovertemplate": _HOVER,
    }


def scatter_figure(snapshots: Sequence[RunSnapshot]) -> go.Figure:
    """Accuracy against latency of every finished child, each run's frontier drawn through, T as a line.

    Children are coloured by reward (one scale across runs, so runs compare) or, with the buttons, by search step
    or by run; each run keeps its own marker symbol and outline in every mode.
    """
    fig = go.Figure()
    rewards = [r for s in snapshots for r in s.children.loc[s.children["status"] == "ok", "reward"].dropna()]
    low, high = (min(rewards), max(rewards)) if rewards else (0.0, 1.0)
    colors: dict[str, list] = {"reward": [], "step": [], "run": []}
    step_titles = set()
    child_traces = []
    for i, snap in enumerate(snapshots):
        color, symbol = views.RUN_COLORS[i % len(views.RUN_COLORS)], views.RUN_SYMBOLS[i % len(views.RUN_SYMBOLS)]
        ok = snap.children[snap.children["status"] == "ok"]
        step_title, step_colors = _color_values(ok)
        step_titles.add(step_title)
        colors["reward"].append([views.json_number(v) for v in ok["reward"]])
        colors["step"].append(step_colors)
        colors["run"].append(color)
        child_traces.append(len(fig.data))
        fig.add_trace(go.Scatter(
            mode="markers", name=snap.label, legendgroup=snap.label, meta={"run": i, "kind": "children"},
            marker={"symbol": symbol, "size": 9, "color": colors["reward"][-1], "coloraxis": "coloraxis",
                    "line": {"color": color, "width": 1.5 if len(snapshots) > 1 else 0.5}},
            **_points(i, ok)))
        pruned = snap.children[(snap.children["status"] == "pruned") & snap.children["accuracy"].notna()
                               & snap.children["latency_ms"].notna()]
        if len(pruned):
            fig.add_trace(go.Scatter(mode="markers", name=f"{snap.label} pruned", legendgroup=snap.label,
                                     meta={"run": i, "kind": "pruned"}, opacity=0.6,
                                     marker={"symbol": "x-thin-open", "size": 8, "color": "#888"},
                                     **_points(i, pruned)))
        fig.add_trace(go.Scatter(mode="lines+markers", name=f"{snap.label} frontier", legendgroup=snap.label,
                                 meta={"run": i, "kind": "frontier"}, line={"shape": "hv", "color": color, "width": 2},
                                 marker={"symbol": "circle-open", "size": 15, "color": color, "line": {"width": 2}},
                                 **_points(i, views.frontier(snap.children))))
    step_title = step_titles.pop() if len(step_titles) == 1 else "search step"
    x_title, y_title = views.axis_titles(snapshots)  # what the run measured: its proxy task, its latency backend
    buttons = _colour_buttons(colors, (low, high), step_title, child_traces)
    for target, runs in _targets(snapshots).items():
        color = "#444" if len(runs) == len(snapshots) else views.RUN_COLORS[runs[0] % len(views.RUN_COLORS)]
        fig.add_vline(x=target, line={"dash": "dash", "color": color, "width": 1.5},
                      annotation={"text": f"T = {target:g} ms", "font": {"color": color}},
                      annotation_position="top right")
    fig.update_layout(
        template=_TEMPLATE, uirevision="keep", hovermode="closest", height=480,
        margin={"l": 60, "r": 20, "t": 56, "b": 50}, legend={"orientation": "h", "y": -0.16},
        xaxis={"title": {"text": x_title}}, yaxis={"title": {"text": y_title}},
        coloraxis={"colorscale": "Viridis", "cmin": low, "cmax": high, "showscale": bool(child_traces),
                   "colorbar": {"title": {"text": "reward"}, "thickness": 14}},
        updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "active": 0, "x": 0.0,
                      "xanchor": "left", "y": 1.02, "yanchor": "bottom", "pad": {"t": 0, "r": 4},
                      "showactive": True, "font": {"size": 11}}],
        annotations=list(fig.layout.annotations) + [
            {"text": "colour by", "xref": "paper", "yref": "paper", "x": 0, "y": 1.1, "showarrow": False,
             "xanchor": "right", "yanchor": "bottom", "font": {"size": 11, "color": "#666"}}])
    return fig


def _colour_buttons(colors: dict[str, list], reward_range: tuple[float, float], step_title: str,
                    child_traces: list[int]) -> list[dict]:
    """Plotly 'update' buttons that recolour the children traces: by reward, by search step, by run.

    Reward and step share one colour axis across runs, so that a colour means the same value in each run. The
    scales are explicit lists: plotly.js knows fewer scale names than the Python package expands.
    """
    viridis, plasma = make_colorscale(sequential.Viridis), make_colorscale(sequential.Plasma)
    scales = {"reward": (viridis, *reward_range, "reward"), "step": (plasma, None, None, step_title),
              "run": (viridis, None, None, "")}
    buttons = []
    for mode, label in (("reward", "reward"), ("step", "search step"), ("run", "run")):
        scale, cmin, cmax, title = scales[mode]
        buttons.append({"label": label, "method": "update", "args": [
            {"marker.color": colors[mode],
             "marker.coloraxis": ["coloraxis" if mode != "run" else None] * len(colors[mode])},
            {"coloraxis.colorscale": scale, "coloraxis.cmin": cmin, "coloraxis.cmax": cmax,
             "coloraxis.colorbar.title.text": title, "coloraxis.showscale": mode != "run"},
            child_traces]})
    return buttons


def _targets(snapshots: Sequence[RunSnapshot]) -> dict[float, list[int]]:
    """Each distinct latency target and the runs that use it (runs sharing T share one line)."""
    targets: dict[float, list[int]] = {}
    for i, snap in enumerate(snapshots):
        if snap.target_ms is not None:
            targets.setdefault(snap.target_ms, []).append(i)
    return targets


def _order(children) -> list:
    """x of a child over the search: its sample number (the order it was proposed), else its storage order."""
    samples = [views.json_number(sample) for sample in children["sample"]]
    return [i if sample is None else sample for i, sample in enumerate(samples)]


def progress_figure(snapshots: Sequence[RunSnapshot]) -> go.Figure:
    """Reward, accuracy and latency of finished children over the search, with a rolling mean; controller entropy."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=("reward", "accuracy", "latency (ms)", "controller entropy"),
                        horizontal_spacing=0.09, vertical_spacing=0.16)
    for i, snap in enumerate(snapshots):
        color = views.RUN_COLORS[i % len(views.RUN_COLORS)]
        ok = snap.children[snap.children["status"] == "ok"].copy()
        ok["_x"] = _order(ok)
        ok = ok.sort_values("_x", kind="mergesort")
        for column, (row, col) in (("reward", (1, 1)), ("accuracy", (1, 2)), ("latency_ms", (2, 1))):
            values = ok[column].astype("float64")
            custom = [[i, trial_id, html.escape(trial_id)] for trial_id in ok["trial_id"]]
            fig.add_trace(go.Scatter(x=list(ok["_x"]), y=[views.json_number(v) for v in values], mode="markers",
                                     name=snap.label, legendgroup=snap.label, showlegend=column == "reward",
                                     marker={"color": color, "size": 5, "opacity": 0.45}, customdata=custom,
                                     hovertemplate=f"%{{customdata[2]}}: {column} %{{y:.4g}}<extra></extra>",
                                     meta={"run": i, "kind": column}), row=row, col=col)
            mean = values.rolling(views.ROLLING_WINDOW, min_periods=1).mean()
            fig.add_trace(go.Scatter(x=list(ok["_x"]), y=[views.json_number(v) for v in mean], mode="lines",
                                     name=f"{snap.label} mean of {views.ROLLING_WINDOW}", legendgroup=snap.label,
                                     showlegend=False, line={"color": color, "width": 2}, hoverinfo="skip",
                                     meta={"run": i, "kind": f"{column} mean"}), row=row, col=col)
        if "entropy" in snap.stats.columns and len(snap.stats):
            entropy = [views.json_number(v) for v in snap.stats["entropy"]]
            fig.add_trace(go.Scatter(x=list(snap.stats["step"]), y=entropy,
                                     mode="lines+markers", name=f"{snap.label} entropy", legendgroup=snap.label,
                                     showlegend=False, line={"color": color}, marker={"size": 4},
                                     meta={"run": i, "kind": "entropy"}), row=2, col=2)
    for target in _targets(snapshots):
        fig.add_hline(y=target, line={"dash": "dash", "color": "#444", "width": 1}, row=2, col=1)
    for row, col in ((1, 1), (1, 2), (2, 1)):
        fig.update_xaxes(title_text="sample", row=row, col=col)
    fig.update_xaxes(title_text="controller step", row=2, col=2)
    fig.update_layout(template=_TEMPLATE, uirevision="keep", height=520, showlegend=len(snapshots) > 1,
                      margin={"l": 55, "r": 20, "t": 40, "b": 50}, legend={"orientation": "h", "y": -0.14})
    return fig


def failures_figure(snapshots: Sequence[RunSnapshot]) -> go.Figure:
    """Failed children by reason, one bar per run and reason."""
    fig = go.Figure()
    reasons: list[str] = []
    for i, snap in enumerate(snapshots):
        counts = views.failure_counts(snap.children)
        if not counts:
            continue
        reasons += [reason for reason, _ in counts if reason not in reasons]
        fig.add_trace(go.Bar(orientation="h", name=snap.label, meta={"run": i, "kind": "failures"},
                             y=[_short(reason) for reason, _ in counts], x=[n for _, n in counts],
                             hovertext=[html.escape(reason) for reason, _ in counts],
                             hovertemplate="%{x} x %{hovertext}<extra>%{fullData.name}</extra>",
                             marker={"color": views.RUN_COLORS[i % len(views.RUN_COLORS)]}))
    if not reasons:
        fig.add_annotation(text="no failed children", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font={"size": 14, "color": "#666"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    fig.update_layout(template=_TEMPLATE, uirevision="keep", barmode="group", showlegend=len(snapshots) > 1,
                      height=140 + 32 * len(reasons) * max(1, len(snapshots)) ** 0.5,
                      margin={"l": 20, "r": 20, "t": 20, "b": 40}, xaxis={"title": {"text": "failed children"}},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig


def _short(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= views.REASON_CHARS else reason[:views.REASON_CHARS - 1] + "…"


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
