"""The GPU check's own machinery, so that its one device run does not fail on
the script: the section runner (limits, states, fallbacks, budget), the log in
$OUT, the preflight's simulator form and CUDA_HOME finder, the digest
crossover rule and the load benchmark's verdict. A few seconds, no GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_kernels import crossover
from benchmarks.gpu_preflight import find_cuda_home, toolkit_version

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("APPLIANCE_", "GPU_CHECK_", "NUMBA_")) and k != "OUT"}


def _bash(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], cwd=ROOT, env={**ENV, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def _summary(output: str) -> dict[str, list[str]]:
    """The summary table's rows: section -> [result, seconds, limit, fallbacks]."""
    rows = (line.split() for line in output.split("== summary", 1)[1].splitlines()[2:])
    return {cells[0]: cells[1:] for cells in rows if len(cells) == 5 and cells[0] != "=="}


def test_the_script_parses() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0


def test_sections_are_limited_timed_and_summarised() -> None:
    began = time.monotonic()
    done = _bash(f"""
        source {SCRIPT}
        section fine 10 true
        section broken 10 false
        section slow 1 sleep 30
        section faulty 10 bash -c 'echo fallbacks: 2'
        section sweep 10 bash -c 'echo "digest_cpu_min_bytes: 65536 (measured)"; echo fallbacks: 0'
        summary
        echo "status=$status"
    """)
    assert time.monotonic() - began < 15, "the 1 s limit did not stop sleep 30"
    out = done.stdout
    table = _summary(out)
    assert {k: v[0] for k, v in table.items()} == {
        "fine": "ok", "broken": "FAIL", "slow": "TIMEOUT", "faulty": "FAIL", "sweep": "ok"}
    assert int(table["slow"][1]) <= 3 and table["slow"][2] == "1"
    assert table["faulty"][3] == "2" and table["sweep"][3] == "0"  # a fault fails its section
    assert "digest_cpu_min_bytes: 65536 (measured)" in out.split("== summary", 1)[1]
    assert "== gpu_check: FAILED (exit 1)" in out and "status=1" in out


def test_a_spent_budget_skips_and_only_runs_the_named_sections() -> None:
    done = _bash(f"source {SCRIPT}; section late 10 true; summary; echo status=$status",
                 GPU_CHECK_BUDGET="3")
    assert "late: SKIPPED" in done.stdout and "status=1" in done.stdout
    done = _bash(f"source {SCRIPT}; section a 10 true; section b 10 true; summary",
                 GPU_CHECK_ONLY="b")
    table = _summary(done.stdout)
    assert table["a"][0] == "not-run" and table["b"][0] == "ok"


def test_the_tiny_check_logs_to_out(tmp_path: Path) -> None:
    # Only the preflight (always run), in its simulator form; the rest not run.
    done = subprocess.run(
        ["bash", str(SCRIPT), "--tiny"], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**ENV, "OUT": str(tmp_path), "GPU_CHECK_ONLY": "none", "PYTHON": sys.executable},
        check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "gpu_check.log").read_text()
    assert log == done.stdout
    assert "preflight: the kernel on a numba stream" in log and "preflight: ok" in log
    table = _summary(log)
    assert table["preflight"][0] == "ok"
    assert table["tests"][0] == table["load-gpu"][0] == "not-run"


def test_the_system_toolkit_with_nvvm_is_found(tmp_path: Path) -> None:
    for name, nvvm in (("cuda-12.4", True), ("cuda-13.0", True), ("cuda-13.1", False)):
        lib = tmp_path / name / "nvvm" / "lib64"
        lib.mkdir(parents=True)
        if nvvm:
            (lib / "libnvvm.so.4").write_bytes(b"")
    (tmp_path / "cuda-13.0" / "version.json").write_text('{"cuda": {"version": "13.0.88"}}')
    found = find_cuda_home([str(tmp_path / "cuda"), str(tmp_path / "cuda-*")])
    assert found == (tmp_path / "cuda-13.0", tmp_path / "cuda-13.0/nvvm/lib64/libnvvm.so.4")
    assert toolkit_version(tmp_path / "cuda-13.0") == "13.0.88"
    assert toolkit_version(tmp_path / "cuda-12.4") == "12.4"
    assert find_cuda_home([str(tmp_path / "none*")]) is None


def test_the_crossover_is_where_the_cpu_wins_from_then_on() -> None:
    kib = 1024
    # (size, gpu s, cpu s): the CPU wins at 64 KiB and above (and once, by chance, at 4 KiB).
    sweep = [(4 * kib, 1.0, 0.9), (16 * kib, 1.0, 1.5), (64 * kib, 2.0, 1.0), (256 * kib, 4, 1)]
    assert crossover(sweep)[0] == 64 * kib
    assert crossover([(4 * kib, 1, 2), (16 * kib, 1, 2)])[0] == 32 * kib  # GPU won throughout
    assert crossover([(4 * kib, 2, 1), (16 * kib, 2, 1)])[0] == 4 * kib  # CPU won throughout
    with pytest.raises(ValueError):
        crossover([])


def test_the_load_benchmark_fails_on_device_faults_and_errors() -> None:
    from benchmarks.load import PhaseResult, parse_args, verdict

    args = parse_args(["--server-env", "APPLIANCE_GPU_STRICT=1", "--fail-on-errors"])
    assert args.server_env == {"APPLIANCE_GPU_STRICT": "1"}
    with pytest.raises(SystemExit):
        parse_args(["--server-env", "APPLIANCE_GPU_STRICT"])

    def phase(name: str, faults: int = 0, errors: dict[str, int] | None = None) -> PhaseResult:
        return PhaseResult(name, "1 caller", [], 1.0, 1, 1, 1.0, 1.0, None, None, None,
                           errors or {}, None, None, {}, 1.0, None, None, 0.0, None,
                           gpu_faults=faults)

    assert verdict([phase("on")], args, None) == []
    assert verdict([phase("on", faults=2)], args, None) == ["2 device fault(s) in phase on"]
    assert verdict([phase("overload", errors={"RESOURCE_EXHAUSTED": 3})], args, None) == []
    assert verdict([phase("off", errors={"INTERNAL": 1})], args, None) == [
        "phase off: failed requests: INTERNAL 1"]
