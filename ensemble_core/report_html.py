"""`ensemble report`: one self-contained HTML file of a run, read from its state journal.

The page opens offline (plotly's JavaScript is embedded once) and shows: per group the jobs'
counts and outcomes, histograms of the attempts' run and pending times, a timeline of every job
by group (each attempt's wait and run, coloured by how it ended, with the rule firings marked
on it), how often each rule fired, and the member's size over time as its grow and shrink
actions reported it. Charts are plotly figures; their data are binned in Python first, so a run
of a million jobs still makes a page of a few megabytes (the timeline shows the first
`TIMELINE_JOBS` jobs and says so).
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ensemble_core.control.recorded import OUTCOMES, JobRow, RecordedRun
from ensemble_core.errors import ConfigError
from ensemble_core.metrics import Metrics

#: Jobs drawn in the timeline (the first ones, by key).
TIMELINE_JOBS = 400
#: Bars of each histogram.
BINS = 30
#: Colours of the outcomes (and of time spent waiting), the same in every chart.
COLOURS = {
    "success": "#2ca02c",
    "failed": "#d62728",
    "oom": "#9467bd",
    "timeout": "#ff7f0e",
    "cancelled": "#7f7f7f",
    "unsatisfiable": "#8c564b",
    "node-failure": "#e377c2",
    "open": "#1f77b4",
    "waiting": "#c7d7e8",
}
#: What the members say of a resize (local: "grew by 2 node(s) to 3"; Kubernetes: "size 2 -> 3",
#: "stays at size 2"): the size before and after, where they say it.
_RESIZED = (
    (re.compile(r"grew by (\d+) node\(s\) to (\d+)"), lambda by, to: (to - by, to)),
    (re.compile(r"shrank by (\d+) node\(s\) to (\d+)"), lambda by, to: (to + by, to)),
    (re.compile(r"size (\d+) -> (\d+)"), lambda before, after: (before, after)),
    (re.compile(r"stays at size (\d+)"), lambda size: (size, size)),
)


@dataclass
class _Series:
    """What the report gathers of a run in one pass over its jobs."""

    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    retried: Counter[str] = field(default_factory=Counter)
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pending: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    timeline: list[JobRow] = field(default_factory=list)
    jobs: int = 0


class Run(Protocol):
    """What the report reads of a run: `RecordedRun` (a state journal) answers it, and so does
    `FrontDoorRecord` (a front door's ensemble, kept in memory)."""

    command: dict[str, Any]
    directory: Any

    @property
    def ended(self) -> str | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def meta(self) -> dict[str, Any]: ...
    def metrics(self) -> Metrics: ...
    def actions(self) -> list[dict[str, Any]]: ...
    def action_counts(self) -> list[dict[str, Any]]: ...
    def jobs(self) -> Iterable[JobRow]: ...


def write_report(directory: str | Path, output: str | Path) -> int:
    """Write the report of the run recorded in `directory` to `output`; how many jobs it has."""
    with RecordedRun(directory) as run:
        return write_run_report(run, output)


def write_run_report(run: Run, output: str | Path) -> int:
    """Write the report of `run` to `output`; how many jobs it has."""
    series = _gather(run)
    page = _page(run, series)
    try:
        Path(output).write_text(page, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{output}: cannot write the report there ({error.strerror})") from None
    return series.jobs


def _gather(run: Run) -> _Series:
    series = _Series()
    for job in run.jobs():
        series.jobs += 1
        series.outcomes[job.group][job.outcome or "open"] += 1
        series.retried[job.group] += len(job.attempts) - 1
        for attempt in job.attempts:
            if attempt.start_time is not None and attempt.end_time is not None:
                series.durations[job.group].append(attempt.end_time - attempt.start_time)
            if attempt.submit_time is not None and attempt.start_time is not None:
                series.pending[job.group].append(attempt.start_time - attempt.submit_time)
        if len(series.timeline) < TIMELINE_JOBS:
            series.timeline.append(job)
    return series


# The page -------------------------------------------------------------------------------------


def _page(run: Run, series: _Series) -> str:
    from plotly.offline import get_plotlyjs

    actions = run.actions()
    started = run.started_at or _first_submit(series.timeline) or time.time()
    sections = [
        ("Jobs per group", _group_table(run, series), _outcomes_figure(series)),
        ("How long jobs ran", "", _histogram(series.durations, "run time (s)")),
        ("How long jobs waited", "", _histogram(series.pending, "pending time (s)")),
        ("Timeline", _timeline_note(series), _timeline(series.timeline, actions, started)),
        ("Rules", "", _rules_figure(run.action_counts())),
        ("Member size", *_member_size(actions, run.meta.get("saved_at", started) - started)),
    ]
    body = "\n".join(
        f"<section><h2>{html.escape(title)}</h2>{note}{_figure_html(figure, index)}</section>"
        for index, (title, note, figure) in enumerate(sections)
    )
    title = f"Ensemble report: {Path(run.command.get('file') or run.directory).name}"
    return _TEMPLATE.format(
        title=html.escape(title),
        plotly=get_plotlyjs(),
        header=_header(run, series, started),
        body=body,
    )


def _figure_html(figure: Any, index: int) -> str:
    if figure is None:
        return ""
    height = figure.layout.height or 360
    return figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{index}",
        default_height=f"{height}px",
        config={"displaylogo": False, "responsive": True},
    )


def _header(run: Run, series: _Series, started: float) -> str:
    command = run.command
    ended = run.ended
    saved = run.meta.get("saved_at", started)
    state = f"ended {ended}" if ended else "not ended (its controller was killed or detached)"
    reason = run.meta.get("stop_reason")
    facts = [
        ("file", command.get("file") or "-"),
        ("member", command.get("member") or "-"),
        ("started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))),
        ("ran for", f"{saved - started:.1f} s"),
        ("state", state + (f": {reason}" if reason else "")),
        ("jobs", f"{series.jobs:,} ({sum(series.retried.values()):,} retries)"),
    ]
    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in facts
    )
    return f"<table class='facts'>{rows}</table>"


def _group_table(run: Run, series: _Series) -> str:
    """Each group's logical jobs by outcome, its retries and its mean times."""
    summary = run.metrics().summary()
    shown = [name for name in (*OUTCOMES, "open") if any(c[name] for c in series.outcomes.values())]
    header = ["group", "jobs", *shown, "retried", "mean run s", "mean wait s"]
    rows = []
    for group, counts in sorted(series.outcomes.items()):
        metrics = summary.get(group, {})
        rows.append(
            [
                group,
                sum(counts.values()),
                *(counts[name] for name in shown),
                series.retried[group],
                _mean(metrics.get("duration")),
                _mean(metrics.get("pending_time")),
            ]
        )
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table class='groups'><tr>{head}</tr>{cells}</table>"


def _mean(statistics: dict[str, float] | None) -> str:
    return "-" if not statistics else f"{statistics['mean']:.2f}"


def _timeline_note(series: _Series) -> str:
    text = (
        "Each bar is one attempt: light while it waited, then coloured by how it ended. "
        "Crosses mark rule firings on a job; the top row holds the firings on no one job."
    )
    if series.jobs > len(series.timeline):
        text += f" The first {len(series.timeline):,} of {series.jobs:,} jobs are shown."
    return f"<p>{html.escape(text)}</p>"


# The charts -----------------------------------------------------------------------------------


def _layout(figure: Any, height: int, **layout: Any) -> Any:
    figure.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        legend={"orientation": "h", "y": -0.2},
        **layout,
    )
    return figure


