"""Run the atheris fuzz targets of tests/fuzz with libFuzzer and tabulate what they found.

    python scripts/fuzz.py [--minutes M] [--targets a,b,...] [--jobs N] [--out DIR]

For each target: its seed corpus (generated in code) is written to
``OUT/corpus/TARGET``, and the harness runs under libFuzzer for M minutes
(``-max_total_time``), with ``-rss_limit_mb=2048 -timeout=10`` and its
artifacts (crash-, timeout-, oom-, leak-, slow-unit- files) in
``OUT/artifacts/TARGET/``. libFuzzer stops at the first finding; the run is
then resumed on the corpus grown so far until the time is spent, so one
finding does not end a target's run. N targets run at a time; the log of each
is ``OUT/logs/TARGET.log`` and the table at the end is also ``OUT/summary.json``.
``OUT`` defaults to a new temporary directory and may never be inside the
repository (corpora grow large); the harnesses' own temporary files go to
``OUT/tmp/TARGET``. ``--table OUT`` prints the table of an earlier run again.
Needs the ``fuzz`` extra (atheris).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The harness modules; each has TARGETS: name -> tests.fuzz.engine.Target.
MODULES = ("tests.fuzz.fuzz_decode", "tests.fuzz.fuzz_lists", "tests.fuzz.fuzz_snapshot")
LIBFUZZER = ("-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1")
ARTIFACT_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
# A target that keeps failing at once (a finding hit on every resume) stops after this many.
MAX_RESUMES = 50

_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)", re.MULTILINE)


@dataclass
class Outcome:
    target: str
    minutes: float = 0.0
    executions: int = 0
    coverage: int = 0
    features: int = 0
    corpus: int = 0
    runs: int = 0
    findings: list[str] = field(default_factory=list)


def targets() -> dict[str, str]:
    """Every target's name -> the module that holds it."""
    sys.path.insert(0, str(ROOT))
    found: dict[str, str] = {}
    for module in MODULES:
        for name in importlib.import_module(module).TARGETS:
            found[name] = module
    return found


def write_seeds(module: str, name: str, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = importlib.import_module(module).TARGETS[name].seeds()
    for i, data in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(data)
    return len(seeds)


def _tally(log: str, outcome: Outcome) -> None:
    """Add one libFuzzer run's figures (from its log) to ``outcome``."""
    executed = _EXECUTED.findall(log)
    status = _STATUS.findall(log)
    if executed:
        outcome.executions += int(executed[-1])
    elif status:
        outcome.executions += int(status[-1][0])
    if status:
        _, _, cov, ft, corp = status[-1]
        outcome.coverage = max(outcome.coverage, int(cov))
        outcome.features = max(outcome.features, int(ft))
        outcome.corpus = max(outcome.corpus, int(corp))


def run_target(module: str, name: str, minutes: float, out: Path) -> Outcome:
    corpus, artifacts = out / "corpus" / name, out / "artifacts" / name
    logs = out / "logs"
    artifacts.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    write_seeds(module, name, corpus)
    # The harnesses' scratch files (SQLite and snapshot inputs on disk): libFuzzer
    # ends the process without Python's atexit, so they are kept under OUT.
    scratch = out / "tmp" / name
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch)}
    outcome = Outcome(name)
    started = time.monotonic()
    budget = minutes * 60
    path = logs / f"{name}.log"
    with path.open("wb") as log:
        while outcome.runs < MAX_RESUMES:
            left = int(budget - (time.monotonic() - started))
            if left < 1:
                break
            command = [sys.executable, "-m", module, name, str(corpus),
                       f"-max_total_time={left}", f"-artifact_prefix={artifacts}/", *LIBFUZZER]
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            start = log.tell()
            # Straight to the log, to follow while it runs; tallied from it after.
            returncode = subprocess.run(command, cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, check=False).returncode
            log.seek(0, 2)
            with path.open("rb") as written:
                written.seek(start)
                text = written.read().decode(errors="replace")
            outcome.runs += 1
            _tally(text, outcome)
            if returncode == 0:
                break
    outcome.minutes = round((time.monotonic() - started) / 60, 1)
    outcome.findings = sorted(p.name for p in artifacts.iterdir()
                              if p.name.startswith(ARTIFACT_PREFIXES))
    return outcome


def kinds(findings: Sequence[str]) -> str:
    """"3 crash, 1 timeout": the artifacts by kind (their names are in summary.json)."""
    counts = {k: sum(f.startswith(k) for f in findings) for k in ARTIFACT_PREFIXES}
    return ", ".join(f"{n} {k.rstrip('-')}" for k, n in counts.items() if n) or "none"


def table(outcomes: Sequence[Outcome]) -> str:
    head = ("target", "minutes", "executions", "runs", "coverage", "findings")
    rows = [(o.target, f"{o.minutes:.1f}", str(o.executions), str(o.runs),
             f"{o.coverage} ({o.features} ft)", kinds(o.findings)) for o in outcomes]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="per target (default 10)")
    parser.add_argument("--targets", default="", help="comma-separated names (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="targets run at a time (default 1)")
    parser.add_argument("--out", default="", help="corpora, artifacts, logs (default: a temp dir)")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--table", metavar="DIR", help="print the table of an earlier --out DIR")
    args = parser.parse_args(argv)
    if args.table:
        saved = json.loads((Path(args.table) / "summary.json").read_text())
        print(table([Outcome(**o) for o in saved]))
        return 0
    known = targets()
    if args.list:
        print("\n".join(known))
        return 0
    chosen = [t for t in args.targets.split(",") if t] or list(known)
    unknown = [t for t in chosen if t not in known]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(known)}")
    out = Path(args.out or tempfile.mkdtemp(prefix="appliance-fuzz-")).resolve()
    if out == ROOT or ROOT in out.parents:
        parser.error(f"--out {out} is inside the repository; put corpora elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    print(f"fuzzing {len(chosen)} targets for {args.minutes} min each, {args.jobs} at a time; "
          f"output in {out}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_target, known[t], t, args.minutes, out) for t in chosen]
        for future in as_completed(futures):
            done = future.result()
            print(f"done: {done.target}: {done.executions} executions in {done.runs} runs, "
                  f"findings: {kinds(done.findings)}", flush=True)
        outcomes = [future.result() for future in futures]
    (out / "summary.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=1))
    print(table(outcomes))
    return 1 if any(o.findings for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
