"""The operator's first hour: each command as a user types it, its exit code, its one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import start_server_process

ENV = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or ENV)


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (no traceback)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert run("demo", "--out", str(out)).returncode == 0
    return out


def test_serve_takes_its_configuration_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('[server]\nlog_format = "json"\n')
    proc, _, ready = start_server_process("--config", str(config))
    try:
        assert json.loads(ready)["msg"].startswith("appliance ready")  # the file applied
    finally:
        proc.terminate()
        proc.wait(30)


def _busy_port() -> tuple[socket.socket, int]:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held, held.getsockname()[1]


@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_a_port_in_use_is_one_line_and_exit_2(flag: str) -> None:
    held, port = _busy_port()
    with held:
        other = "--metrics-port" if flag == "--port" else "--port"
        proc = run("serve", flag, str(port), other, "0", timeout=120)
    assert proc.returncode == 2
    assert f":{port}" in one_error(proc) and "cannot" in one_error(proc)


def test_a_host_not_on_this_machine_is_one_line_and_exit_2() -> None:
    proc = run("serve", "--host", "192.0.2.1", "--port", "0", "--metrics-port", "0",
               "--allow-insecure", timeout=120)
    assert proc.returncode == 2 and "cannot" in one_error(proc)


@pytest.mark.parametrize("command", [
    ("demo", "--out", "{missing}/demo"),
    ("lists", "compile", "{list}", "-o", "{missing}/lists.snap"),
    ("scan", "{dir}", "--out", "{missing}/out.jsonl", "--no-progress"),
])
def test_outputs_into_a_missing_directory_are_refused(tmp_path: Path, command: tuple[str, ...]
                                                      ) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("md5\n" + "0" * 32 + "\n")
    values = {"missing": str(tmp_path / "no" / "such"), "list": str(listing),
              "dir": str(tmp_path)}
    proc = run(*(part.format(**values) for part in command))
    assert proc.returncode == 2 and "does not exist" in one_error(proc)
    assert not (tmp_path / "no").exists()  # parents are never made


def test_a_list_that_fails_at_start_leaves_the_server_up_and_not_serving(tmp_path: Path
                                                                          ) -> None:
    listing = tmp_path / "bad.csv"
    listing.write_text("md5,id\n0123,x\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--port", "0", "--metrics-port", "0",
         "--lists", str(listing)], stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    try:
        for line in proc.stderr:
            if "started NOT_SERVING" in line:
                break
        assert "line 2" in line
        address = re.search(r"grpc=(\S+)", line)
        assert address is not None
        with grpc.insecure_channel(address.group(1)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest()).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            listing.write_text("md5,id\n" + "0" * 32 + ",x\n")  # fixed, then SIGHUP
            proc.send_signal(signal.SIGHUP)
            end = time.monotonic() + 30
            while health.Check(health_pb2.HealthCheckRequest()).status != \
                    health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < end, "SERVING after the fix and SIGHUP"
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_an_open_health_watch_does_not_hold_the_exit() -> None:
    server, address, _ = start_server_process("--grace-seconds", "10")
    with grpc.insecure_channel(address) as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(stream).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        assert time.monotonic() - started < 3
    assert server.stderr is not None
    assert "Traceback" not in server.stderr.read()


def test_allow_list_suppression_is_visible(tmp_path: Path, demo_dir: Path) -> None:
    listed = demo_dir / "listed-by-digest-and-pdq.png"
    import hashlib

    md5 = hashlib.md5(listed.read_bytes()).hexdigest()
    allow = tmp_path / "allow.csv"
    allow.write_text(f"md5\n{md5}\n")
    block = demo_dir / "demo-list.csv"
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "listed.png").write_bytes(listed.read_bytes())
    proc = run("scan", str(folder), "--lists", str(block), "--lists", f"ok:allow={allow}",
               "--no-progress", "--summary-json")
    assert proc.returncode == 0, proc.stderr
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert obj["matched"] is False
    kinds = {(m["list"], m["kind"], m["suppressed"]) for m in obj["matches"]}
    assert ("ok", "allow", False) in kinds and ("demo-list", "block", True) in kinds
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    assert summary["matched_files"] == 0  # an allow list vouched for it, as the server counts


@pytest.mark.parametrize("option", [["--lists", "/nonexistent.csv"], ["--dihedral"],
                                    ["--pdq-threshold", "5"], ["--backend", "cpu"]])
def test_local_options_with_server_are_refused(option: list[str], demo_dir: Path) -> None:
    proc = run("match", "--server", "127.0.0.1:1", *option, str(demo_dir / "not-listed.png"))
    assert proc.returncode == 2 and "cannot apply to --server" in one_error(proc)


def test_client_options_without_server_are_refused(demo_dir: Path) -> None:
    proc = run("hash", "--token", "x", str(demo_dir / "not-listed.png"))
    assert proc.returncode == 2 and "only apply with --server" in one_error(proc)


def test_scan_lists_before_the_directory(demo_dir: Path) -> None:
    proc = run("scan", "--lists", str(demo_dir / "demo-list.csv"), str(demo_dir),
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(list(demo_dir.iterdir()))


def test_a_misspelt_option_shows_its_commands_usage() -> None:
    proc = run("serve", "--prot", "1")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("usage: appliance serve")
    assert one_error(proc) == "appliance serve: error: unrecognized arguments: --prot 1"
    proc = run("lists")
    assert "lists_command" not in proc.stderr and "{compile,inspect}" in proc.stderr


def test_too_large_says_the_true_size_and_local_and_remote_agree(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (3 << 20))
    env = {**ENV, "APPLIANCE_LIMITS_MAX_STREAM_BYTES": str(2 << 20)}
    proc = run("hash", "--signals", "md5", str(big), env=env)
    [obj] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and obj["error"]["code"] == "TOO_LARGE"
    assert obj["error"]["message"] == f"{3 << 20} bytes exceeds limits.max_stream_bytes={2 << 20}"
    small = tmp_path / "small.bin"
    small.write_bytes(b"\0" * (1 << 20))  # over max_file_bytes, under max_stream_bytes
    env = {**ENV, "APPLIANCE_LIMITS_MAX_FILE_BYTES": str(1 << 19)}
    [obj] = [json.loads(line) for line in run("hash", "--signals", "md5", str(small),
                                              env=env).stdout.splitlines()]
    assert "md5" in obj  # as `--server` streams it, locally too


def test_an_unknown_environment_section_is_an_error() -> None:
    proc = run("serve", "--port", "0", env={**ENV, "APPLIANCE_LIMIT_MAX_PIXELS": "5"})
    assert proc.returncode == 2 and "APPLIANCE_LIMIT_MAX_PIXELS" in one_error(proc)
    assert "no section 'limit'" in one_error(proc)
    assert run("doctor", env={**ENV, "APPLIANCE_TOKEN": "t", "APPLIANCE_SERVER_PORT": "0",
                              "APPLIANCE_SERVER_METRICS_PORT": "0"}).returncode == 0


def test_doctor_checks_without_serving(tmp_path: Path) -> None:
    proc = run("doctor", "--port", "0", "--metrics-port", "0")
    assert proc.returncode == 0, proc.stdout
    for check in ("configuration", "backend", "security", "grpc port", "metrics port",
                  "lists", "kernels", "decode workers"):
        assert re.search(rf"^{check}: ok", proc.stdout, re.M), check
    held, port = _busy_port()
    bad = tmp_path / "bad.csv"
    bad.write_text("md5\nnot-a-hash\n")
    with held:
        proc = run("doctor", "--port", str(port), "--metrics-port", "0", "--lists", str(bad))
    assert proc.returncode == 2
    assert re.search(r"^grpc port: FAIL", proc.stdout, re.M)
    assert re.search(r"^lists: FAIL, .*line 2", proc.stdout, re.M)


def test_messages_read_as_english(tmp_path: Path, demo_dir: Path) -> None:
    proc = run("scan", str(demo_dir), "--no-progress")
    assert re.search(r"scanned 5 files .*: \d+ matches in \d+ matched files, 0 errors",
                     proc.stderr), proc.stderr
    one = tmp_path / "one"
    one.mkdir()
    (one / "listed.jpg").write_bytes((demo_dir / "listed-by-pdq.jpg").read_bytes())
    proc = run("scan", str(one), "--no-progress")
    assert re.search(r"scanned 1 file .*: 1 match in 1 matched file, 0 errors",
                     proc.stderr), proc.stderr
    from appliance import signals

    with pytest.raises(Exception, match=r"got 1 character$"):
        signals.get("md5").parse("a")
    snap = tmp_path / "demo.snap"
    assert run("lists", "compile", f"demo={demo_dir / 'demo-list.csv'}", "-o",
               str(snap)).returncode == 0
    created = json.loads(run("lists", "inspect", str(snap)).stdout)["created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created)
    assert "DESIGN.md" not in run("--help").stdout


def test_the_watcher_says_once_that_a_list_is_missing(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("md5\n" + "0" * 32 + "\n")
    config = tmp_path / "appliance.toml"
    config.write_text(f'[server]\nwatch_lists_seconds = 0.1\n[[lists]]\nname = "l"\n'
                      f'path = "{listing}"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(config), "--port", "0",
         "--metrics-port", "0"], stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    metrics = None
    try:
        for line in proc.stderr:
            if "appliance ready" in line:
                metrics = re.search(r"metrics=(\S+)", line)
                break
        listing.unlink()
        time.sleep(1.5)  # about 15 polls of the watcher
        assert metrics is not None
        urllib.request.urlopen(metrics.group(1), timeout=5).read()
    finally:
        proc.terminate()
        rest = proc.communicate(timeout=30)[1]
    assert rest.count("watching lists:") == 1


class _Workers:
    """A pipeline whose decode workers take ``seconds`` to start."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def start(self) -> None:
        time.sleep(self.seconds)

    def warm_up(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("seconds", "says_why"), [(0.0, False), (0.4, True)])
def test_only_a_slow_start_says_it_is_compiling(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, seconds: float,
    says_why: bool
) -> None:
    import asyncio
    import logging

    from appliance import server

    monkeypatch.setattr(server, "compile_kernels", lambda: 0.0)
    monkeypatch.setattr(server, "_SLOW_START", 0.2)
    with caplog.at_level(logging.INFO, logger="appliance.server"):
        asyncio.run(server._warm_up(_Workers(seconds)))  # type: ignore[arg-type]
    said = [r.getMessage() for r in caplog.records]
    assert any("compiling the hashing kernels" in m for m in said) is says_why, said
    assert any("ready in" in m for m in said) is says_why, said
