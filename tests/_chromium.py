"""Open a local page in headless Chromium (Debian's `chromium`) over the DevTools protocol on a pipe, and report
what a person would see: console errors and uncaught exceptions, requests that left the machine, values the page
computes, and a screenshot. No browser download, no network port: `--remote-debugging-pipe` talks over fds 3/4."""
from __future__ import annotations

import base64
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

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (apt-get install chromium)")

# JavaScript: every report figure by id, with how many SVG paths it holds and its width on screen
PLOTS = ("JSON.stringify(Object.fromEntries([...document.querySelectorAll('figure.plot')].map(f => [f.id, "
         "[f.querySelectorAll('svg path').length, f.querySelector('svg').getBoundingClientRect().width]])))")


@dataclass
class Page:
    errors: list[str] = field(default_factory=list)      # console.error/assert, uncaught exceptions, error log entries
    requests: list[str] = field(default_factory=list)    # every URL the page asked for
    values: dict = field(default_factory=dict)           # what the evaluated expression returned
    screenshot: bytes = b""                             # PNG


def open_page(path: Path, expression: str = "null", *, width: int = 1200, height: int = 1600,
              timeout: float = 60.0) -> Page:
    """Load ``path``, evaluate the JavaScript ``expression`` (its JSON-able value lands in ``values``) and take a
    screenshot."""
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()
    fd_in, fd_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_chrome_r, from_chrome_w))
    with tempfile.TemporaryDirectory() as profile:
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
        proc = subprocess.Popen(["bash", "-c", f'exec "$0" "$@" 3<&{fd_in} 4>&{fd_out} {fd_in}<&- {fd_out}>&-',
                                 CHROMIUM, *args], pass_fds=(fd_in, fd_out),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_chrome_r, from_chrome_w, fd_in, fd_out):
            os.close(fd)
        cdp = _Cdp(to_chrome_w, from_chrome_r, time.monotonic() + timeout)
        try:
            return cdp.visit(path.resolve().as_uri(), expression)
        finally:
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Cdp:
    def __init__(self, write_fd: int, read_fd: int, deadline: float):
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer, self.next_id, self.events = b"", 0, []

    def visit(self, url: str, expression: str) -> Page:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Page.navigate", session=session, url=url)
        self.wait_for("Page.loadEventFired")
        value = self.call("Runtime.evaluate", session=session, expression=expression, returnByValue=True)
        shot = self.call("Page.captureScreenshot", session=session, format="png")
        page = Page(values=value["result"].get("value"), screenshot=base64.b64decode(shot["data"]))
        for method, params in self.events:
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                page.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                page.errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                page.errors.append(params["entry"]["text"])
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
        self.send("Browser.close")
        return page

    def send(self, method: str, session: str | None = None, **params) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        return self.next_id

    def call(self, method: str, session: str | None = None, **params) -> dict:
        ident = self.send(method, session, **params)
        while True:
            message = self.receive()
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def wait_for(self, event: str) -> None:
        while not any(method == event for method, _ in self.events):
            self.receive()

    def receive(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append((message["method"], message.get("params", {})))
        return message


def blank_fraction(png: bytes) -> float:
    """Share of the screenshot's pixels that are (near) white."""
    import io

    import numpy as np
    from PIL import Image

    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    return float((gray > 245).mean())