def _outcomes_figure(series: _Series) -> Any:
    import plotly.graph_objects as go

    groups = sorted(series.outcomes)
    figure = go.Figure()
    for outcome in (*OUTCOMES, "open"):
        counts = [series.outcomes[group][outcome] for group in groups]
        if any(counts):
            figure.add_bar(
                name=outcome, x=counts, y=groups, orientation="h", marker_color=COLOURS[outcome]
            )
    if any(series.retried.values()):
        figure.add_bar(
            name="retries",
            x=[series.retried[group] for group in groups],
            y=groups,
            orientation="h",
            marker_color="#bcbd22",
            marker_pattern_shape="/",
        )
    return _layout(
        figure,
        140 + 40 * len(groups),
        barmode="stack",
        showlegend=True,
        xaxis_title="logical jobs (and retries)",
    )


def _histogram(values: dict[str, list[float]], title: str) -> Any:
    """One bar series per group over shared bins (binned here, so the page stays small)."""
    import numpy as np
    import plotly.graph_objects as go

    every = [value for group in values.values() for value in group]
    if not every:
        return None
    edges = np.histogram_bin_edges(every, bins=BINS)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure()
    for group, group_values in sorted(values.items()):
        counts, _ = np.histogram(group_values, bins=edges)
        figure.add_bar(name=group, x=centres.tolist(), y=counts.tolist(), opacity=0.75)
    return _layout(
        figure, 320, barmode="overlay", bargap=0.02, xaxis_title=title, yaxis_title="attempts"
    )


