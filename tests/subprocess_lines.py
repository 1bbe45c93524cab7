"""A subprocess whose output lines a thread collects, so a test can wait for one (interruption tests)."""

from __future__ import annotations

import queue
import subprocess
import threading
import time


class LineReader:
    """``command`` run with stdout and stderr merged; ``wait_for`` blocks until a line contains a text."""

    def __init__(self, command: list[str], env: dict):
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            self._q.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> float:
        """The time the first line containing ``text`` arrived; AssertionError with the output if none did."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if text in self._q.get(timeout=0.1):
                    return time.monotonic()
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    break
        raise AssertionError(f"never saw {text!r}; output:\n{self.output}")

    def finish(self, timeout: float = 120) -> int:
        rc = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader drain
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)
