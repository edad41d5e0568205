"""The dashboard's figures: accuracy against latency with the Pareto frontier, reward and entropy over the search,
failures by code. Plotly figures built here in Python -- the browser only draws them -- so what they hold is
decided (and tested) on this side; `results.dashboard` puts them into the page and the report.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import plotly.graph_objects as go
from plotly.colors import make_colorscale, sequential
from plotly.subplots import make_subplots

from mnas.results import views
from mnas.results.views import RunSnapshot

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