def _timeline(jobs: list[JobRow], actions: list[dict[str, Any]], started: float) -> Any:
    import plotly.graph_objects as go

    if not jobs:
        return None
    jobs = sorted(jobs, key=lambda job: (job.group, job.key))
    label = {job.key: f"{job.group} #{job.key}" for job in jobs}
    now = max(
        (a.end_time or a.start_time or a.submit_time or started for j in jobs for a in j.attempts),
        default=started,
    )
    bars: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        for attempt in job.attempts:
            submit = attempt.submit_time
            start = attempt.start_time
            end = attempt.end_time or now
            if submit is not None:
                _bar(bars["waiting"], label[job.key], submit, start or end, started, attempt.number)
            if start is not None:
                outcome = attempt.outcome or "open"
                _bar(bars[outcome], label[job.key], start, end, started, attempt.number)
    rules_row = "rule firings"
    figure = go.Figure()
    for name, bar in bars.items():
        figure.add_bar(
            name=name,
            orientation="h",
            y=bar["y"],
            base=bar["base"],
            x=bar["x"],
            customdata=bar["attempt"],
            hovertemplate="%{y}, attempt %{customdata}: %{base:.2f} s + %{x:.2f} s<extra>"
            + name
            + "</extra>",
            marker_color=COLOURS.get(name, "#17becf"),
        )
    marks = [a for a in actions if a.get("job") in label or a.get("job") is None]
    figure.add_scatter(
        name="rule firing",
        mode="markers",
        x=[a["time"] for a in marks],
        y=[label.get(a.get("job"), rules_row) for a in marks],
        text=[_firing_text(a) for a in marks],
        hovertemplate="%{x:.2f} s: %{text}<extra></extra>",
        marker={"symbol": "x", "size": 9, "color": "#000000"},
    )
    order = [rules_row, *(label[job.key] for job in jobs)]
    return _layout(
        figure,
        160 + 16 * len(order),
        barmode="overlay",
        xaxis_title="seconds since the run started",
        yaxis={"categoryorder": "array", "categoryarray": order[::-1], "automargin": True},
    )


def _bar(
    bar: dict[str, list[Any]], row: str, begin: float, end: float, started: float, number: int
) -> None:
    bar["y"].append(row)
    bar["base"].append(round(begin - started, 3))
    bar["x"].append(round(max(0.0, end - begin), 3))
    bar["attempt"].append(number)


def _firing_text(action: dict[str, Any]) -> str:
    who = "operator" if action["rule"] == -1 else f"rule {action['rule']} ({action['trigger']})"
    return f"{who} {action['action']}: {action['detail']}"


def _rules_figure(counts: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    if not counts:
        return None
    names = [
        f"operator: {c['action']}"
        if c["rule"] == -1
        else f"rule {c['rule']}: {c['trigger']} → {c['action']}"
        for c in counts
    ]
    most = max(c["count"] for c in counts)
    figure = go.Figure(
        go.Bar(x=[c["count"] for c in counts], y=names, orientation="h", marker_color="#1f77b4")
    )
    return _layout(
        figure,
        120 + 32 * len(counts),
        xaxis={"title": "times fired", "dtick": 1 if most <= 10 else None},
        yaxis={"autorange": "reversed", "automargin": True},
    )


def _member_size(actions: list[dict[str, Any]], end: float) -> tuple[str, Any]:
    """The member's size after each grow and shrink that said it, as a step line to `end`."""
    import plotly.graph_objects as go

    resizes = [a for a in actions if a["action"] in ("grow", "shrink")]
    if not resizes:
        return "<p>No grow or shrink in this run.</p>", None
    times: list[float] = []
    sizes: list[int] = []
    texts: list[str] = []
    for action in resizes:
        said = _sizes(action["detail"])
        if said is None:
            continue
        before, after = said
        if not sizes:
            times.append(0.0)
            sizes.append(before)
            texts.append("at the start")
        times.append(action["time"])
        sizes.append(after)
        texts.append(_firing_text(action))
    unsized = [a for a in resizes if _sizes(a["detail"]) is None]
    note = "".join(
        f"<li>{action['time']:.1f} s: {html.escape(_firing_text(action))}</li>"
        for action in unsized
    )
    note = f"<p>Resizes that did not state a size:</p><ul>{note}</ul>" if note else ""
    if not sizes:
        return note, None
    if end > times[-1]:
        times.append(round(end, 3))
        sizes.append(sizes[-1])
        texts.append("when the run was last recorded")
    figure = go.Figure(
        go.Scatter(
            x=times,
            y=sizes,
            text=texts,
            mode="lines+markers",
            line_shape="hv",
            hovertemplate="%{x:.2f} s: size %{y}<br>%{text}<extra></extra>",
        )
    )
    return note, _layout(
        figure, 300, xaxis_title="seconds since the run started", yaxis_title="nodes"
    )


def _sizes(detail: str) -> tuple[int, int] | None:
    for pattern, sizes in _RESIZED:
        found = pattern.search(detail)
        if found:
            return sizes(*(int(number) for number in found.groups()))
    return None


def _first_submit(jobs: list[JobRow]) -> float | None:
    times = [a.submit_time for job in jobs for a in job.attempts if a.submit_time is not None]
    return min(times, default=None)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1.5em;
       max-width: 1200px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
th, td {{ padding: 0.2em 0.8em; text-align: left; border-bottom: 1px solid #ddd; }}
table.groups td {{ text-align: right; }} table.groups td:first-child {{ text-align: left; }}
</style>
<script type="text/javascript">{plotly}</script>
</head>
<body>
<h1>{title}</h1>
{header}
{body}
</body>
</html>
"""
