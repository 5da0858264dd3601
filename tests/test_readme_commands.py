"""Every command line of the README's shell blocks, run as shown.

The ``sh`` blocks of README.md and deploy/README.md are read, and each of
their command lines is run in a subprocess as a user would type it, with the
paths it names (/tmp/demo, /srv/...) moved into a temporary directory and
the ports of servers made free ones. Output the README shows right after a
block is compared with what the commands printed (fields elided with "…"
skipped). A command line that no longer works as shown fails this test;
one that cannot run here is listed in ``NOT_RUN`` with the reason.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
# Command lines not run here, with why (this test runs inside `dev.py test`).
NOT_RUN = {"python3 dev.py test": "it is the command running this test"}
ENV = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}


def _blocks(path: Path) -> list[tuple[list[str], str]]:
    """(command lines, the untagged block that follows it, if any) per sh block."""
    text = path.read_text(encoding="utf-8")
    blocks = list(re.finditer(r"```(\w*)\n(.*?)```", text, re.S))
    out = []
    for n, block in enumerate(blocks):
        if block.group(1) not in ("sh", "bash"):
            continue
        lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(2).splitlines()]
        after = ""
        if n + 1 < len(blocks) and blocks[n + 1].group(1) == "":
            between = text[block.end() : blocks[n + 1].start()]
            if len(between) < 600:  # the output shown just below the commands
                after = blocks[n + 1].group(2)
        out.append(([line for line in lines if line], after))
    return out


COMMANDS = [(f"{path.name}:{n}", lines, after)
            for path in DOCS for n, (lines, after) in enumerate(_blocks(path))]


def _localise(line: str, tmp: Path) -> str:
    return line.replace("/tmp/", f"{tmp}/tmp/").replace("/srv/", f"{tmp}/srv/")


def _argv(line: str, tmp: Path) -> list[str]:
    words = _localise(line, tmp).split()
    if words[0] in ("appliance", ".venv/bin/appliance"):
        return [sys.executable, "-m", "appliance", *words[1:]]
    if words[0] == "python3":
        return [sys.executable, *words[1:]]
    return words


def _fixtures(tmp: Path) -> None:
    """The files the README's commands name: a block list and an NSRL file."""
    from appliance import demo

    (tmp / "tmp").mkdir()
    srv = tmp / "srv" / "lists"
    srv.mkdir(parents=True)
    (srv / "baseline.csv").write_bytes(demo.build().list_csv)
    (tmp / "srv" / "NSRLFile.txt").write_text(
        '"SHA-1","MD5","CRC32","FileName","FileSize","ProductCode","OpSystemCode",'
        '"SpecialCode"\n"' + "A" * 40 + '","' + "B" * 32 + '","00000000","x","1",1,"1",""\n')


def _serve(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server command on free ports; (process, its gRPC address)."""
    env = {**ENV, "APPLIANCE_SERVER_PORT": "0", "APPLIANCE_SERVER_METRICS_PORT": "0"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"appliance ready: grpc=(\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"{' '.join(argv)}: exited before ready ({proc.wait()})")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def _matches_shown(printed: str, shown: str, tmp: Path) -> None:
    """Each JSON line shown equals the one printed, but for its elided fields."""
    got = [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
    want = [line for line in shown.splitlines() if line.startswith("{")]
    assert len(got) == len(want)
    for line, obj in zip(want, got, strict=True):
        for key, value in re.findall(r'"(\w+)":("[^"]*"|-?\d+|true|false)', line):
            if "…" in value or key not in obj:
                continue
            expected: Any = json.loads(value)
            if key == "file":
                expected = _localise(expected, tmp)
            if not isinstance(obj[key], dict | list):
                assert obj[key] == expected, (key, obj[key], expected)
        if '"matches":[]' in line:
            assert obj["matches"] == []
        for entry in re.findall(r'"entry_id":"([^"]+)"', line):
            assert entry in {m["entry_id"] for m in obj["matches"]}


@pytest.mark.parametrize(("where", "lines", "after"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_the_readme_commands_work_as_shown(where: str, lines: list[str], after: str,
                                           tmp_path: Path) -> None:
    _fixtures(tmp_path)
    server: subprocess.Popen[str] | None = None
    address = ""
    printed = ""
    try:
        for line in lines:
            if line in NOT_RUN:
                continue
            argv = _argv(line, tmp_path)
            if "serve" in argv:
                if server is not None:
                    _stop(server)
                server, address = _serve(argv)
                continue
            if "--server" in argv:
                if server is None:  # the README runs this beside `dev.py serve`
                    server, address = _serve([sys.executable, "-m", "appliance", "serve"])
                argv[argv.index("--server") + 1] = address
            proc = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, f"{where}: {line}\n{proc.stderr}"
            printed += proc.stdout
        if after.lstrip().startswith("{"):
            _matches_shown(printed, after, tmp_path)
    finally:
        if server is not None:
            _stop(server)


def test_the_readme_has_commands_to_run() -> None:
    assert len(COMMANDS) >= 3 and all(lines for _, lines, _ in COMMANDS)
