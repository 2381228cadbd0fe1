"""The report opened in a real headless Chromium: the page loads offline, every chart is drawn,
and the console stays free of errors.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: messages
are JSON ending in a NUL byte, on file descriptors 3 and 4 of the browser), so the test needs
no network port and no driver package. It skips where Chromium is not installed (`.ci/run`
installs Debian's `chromium` when it runs as root).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_report import recorded_run

from ensemble_core.report_html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)
#: How long the page may take to load and draw its charts.
LOAD_SECONDS = 60


class Chromium:
    """A headless Chromium and one page of it, spoken to over the DevTools pipe."""

    def __init__(self, executable: str) -> None:
        to_browser, self._send_end = os.pipe()
        self._receive_end, from_browser = os.pipe()

        def on_fds_3_and_4() -> None:  # dup first: dup2 onto the same number keeps CLOEXEC
            reading, writing = os.dup(to_browser), os.dup(from_browser)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # root in CI
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            preexec_fn=on_fds_3_and_4,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._session = attached["sessionId"]

    def send(self, method: str, params: dict | None = None, *, page: bool = False) -> dict:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page and hasattr(self, "_session"):
            message["sessionId"] = self._session
        os.write(self._send_end, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + LOAD_SECONDS
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply["result"]
            self.events.append(reply)

    def on_page(self, method: str, params: dict | None = None) -> dict:
        return self.send(method, params, page=True)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while not any(message.get("method") == event for message in self.events):
            self.events.append(self._receive(deadline))

    def evaluate(self, expression: str) -> Any:
        reply = self.on_page("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return reply["result"].get("value")

    def errors(self) -> list[dict]:
        """What the page reported as an error: uncaught exceptions, console.error, log errors."""
        found = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if (
                method == "Runtime.exceptionThrown"
                or (method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"))
                or (method == "Log.entryAdded" and params["entry"]["level"] == "error")
            ):
                found.append(params)
        return found

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            if select.select([self._receive_end], [], [], left)[0]:
                chunk = os.read(self._receive_end, 1 << 20)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.process.wait(10)
        except Exception:
            self.process.kill()
            self.process.wait()
        os.close(self._send_end)
        os.close(self._receive_end)
        self._profile.cleanup()


@pytest.fixture
def chromium():
    assert CHROMIUM is not None
    browser = Chromium(CHROMIUM)
    try:
        yield browser
    finally:
        browser.close()


def open_page(chromium: Chromium, page: Path, width: int = 1280) -> None:
    for domain in ("Page", "Runtime", "Log"):
        chromium.on_page(f"{domain}.enable")
    chromium.on_page(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    chromium.on_page("Page.navigate", {"url": page.resolve().as_uri()})
    chromium.wait_for("Page.loadEventFired")


def test_the_report_loads_offline_draws_every_chart_and_logs_no_error(tmp_path, chromium):
    report = tmp_path / "report.html"
    write_report(recorded_run(tmp_path), report)
    open_page(chromium, report)
    drawn = chromium.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot')]"
        ".map(chart => [chart.id, chart.querySelectorAll('.main-svg g.trace').length])"
    )
    assert [chart for chart, _ in drawn] == [f"chart-{index}" for index in range(6)]
    assert all(traces > 0 for _, traces in drawn), drawn
    assert chromium.evaluate("typeof Plotly.version") == "string"
    bars = chromium.evaluate(
        "document.getElementById('chart-3').querySelectorAll('.trace.bars .point').length"
    )
    assert bars >= 10  # every attempt's wait and run: 6 attempts, each with a run bar
    assert chromium.errors() == []
    shot = chromium.on_page("Page.captureScreenshot", {"format": "png"})
    assert base64.b64decode(shot["data"]).startswith(b"\x89PNG")
