"""The server side of benchmarks/load.py: ``appliance serve`` as a subprocess
(ready line, drained log, memory and CPU from /proc, SIGTERM), and reading its
Prometheus metrics."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Mapping

# Start-up lines worth echoing in a benchmark's output: the GPU backend's
# kernel warm-up and a slow start's reason (appliance.server logs them).
STARTUP_KEYS = ("warm", "compil", "ready in", "backend")


class ServerProcess:
    """``appliance serve`` as a subprocess, on free ports, with its log drained.

    Its standard error is read to the end by a thread (a full pipe would block
    the server's logging); WARNING and ERROR lines and tracebacks are kept.
    """

    def __init__(self, proc: subprocess.Popen[str], address: str, metrics_url: str) -> None:
        self.proc = proc
        self.address = address
        self.metrics_url = metrics_url
        self.problems: list[str] = []
        self.tail: deque[str] = deque(maxlen=50)
        # Seconds from the spawn to the ready line, and the lines logged before it.
        self.ready_s = 0.0
        self.startup: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, args: list[str], timeout: float = 120, config: str | None = None,
              env: Mapping[str, str] | None = None) -> ServerProcess:
        """``appliance [--config CONFIG] serve ARGS`` on free ports, the CPU backend
        unless ARGS say otherwise; the caller's APPLIANCE_* variables are dropped
        (a benchmark's server is configured by its flags), then ``env`` added
        (e.g. APPLIANCE_GPU_STRICT=1 for the GPU check)."""
        began = time.perf_counter()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")},
               **(env or {})}
        command = [sys.executable, "-m", "appliance", *(["--config", config] if config else []),
                   "serve", "--port", "0", "--metrics-port", "0", "--backend", "cpu", *args]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None
        timer = threading.Timer(timeout, proc.kill)  # a server that never gets ready
        timer.start()
        seen: list[str] = []
        try:
            for line in proc.stderr:
                seen.append(line.rstrip())
                if "appliance ready" in line:
                    grpc_at = re.search(r"grpc=(\S+)", line)
                    metrics_at = re.search(r"metrics=(\S+)", line)
                    if grpc_at and metrics_at:
                        server = cls(proc, grpc_at.group(1), metrics_at.group(1))
                        server.ready_s = time.perf_counter() - began
                        server.startup = seen
                        return server
        finally:
            timer.cancel()
        proc.kill()
        raise RuntimeError(
            f"the server exited before it was ready (rc {proc.wait()}): {command}\n"
            + "\n".join(seen[-20:])
        )

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip()
            self.tail.append(line)
            if any(k in line for k in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")):
                self.problems.append(line)

    def _status(self, key: str) -> float | None:
        """A ``Vm*`` line of /proc/PID/status, in MB (None once the process is gone);
        other lines (Threads) as their plain number."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith(key + ":"):
                        value = int(line.split()[1])
                        return value * 1024 / 1e6 if key.startswith("Vm") else value
        except OSError:
            pass
        return None

    def startup_notes(self) -> list[str]:
        """The start-up lines that say what took the time (kernel warm-up, backend)."""
        return [line for line in self.startup if "appliance ready" not in line
                and any(k in line.lower() for k in STARTUP_KEYS)]

    def rss_mb(self) -> float | None:
        return self._status("VmRSS")

    def tree_rss_mb(self) -> float:
        """Resident memory of the server and all its descendants (the decode
        zygote and its workers), in MB."""
        return sum(_rss_mb(pid) for pid in descendants(self.proc.pid))

    def threads(self) -> int:
        return int(self._status("Threads") or 0)

    def hwm_mb(self) -> float | None:
        """Peak resident memory since the start (VmHWM)."""
        return self._status("VmHWM")

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time of the server so far."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, wait: float = 20) -> tuple[float, int]:
        """SIGTERM, then SIGKILL after ``wait`` s; returns (seconds to exit, exit code).

        A kill is reported among ``problems``: the server should drain and exit.
        """
        began = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.problems.append(f"did not exit {wait:g} s after SIGTERM: killed")
                self.proc.kill()
                self.proc.wait()
        else:
            self.problems.append(f"exited by itself during the phase (rc {self.proc.returncode})")
        self._reader.join(5)
        return time.perf_counter() - began, self.proc.returncode


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from the parents in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return 0.0


def scrape(url: str) -> dict[str, float]:
    """Prometheus text from ``url`` as {'name{labels}': value} (no HELP/TYPE lines)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def metric(values: dict[str, float], name: str, labels: str = "") -> float:
    """One sample of a scrape, 0 when absent (a labelled counter not yet touched)."""
    return values.get(f"{name}{{{labels}}}" if labels else name, 0.0)
