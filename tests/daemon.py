"""A real `edgeprune watch` process for tests, with its JSON log lines at hand."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class Daemon:
    """`edgeprune watch --log-format json ARGS`; `gate` runs it through tests/slow_cli.py."""

    def __init__(self, workdir: Path, *args: str, gate: Path | None = None) -> None:
        self.log_path = workdir / "watch.log"
        self.out_path = workdir / "watch.out"
        launcher = (
            [str(REPO / "tests" / "slow_cli.py"), str(gate)] if gate else ["-m", "controller.cli"]
        )
        with self.log_path.open("wb") as log, self.out_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *launcher, "watch", "--log-format", "json", *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
            )

    def lines(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"message": line, "level": "RAW"})
        return records

    def messages(self) -> list[str]:
        return [record["message"] for record in self.lines()]

    def count(self, pattern: str) -> int:
        return sum(1 for message in self.messages() if re.search(pattern, message))

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        """The `count`-th log record whose message matches `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.lines() if re.search(pattern, r["message"])]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {count}x {pattern!r} in the daemon's log (exit {self.proc.poll()}):\n"
                    + "\n".join(self.messages()[-40:])
                )
            time.sleep(0.05)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
