"""The metric names a rule may read, checked when the file is loaded: a typo is a rule that
never fires, so it is refused with a "did you mean".

The names follow `ensemble_core.metrics`: `count.<group>.<key>`, `<stat>.<group>-<series>` and
`queue.<gauge>`. The group is checked only against the groups a file defines itself (`jobs:`);
a shared rules file names Snakemake rules or Parsl functions that are known only at run time.
With several members, `@<member>` in place of a group reads that member's jobs
(`count.@cloud.running`, `mean.@cloud-pending`); the loader checks the member's name.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable

from ensemble_core.events import Outcome
from ensemble_core.metrics import COUNTS, STATISTIC_ALIASES, STATISTICS, SUMMARY_SERIES

#: Every counter a group has: the metrics' own, one per outcome, and the rules' resubmissions.
COUNTER_KEYS = (*COUNTS, *(o.value for o in Outcome if o.value not in COUNTS), "resubmitted")
#: The queue-wide gauges (`Metrics.gauge`).
GAUGES = ("pending", "running", "oldest-pending")
STATISTIC_NAMES = (*STATISTICS, *STATISTIC_ALIASES)
FORMS = "count.<group>.<counter>, <statistic>.<group>-duration, <statistic>.<group>-pending "
FORMS += "or queue.<gauge>"


def check_metric_name(name: str, groups: Collection[str] | None = None) -> None:
    """Raise ValueError saying what is wrong with `name` (and what was probably meant).

    `groups`: the groups that can exist, or None when they are not known yet (a member's
    `@name` is not a group: the loader checks it against the members).
    """
    kind, _, rest = name.partition(".")
    if kind == "queue":
        _check_part("gauge", rest, GAUGES, name)
        return
    if kind == "count":
        group, _, key = rest.rpartition(".")
        if not group:
            raise ValueError(f"'{name}' is not a metric name: write {FORMS}")
        _check_part("counter", key, COUNTER_KEYS, name)
    else:
        if not rest:
            _check_part("metric kind", kind, ("count", "queue", *STATISTIC_NAMES), name)
            raise ValueError(f"'{name}' is not a metric name: write {FORMS}")
        _check_part("statistic", kind, STATISTIC_NAMES, name, also=("count", "queue"))
        group, dash, series = rest.rpartition("-")
        if not dash or not group:
            raise ValueError(
                f"'{name}' is not a metric name: a statistic reads <group>-duration or "
                "<group>-pending"
            )
        _check_part("series", series, SUMMARY_SERIES, name)
    if groups is not None and not group.startswith("@"):
        _check_part("group", group, groups, name)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" when a choice is close to `word`, else ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_part(
    what: str, part: str, known: Collection[str], name: str, also: Iterable[str] = ()
) -> None:
    if part in known:
        return
    hint = did_you_mean(part, [*known, *also])
    listed = ", ".join(sorted(known)) if len(known) <= 12 else f"{len(known)} of them"
    raise ValueError(f"'{name}': unknown {what} '{part}' (known: {listed}){hint}")
