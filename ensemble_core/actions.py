"""Performing what the rule engine decided, each action contained.

Every firing passes through `Actions.perform`: whatever an action does wrong (a custom function
that raises or returns something that is not an action, a member that refuses a resize, a job
group that cannot become a job) becomes that action's recorded result, logged once, and the
ensemble goes on. Grow and shrink run as tasks the controller waits for before it ends, each
bounded by `ACTION_TIMEOUT_SECONDS`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ensemble_core.errors import MemberError
from ensemble_core.matching import sent_to
from ensemble_core.members.router import RouterMember
from ensemble_core.rules.engine import Firing, is_reactive
from ensemble_core.rules.schema import Action

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble

log = logging.getLogger(__name__)

#: The longest a grow or shrink may take before the ensemble stops waiting for it.
ACTION_TIMEOUT_SECONDS = 300.0
#: Entries of the action record kept (the latest); counts per rule cover every action.
KEPT_ACTIONS = 1000


def one_line(error: BaseException) -> str:
    """An exception as one line a person reads: its type where the message alone is unclear."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    if not text:
        return name
    if isinstance(error, (OSError, ValueError, LookupError, TypeError, AttributeError)):
        return f"{name}: {text}"
    return text


class Actions:
    """Performs firings on the controller it belongs to and keeps the record of what was done."""

    def __init__(self, ensemble: Ensemble) -> None:
        self._ensemble = ensemble
        #: What the latest actions did, in order (`--json`, summaries): a run that retries a
        #: million jobs keeps the last KEPT_ACTIONS, and `counts` has them all.
        self.entries: deque[dict[str, Any]] = deque(maxlen=KEPT_ACTIONS)
        #: Actions recorded per (rule, action).
        self.counts: Counter[tuple[int, str]] = Counter()
        #: grow/shrink still running: the ensemble does not end before they do.
        self.running = 0

    def perform(self, firing: Firing, action: Action | None = None) -> None:
        """Perform one firing; any failure becomes its recorded result."""
        if firing.error is not None:
            self._failed(firing, f"rule switched off: {firing.error}", action)
            return
        action = action or firing.rule.action
        try:
            self._dispatch(firing, action)
        except Exception as error:
            self._failed(firing, f"failed: {one_line(error)}", action, error)

    def record(
        self,
        firing: Firing,
        detail: str,
        *,
        action: Action | None = None,
        job: Any = None,
        level: int = logging.INFO,
    ) -> None:
        entry = {
            "rule": firing.index,
            "action": (action or firing.rule.action).name,
            "trigger": firing.rule.trigger,
            "time": round(time.time() - self._ensemble.started_at, 3),
            "detail": detail,
        }
        if firing.group:
            entry["group"] = firing.group
        if job is not None:
            entry["job"] = job
        self.entries.append(entry)
        self.counts[firing.index, entry["action"]] += 1
        if self._ensemble.journal is not None:
            self._ensemble.journal.action(entry)
        log.log(level, "rule %d %s: %s", firing.index, entry["action"], detail)

    def summary(self) -> list[dict[str, Any]]:
        """How many times each rule's action was recorded, in rule order."""
        return [
            {"rule": rule, "action": action, "count": count}
            for (rule, action), count in sorted(self.counts.items())
        ]

    # The actions ------------------------------------------------------------------------------

    def _dispatch(self, firing: Firing, action: Action) -> None:
        name = action.name
        ensemble = self._ensemble
        if name == "submit":
            template = ensemble.templates.get(action.label or "")
            if template is None:
                self.record(firing, f"no job group '{action.label}' to submit", action=action)
                return
            count = action.value or template.count
            spec = template.spec()
            if action.member:
                self._router().named(action.member)
                spec = sent_to(spec, action.member)
            submitted = ensemble.submit_group(spec, count, reactive=is_reactive(firing.rule))
            where = f" to the {action.member} member" if action.member else ""
            self.record(firing, f"{submitted} x {template.name}{where}", action=action)
        elif name == "cancel":
            count = ensemble.cancel_where(action.label, firing.job)
            self.record(firing, f"{count} job(s)", action=action)
        elif name in ("grow", "shrink"):
            member = ensemble.member if not action.member else self._router().named(action.member)
            resize = member.grow if name == "grow" else member.shrink
            self._run(firing, action, resize, action.value or 1, action.member)
        elif name == "route":
            self.record(
                firing, self._router().route(action.label or "", action.member), action=action
            )
        elif name == "terminate":
            self.record(firing, "ensemble terminated", action=action)
            ensemble.end(f"rule {firing.index} terminated the ensemble", "terminated")
        elif name == "custom":
            self._custom(firing, action)
        elif name == "resubmit":
            self.record(firing, "not resubmitted: only an ended job can be", action=action)

    def _router(self) -> RouterMember:
        """The member of several members that actions naming a member address."""
        member = self._ensemble.member
        if not isinstance(member, RouterMember):
            raise MemberError(
                "the ensemble has one member: declare several under members: to name one"
            )
        return member

    def _run(
        self,
        firing: Firing,
        action: Action,
        resize: Callable[[int], Any],
        value: int,
        member: str | None = None,
    ) -> None:
        """A member resize, as a task the ensemble waits for (bounded) before it ends; the
        result names the `member` when the action named one."""

        async def resize_and_record() -> None:
            try:
                await self._ensemble.durable(decided)
                async with asyncio.timeout(ACTION_TIMEOUT_SECONDS):
                    detail = await resize(value)
            except TimeoutError:
                self._failed(firing, f"timed out after {ACTION_TIMEOUT_SECONDS:g} s", action)
            except Exception as error:
                self._failed(firing, f"failed: {one_line(error)}", action, error)
            else:
                self.record(firing, f"{member}: {detail}" if member else str(detail), action=action)
            finally:
                self.running -= 1
                self._ensemble.check_idle()

        self.running += 1
        # What the rules decided is written before the queue acts (the task waits for it).
        decided = self._ensemble.flush_state(durable=False)
        self._ensemble.spawn(resize_and_record())

    def _custom(self, firing: Firing, action: Action) -> None:
        ensemble = self._ensemble
        if not ensemble.allow_custom:
            self.record(firing, "skipped: custom actions need --allow-custom", action=action)
            return
        module_name, _, function_name = (action.function or "").partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError, ValueError) as error:
            self.record(firing, f"cannot load {action.function}: {error}", action=action)
            return
        result = function(rule=firing.rule, group=firing.group, job=firing.job, ensemble=ensemble)
        self.record(firing, f"called {action.function}", action=action)
        if result is None:
            return
        try:
            returned = Action.model_validate(result)
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "action"
            self._failed(
                firing,
                f"{action.function} returned {result!r}, not an action ({where}: {problem['msg']})",
                action,
            )
            return
        self.perform(firing, returned)

    def _failed(
        self,
        firing: Firing,
        detail: str,
        action: Action | None,
        error: BaseException | None = None,
    ) -> None:
        """Record a failed action and log it once (with the traceback only in debug logs)."""
        self.record(firing, detail, action=action, level=logging.WARNING)
        if error is not None:
            log.debug("rule %d failed", firing.index, exc_info=error)
