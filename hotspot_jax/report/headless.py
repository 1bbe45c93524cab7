"""Open a page in headless Chromium over the DevTools protocol: console errors, JavaScript, clicks, screenshots.

Used by the report's browser test and to make the README's screenshot. Needs a ``chromium`` (Debian's
package) or ``google-chrome`` executable and the ``websocket-client`` package (the ``dev`` extra).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    """The path of the first Chromium-family executable on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessPage:
    """One headless Chromium tab. ``errors`` collects console errors, uncaught exceptions and failed loads."""

    def __init__(self, width: int = 1280, height: int = 900, browser: str | None = None, timeout: float = 60.0):
        import websocket  # websocket-client

        self.browser = browser or find_browser()
        if self.browser is None:
            raise RuntimeError(f"no Chromium executable found (looked for {', '.join(BROWSERS)})")
        self.timeout = timeout
        self._profile = tempfile.mkdtemp(prefix="hotspot_chromium_")
        self._proc = subprocess.Popen(
            [self.browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
             f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.loads(resp.read())
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._next_id = 0
        self.errors: list[str] = []
        self._events: list[dict[str, Any]] = []
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(method)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _devtools_port(self) -> int:
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.browser} exited with status {self._proc.returncode} at start")
            if marker.is_file():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.1)
        raise RuntimeError(f"{self.browser} did not open its DevTools port within {self.timeout:.0f} s")

    def _record(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        self._events.append(message)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events that arrive meanwhile are recorded."""
        self._next_id += 1
        ident = self._next_id
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._record(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Block until event ``method`` arrives (or was recorded since the last wait)."""
        for k, message in enumerate(self._events):
            if message.get("method") == method:
                del self._events[: k + 1]
                return message
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self._record(message)
            if message.get("method") == method:
                self._events.clear()
                return message
        raise TimeoutError(f"no {method} within {self.timeout:.0f} s")

    def open(self, path: str | os.PathLike) -> None:
        """Load a local file (file:// URL) and wait for its load event."""
        self._events.clear()
        self.send("Page.navigate", url=Path(path).resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable results)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def click(self, x: float, y: float) -> None:
        """A left mouse click at page coordinates, as a user's (pressed, released)."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: str | os.PathLike, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or the whole page, up to 4000 px high)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000), "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the connection, stop the browser and remove its profile."""
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - the browser may already be gone
                pass
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessPage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m hotspot_jax.report.headless PAGE.html OUT.png``: a screenshot of a page (the README's)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m hotspot_jax.report.headless",
                                description="Open a local HTML page in headless Chromium and save a PNG screenshot; "
                                "exits 1 when the page logged console errors.")
    p.add_argument("page", help="HTML file")
    p.add_argument("out", help="PNG to write")
    p.add_argument("--width", type=int, default=1280, help="viewport width in px (default: 1280)")
    p.add_argument("--height", type=int, default=1300, help="viewport height in px (default: 1300)")
    args = p.parse_args(argv)
    if not Path(args.page).is_file():
        print(f"error: {args.page} is not a file", file=sys.stderr)
        return 2
    try:
        with HeadlessPage(width=args.width, height=args.height) as page:
            page.open(args.page)
            page.screenshot(args.out)
            errors = page.errors
    except (RuntimeError, TimeoutError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for error in errors:
        print(f"page error: {error}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
