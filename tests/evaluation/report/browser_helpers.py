"""Drive headless Chromium over the DevTools protocol on a pipe, for the report's browser test.

Why the pipe (``--remote-debugging-pipe``) and not stderr logging: with
``--enable-logging=stderr`` Chromium prints every console message as ``INFO:CONSOLE`` whatever
its level, so a ``console.error`` cannot be told from a ``console.log``, and a blocked resource
(e.g. a CSP violation or a failed image) is not reported reliably. The DevTools protocol reports
each of them as a typed event (``Runtime.exceptionThrown``, ``Runtime.consoleAPICalled`` with its
``type``, ``Log.entryAdded`` with its ``level``). The pipe needs no port and no websocket library:
Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4.

One page load gives everything the test needs: the console errors, the DOM (``outerHTML``, as
``--dump-dom`` would print it), each ``<img>``'s natural size, and a PNG screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = (
    "headless Chromium is needed for the report's browser test: install it with "
    "`apt-get install -y chromium` (Debian package, as root), or set ECOMRL_SKIP_BROWSER=1 "
    "to skip this test"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """The Chromium binary: ``/usr/bin/chromium`` or one on ``PATH``, else ``None``."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageResult:
    """What one page load in headless Chromium produced."""

    console_errors: list[str]
    """Uncaught exceptions, ``console.error``/``assert`` calls and error-level log entries."""
    console_messages: list[str]
    """Every console message and log entry, for the failure message."""
    dom: str
    """``document.documentElement.outerHTML`` after load."""
    images: list[dict[str, Any]]
    """Per ``<img>``: ``alt``, ``naturalWidth``, ``naturalHeight``, ``complete``, ``plot`` key."""
    svgs: list[dict[str, Any]]
    """Per ``<svg>``: rendered ``width`` and ``height``."""
    screenshot_png: bytes
    title: str
    extra: dict[str, Any] = field(default_factory=dict)


class _Pipe:
    """NUL-delimited JSON messages to and from Chromium's DevTools pipe."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write_fd = write_fd
        self._read_fd = read_fd
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        while data:
            written = os.write(self._write_fd, data)
            data = data[written:]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from Chromium's DevTools pipe")
            ready, _, _ = select.select([self._read_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe (it exited)")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and wait for its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for an event (or return it if it already arrived)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message

    def drain(self, seconds: float) -> None:
        """Collect events for a little while (late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                message = self._read_message(deadline)
                if "method" in message:
                    self.events.append(message)
        except TimeoutError:
            return


_PAGE_FACTS_JS = """
JSON.stringify({
  title: document.title,
  dom: document.documentElement.outerHTML,
  images: Array.from(document.images).map(i => ({
    alt: i.alt, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
    complete: i.complete, plot: i.dataset.plot || null,
    width: i.getBoundingClientRect().width, height: i.getBoundingClientRect().height})),
  svgs: Array.from(document.querySelectorAll('svg')).map(s => ({
    width: s.getBoundingClientRect().width, height: s.getBoundingClientRect().height})),
  scrollHeight: document.documentElement.scrollHeight,
  scripts: document.scripts.length
})
"""


def _describe(event: dict[str, Any]) -> tuple[str, bool]:
    method = event.get("method")
    params = event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "")
        return f"uncaught exception: {text}", True
    if method == "Runtime.consoleAPICalled":
        kind = params.get("type", "log")
        args = " ".join(
            str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
        )
        return f"console.{kind}: {args}", kind in {"error", "assert"}
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        level = entry.get("level", "info")
        text = f"log {level} ({entry.get('source', '?')}): {entry.get('text', '')}"
        if entry.get("url"):
            text += f" [{entry['url']}]"
        return text, level == "error"
    return "", False


def load_page(
    html_path: Path, *, width: int = 1280, height: int = 2000, timeout: float = 60.0
) -> PageResult:
    """Open ``html_path`` in headless Chromium and collect console errors, DOM and a screenshot.

    Raises ``FileNotFoundError`` (with the install hint) when Chromium is missing.
    """
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(INSTALL_HINT)
    profile = tempfile.mkdtemp(prefix="ecomrl-chromium-")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def _wire_fds() -> None:  # runs in the child: Chromium expects fd 3 (in) and fd 4 (out)
        # Copy both ends above 10 first, so that placing one cannot clobber the other; dup2
        # makes 3 and 4 inheritable, every other pipe end is close-on-exec (PEP 446).
        a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.dup2(a, 3)
        os.dup2(b, 4)

    args = [
        binary,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    with tempfile.TemporaryFile() as stderr_log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr_log,
            preexec_fn=_wire_fds,
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            return _inspect(_Pipe(to_child_w, from_child_r), html_path, width, height, timeout)
        except (TimeoutError, RuntimeError) as exc:
            stderr_log.seek(0)
            tail = stderr_log.read()[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"{exc}; Chromium's stderr ends with:\n{tail}") from exc
        finally:
            os.close(to_child_w)
            os.close(from_child_r)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            shutil.rmtree(profile, ignore_errors=True)


def _inspect(pipe: _Pipe, html_path: Path, width: int, height: int, timeout: float) -> PageResult:
    """Load the page in a new tab and collect what :class:`PageResult` holds."""
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
    session = pipe.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})[
        "sessionId"
    ]
    for domain in ("Runtime", "Log", "Page"):
        pipe.call(f"{domain}.enable", session=session)
    pipe.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    pipe.events.clear()
    pipe.call("Page.navigate", {"url": html_path.resolve().as_uri()}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout=timeout)
    pipe.drain(0.3)
    facts_raw = pipe.call(
        "Runtime.evaluate",
        {"expression": _PAGE_FACTS_JS, "returnByValue": True},
        session=session,
    )
    facts = json.loads(facts_raw["result"]["value"])
    shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session)
    pipe.drain(0.2)
    errors: list[str] = []
    messages: list[str] = []
    for event in pipe.events:
        text, is_error = _describe(event)
        if text:
            messages.append(text)
        if is_error:
            errors.append(text)
    with contextlib.suppress(RuntimeError, TimeoutError):
        pipe.call("Browser.close", timeout=5)
    return PageResult(
        console_errors=errors,
        console_messages=messages,
        dom=facts["dom"],
        images=facts["images"],
        svgs=facts["svgs"],
        screenshot_png=base64.b64decode(shot["data"]),
        title=facts["title"],
        extra={"scrollHeight": facts["scrollHeight"], "scripts": facts["scripts"]},
    )
