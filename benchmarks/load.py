"""Load test of the gRPC server: batching off vs on, unloaded latency, overload.

    .venv/bin/python -m benchmarks.load [--quick] [--json FILE] [--callers 16]
        [--seconds 15] [--warmup 3] [--small 192] [--large 12] [--large-fraction 0.1]

Corpus (``benchmarks/load_corpus.py``): textured pictures generated in memory
once per run from a fixed seed: small ones (256x256, PNG and JPEG, tens of KB)
and large ones (2000x1500 JPEG, about 0.8 MB); ``--large-fraction`` of the
requests carry a large file. Every phase sends the same files in the same
order, one file per ``Match`` call, to its own fresh ``appliance serve``
subprocess (CPU backend, embedded demo list). Each phase warms up, then
measures ``--seconds``; requests started in that window are counted, and the
server's /metrics are read at its start and end (mean batch size and fill are
over the window).

Phases:

- ``off``: ``--max-batch-items 1``, ``--callers`` closed-loop callers (each
  sends its next file as soon as the last one is answered): the throughput and
  latency of one file at a time.
- ``on``: the server's batching defaults (one file per worker, 2 ms), same callers. The
  ratios on/off of files/s and of p99 say what batching buys.
- ``unloaded``: one caller, batching on: the latency of a lone file
  ("unloaded p99"), which includes waiting up to ``max_delay_ms`` for company.
- ``on-inline``, ``unloaded-inline``: ``on`` and ``unloaded`` with
  ``--decode-isolation inline``, the peer of the decode sandbox: what worker
  processes cost ordinary files (ratios sandbox/inline).
- ``overload``: an open-loop generator starts requests at a fixed rate,
  ``--overload-factor`` (2) times the files/s measured in ``on``, whatever the
  answers, with at most ``--max-outstanding`` in flight (the client stays
  bounded; starts skipped at the cap are counted). The server is sized for a
  latency budget (``OVERLOAD_QUEUE``: shed while the oldest queued file has
  waited 25 ms; at most 1 MiB of files held) and each call has a ``--deadline``
  (2 s). Shown: accepted
  files/s, the shed fraction (RESOURCE_EXHAUSTED), DEADLINE_EXCEEDED, the p99 of
  accepted requests against the unloaded p99 (target: within 2x), the files/s
  the server hashed (above the accepted rate: work spent on requests whose
  caller had given up), and the server's peak memory (VmHWM at the end, VmRSS
  sampled during the run).

GPU phases (``--server-args "--backend gpu"``, as benchmarks/gpu_check.sh runs
them, with ``--server-env APPLIANCE_GPU_STRICT=1``): each phase line says how
long its server took to get ready (the GPU backend compiles or loads its
kernels and checks them before that) and echoes the warm-up's log line; the
device faults its server saw (``appliance_gpu_fallbacks_total``, and under
strict mode the "GPU fault in the ... stage" lines of its log, since a strict
server raises instead of counting a fallback) are counted per phase, the run
ends with a line ``fallbacks: N``, and any fault makes the exit status 1.
``--fail-on-errors`` does the same for any failed request outside the
overload phase (where shedding is the point).

Client and server share the machine: the client is one process, one asyncio
loop with ``grpc.aio``, and its CPU use is printed with each phase (with the
open-loop generator's lag behind its schedule) so that one can see whether it
was the bottleneck. On a 2-vCPU VM the absolute figures are low; the ratios
are what to read. ``--quick`` is a smoke run (small corpus, 3 s phases).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import math
import os
import platform
import re
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import grpc

from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc
from benchmarks.load_corpus import Corpus, build_corpus
from benchmarks.load_server import ServerProcess, metric, scrape

MiB = 1 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * MiB),
    ("grpc.max_send_message_length", 256 * MiB),
]
# A server sized for a latency budget near the unloaded p99: new requests are
# shed while the oldest queued file has waited 25 ms, and at most 1 MiB of
# files (one large picture) is held at once, queued or running.
OVERLOAD_QUEUE = ("--max-queue-wait-ms", "25", "--max-inflight-bytes", str(MiB))
DIGESTS_AND_PDQ = 4  # hashes in a full answer with the default signals
# How appliance.gpu.pipeline logs a device fault, fallen back from ("stage; ...")
# or raised ("stage, raised"); the GpuFault's own message ("stage (gpu.strict")
# is not matched, so that its tracebacks do not count the fault again.
GPU_FAULT_LINE = re.compile(r"GPU fault in the [\w-]+ stage[,;]")


@dataclass
class Sample:
    """One request: when it started (perf_counter), how long it took, its outcome."""

    started: float
    seconds: float
    code: str
    nbytes: int


@dataclass
class PhaseResult:
    """What one phase measured; times in ms, rates per second."""

    name: str
    load: str
    server_args: list[str]
    seconds: float
    requests: int
    ok: int
    files_per_s: float
    mb_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: dict[str, int]
    mean_batch: float | None
    mean_fill: float | None
    shed_by_reason: dict[str, int]
    server_files_per_s: float
    peak_rss_mb: float | None
    max_sampled_rss_mb: float | None
    client_cpu: float
    server_cpu: float | None
    skipped_at_cap: int = 0
    lag_p99_ms: float | None = None
    offered_per_s: float | None = None
    shutdown_s: float | None = None
    shutdown_rc: int | None = None
    server_problems: list[str] = field(default_factory=list)
    gpu_faults: int = 0
    ready_s: float | None = None
    server_startup: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- client


class Requests:
    """The corpus as ready-made requests, handed out round-robin over its order."""

    def __init__(self, corpus: Corpus) -> None:
        self.messages = [pb.FileRequest(content=f.content, id=f.name) for f in corpus.files]
        self.sizes = [len(f.content) for f in corpus.files]
        self.order = corpus.order
        self._next = itertools.count()

    def next(self) -> tuple[pb.FileRequest, int]:
        i = self.order[next(self._next) % len(self.order)]
        return self.messages[i], self.sizes[i]


async def call(
    stub: pb_grpc.ApplianceStub, request: pb.FileRequest, nbytes: int, timeout: float
) -> Sample:
    """One Match; an answer without all its hashes counts as an error, by its code."""
    started = time.perf_counter()
    try:
        # grpc-stubs types the stub's methods as synchronous; on an aio channel they
        # return awaitables.
        response = await cast("Awaitable[pb.FileResponse]", stub.Match(request, timeout=timeout))
        result = response.result
        if result.HasField("error"):
            code = f"ITEM_{result.error.code}"
        elif result.skipped:
            code = f"SKIPPED_{result.skipped[0].reason.code}"
        elif len(result.hashes) < DIGESTS_AND_PDQ:
            code = "INCOMPLETE"
        else:
            code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    return Sample(started, time.perf_counter() - started, code, nbytes)


async def closed_loop(
    stub: pb_grpc.ApplianceStub, requests: Requests, callers: int, end: float, timeout: float
) -> list[Sample]:
    """``callers`` loops, each sending its next file when the last is answered, until ``end``."""
    samples: list[Sample] = []

    async def caller() -> None:
        while time.perf_counter() < end:
            samples.append(await call(stub, *requests.next(), timeout))

    await asyncio.gather(*(caller() for _ in range(callers)))
    return samples


async def open_loop(
    stub: pb_grpc.ApplianceStub,
    requests: Requests,
    rate: float,
    start: float,
    end: float,
    max_outstanding: int,
    timeout: float,
) -> tuple[list[Sample], list[float], list[float]]:
    """Start one request every 1/rate s from ``start`` to ``end``, answered or not.

    Returns the samples, the scheduled times of starts skipped because
    ``max_outstanding`` were in flight, and how late each start was (s).
    """
    skipped: list[float] = []
    lags: list[float] = []
    tasks: list[asyncio.Task[Sample]] = []
    outstanding: set[asyncio.Task[Sample]] = set()
    for n in itertools.count():
        due = start + n / rate
        if due >= end:
            break
        delay = due - time.perf_counter()
        # When behind schedule, start at once but let the loop breathe.
        await asyncio.sleep(max(0.0, delay))
        if len(outstanding) >= max_outstanding:
            skipped.append(due)
            continue
        lags.append(time.perf_counter() - due)
        task = asyncio.create_task(call(stub, *requests.next(), timeout))
        tasks.append(task)
        outstanding.add(task)
        task.add_done_callback(outstanding.discard)
    samples = await asyncio.gather(*tasks)
    return samples, skipped, lags


# ----------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    server_args: tuple[str, ...]
    callers: int = 0  # closed loop when > 0
    rate: float = 0.0  # open loop when > 0
    timeout: float = 60.0


@dataclass
class Window:
    """Readings at the start and end of the measured window, and RSS samples."""

    metrics: list[dict[str, float]] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float | None] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


async def watch(server: ServerProcess, start: float, end: float, window: Window) -> None:
    """Sample the server's RSS every 0.2 s; read metrics and CPU at ``start`` and ``end``."""

    async def read() -> None:
        window.metrics.append(await asyncio.to_thread(scrape, server.metrics_url))
        window.client_cpu.append(time.process_time())
        window.server_cpu.append(server.cpu_seconds())

    marks = [start, end]
    while marks:
        rss = server.rss_mb()
        if rss is not None:
            window.rss_mb.append(rss)
        if time.perf_counter() >= marks[0]:
            marks.pop(0)
            await read()
            continue
        await asyncio.sleep(min(0.2, max(0.0, marks[0] - time.perf_counter())))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None when empty."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, math.ceil(q / 100 * len(ranked)) - 1))]


async def run_phase(spec: PhaseSpec, requests: Requests, args: argparse.Namespace) -> PhaseResult:
    server_args = [*spec.server_args, *shlex.split(args.server_args)]
    server = await asyncio.to_thread(ServerProcess.start, server_args, env=args.server_env)
    window = Window()
    skipped: list[float] = []
    lags: list[float] = []
    try:
        async with grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = pb_grpc.ApplianceStub(channel)
            t0 = time.perf_counter()
            start, end = t0 + args.warmup, t0 + args.warmup + args.seconds
            watcher = asyncio.create_task(watch(server, start, end, window))
            if spec.rate > 0:
                samples, skipped, lags = await open_loop(
                    stub, requests, spec.rate, t0, end, args.max_outstanding, spec.timeout
                )
            else:
                samples = await closed_loop(stub, requests, spec.callers, end, spec.timeout)
            await watcher
        peak_rss = server.hwm_mb()
    finally:
        # Blocking on purpose: it must run even when this task is being cancelled.
        shutdown_s, shutdown_rc = server.stop()

    measured = [s for s in samples if start <= s.started < end]
    ok = [s for s in measured if s.code == "OK"]
    latencies = [s.seconds * 1000 for s in ok]
    before, after = window.metrics

    def delta(name: str, labels: str = "") -> float:
        return metric(after, name, labels) - metric(before, name, labels)

    batches = delta("appliance_batch_size_count")
    fills = delta("appliance_batch_fill_ratio_count")
    reasons = ("queue_full", "queue_wait", "inflight_bytes", "inflight", "deadline", "cancelled",
               "shutdown")
    shed = {r: int(delta("appliance_shed_requests_total", f'reason="{r}"')) for r in reasons}
    processed = sum(
        value - before.get(key, 0.0)
        for key, value in after.items()
        if key.startswith("appliance_files_total{")
    )
    # Counted over the server's whole life, warm-up included: a fault is a
    # fault whenever it happened. A strict server logs it without counting it.
    counted = sum(v for k, v in after.items() if k.startswith("appliance_gpu_fallbacks_total{"))
    logged = sum(bool(GPU_FAULT_LINE.search(line)) for line in server.problems)
    server_cpu = None
    if window.server_cpu[0] is not None and window.server_cpu[1] is not None:
        server_cpu = (window.server_cpu[1] - window.server_cpu[0]) / args.seconds
    if spec.callers:
        load = f"{spec.callers} caller{'s' if spec.callers > 1 else ''}"
    else:
        load = f"open {spec.rate:.0f}/s"
    return PhaseResult(
        name=spec.name,
        load=load,
        server_args=server_args,
        seconds=args.seconds,
        requests=len(measured),
        ok=len(ok),
        files_per_s=len(ok) / args.seconds,
        mb_per_s=sum(s.nbytes for s in ok) / 1e6 / args.seconds,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        errors=dict(Counter(s.code for s in measured if s.code != "OK").most_common()),
        mean_batch=delta("appliance_batch_size_sum") / batches if batches else None,
        mean_fill=delta("appliance_batch_fill_ratio_sum") / fills if fills else None,
        shed_by_reason={r: n for r, n in shed.items() if n},
        server_files_per_s=processed / args.seconds,
        peak_rss_mb=peak_rss,
        max_sampled_rss_mb=max(window.rss_mb) if window.rss_mb else None,
        client_cpu=(window.client_cpu[1] - window.client_cpu[0]) / args.seconds,
        server_cpu=server_cpu,
        skipped_at_cap=sum(1 for t in skipped if start <= t < end),
        lag_p99_ms=(p * 1000 if (p := percentile(lags, 99)) is not None else None),
        offered_per_s=spec.rate or None,
        shutdown_s=shutdown_s,
        shutdown_rc=shutdown_rc,
        server_problems=server.problems[:20],
        gpu_faults=max(int(counted), logged),
        ready_s=server.ready_s,
        server_startup=server.startup_notes()[:5],
    )


# ----------------------------------------------------------------------------- report


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def describe_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in errors.items()) or "none"


def phase_line(r: PhaseResult) -> str:
    line = (
        f"[{r.name}] {r.load}: {r.ok}/{r.requests} OK, {r.files_per_s:.1f} files/s, "
        f"{r.mb_per_s:.2f} MB/s, p50/p95/p99 {fmt(r.p50_ms)}/{fmt(r.p95_ms)}/{fmt(r.p99_ms)} ms, "
        f"errors: {describe_errors(r.errors)}; server hashed {r.server_files_per_s:.1f} files/s, "
        f"mean batch {fmt(r.mean_batch)}, "
        f"fill {fmt(r.mean_fill, 3)}; CPU client {r.client_cpu:.0%} server "
        f"{fmt(None if r.server_cpu is None else r.server_cpu * 100, 0)}% (of one core); "
        f"peak RSS {fmt(r.peak_rss_mb, 0)} MB; stopped in {fmt(r.shutdown_s, 2)} s "
        f"(rc {r.shutdown_rc}); ready in {fmt(r.ready_s)} s; device faults {r.gpu_faults}"
    )
    if r.offered_per_s:
        line += f"; lag p99 {fmt(r.lag_p99_ms)} ms, skipped at cap {r.skipped_at_cap}"
    return line


def table(results: list[PhaseResult]) -> str:
    head = ("phase", "load", "files/s", "MB/s", "p50 ms", "p95 ms", "p99 ms",
            "errors by code", "mean batch", "mean fill", "peak RSS MB")  # fmt: skip
    rows = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if i in (0, 1, 7) else "---:" for i in range(len(head))) + "|",
    ]
    for r in results:
        cells = (r.name, r.load, fmt(r.files_per_s), fmt(r.mb_per_s, 2), fmt(r.p50_ms),
                 fmt(r.p95_ms), fmt(r.p99_ms), describe_errors(r.errors), fmt(r.mean_batch),
                 fmt(r.mean_fill, 3), fmt(r.peak_rss_mb, 0))  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ratios(by: dict[str, PhaseResult]) -> dict[str, float | None]:
    off, on, idle, over = (by.get(n) for n in ("off", "on", "unloaded", "overload"))
    out: dict[str, float | None] = {}
    if off and on:
        out["on/off files/s"] = ratio(on.files_per_s, off.files_per_s)
        out["on/off p99"] = ratio(on.p99_ms, off.p99_ms)
    on_inline, idle_inline = by.get("on-inline"), by.get("unloaded-inline")
    if on and on_inline:
        out["sandbox/inline files/s"] = ratio(on.files_per_s, on_inline.files_per_s)
        out["sandbox/inline p99"] = ratio(on.p99_ms, on_inline.p99_ms)
    if idle and idle_inline:
        out["sandbox/inline unloaded p50"] = ratio(idle.p50_ms, idle_inline.p50_ms)
        out["sandbox/inline unloaded p99"] = ratio(idle.p99_ms, idle_inline.p99_ms)
    if over:
        sent = over.requests + over.skipped_at_cap
        out["overload shed fraction"] = (
            over.errors.get("RESOURCE_EXHAUSTED", 0) / over.requests if over.requests else None
        )
        out["overload skipped-at-cap fraction"] = over.skipped_at_cap / sent if sent else None
        out["overload accepted / offered"] = ratio(over.files_per_s, over.offered_per_s)
        if idle:
            out["overload p99 / unloaded p99"] = ratio(over.p99_ms, idle.p99_ms)
    return out


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small corpus, 3 s phases (smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers here")
    p.add_argument("--phases", default="off,on,unloaded,overload,on-inline,unloaded-inline")
    p.add_argument("--callers", type=int, default=16)
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument("--small", type=int, default=192, help="distinct small pictures")
    p.add_argument("--large", type=int, default=12, help="distinct large pictures")
    p.add_argument("--large-fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overload-factor", type=float, default=2.0,
                   help="open-loop rate, as a multiple of the files/s of phase 'on'")
    p.add_argument("--overload-rate", type=float, default=0.0,
                   help="open-loop rate in files/s (overrides the factor)")
    p.add_argument("--max-outstanding", type=int, default=512)
    p.add_argument("--deadline", type=float, default=2.0, help="seconds, overload phase")
    p.add_argument("--server-args", default="", help="extra flags for every server")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for every server (repeatable), e.g. "
                        "APPLIANCE_GPU_STRICT=1; the caller's APPLIANCE_* are not passed")
    p.add_argument("--fail-on-errors", action="store_true",
                   help="exit 1 if any request failed (overload phase excepted)")
    args = p.parse_args(argv)
    pairs = [item.partition("=") for item in args.server_env]
    bad = [name for name, eq, _ in pairs if not eq or not name]
    if bad:
        p.error(f"--server-env wants NAME=VALUE, got {', '.join(bad)}")
    args.server_env = {name: value for name, _, value in pairs}
    if args.quick:
        args.small, args.large, args.seconds, args.warmup = 32, 4, 3.0, 1.0
    return args


class PhaseFailed(RuntimeError):
    """A phase that could not run (its server did not start); the results so far."""

    def __init__(self, name: str, why: BaseException, results: list[PhaseResult]) -> None:
        super().__init__(f"phase {name}: {why}")
        self.results = results


async def run(args: argparse.Namespace, requests: Requests) -> list[PhaseResult]:
    wanted = args.phases.split(",")
    results: dict[str, PhaseResult] = {}
    inline = ("--decode-isolation", "inline")
    specs = {
        "off": PhaseSpec("off", ("--max-batch-items", "1"), callers=args.callers),
        "on": PhaseSpec("on", (), callers=args.callers),
        "unloaded": PhaseSpec("unloaded", (), callers=1),
        # The peer of the decode sandbox: the same phases decoding in the
        # hashing threads, with no worker processes.
        "on-inline": PhaseSpec("on-inline", inline, callers=args.callers),
        "unloaded-inline": PhaseSpec("unloaded-inline", inline, callers=1),
    }
    for name in wanted:
        if name == "overload":
            rate = args.overload_rate
            if not rate and "on" in results:
                rate = args.overload_factor * results["on"].files_per_s
            if not rate:
                sys.exit("overload needs phase 'on' (or --overload-rate) to set its rate")
            spec = PhaseSpec("overload", OVERLOAD_QUEUE, rate=rate, timeout=args.deadline)
        elif name in specs:
            spec = specs[name]
        else:
            sys.exit(f"unknown phase {name!r}")
        try:
            results[name] = result = await run_phase(spec, requests, args)
        except RuntimeError as exc:  # the server exited before it was ready
            raise PhaseFailed(name, exc, list(results.values())) from exc
        print(phase_line(result), flush=True)
        for note in result.server_startup:
            print(f"    server start: {note}", flush=True)
        for problem in result.server_problems:
            print(f"    server said: {problem}", flush=True)
    return list(results.values())


def verdict(results: list[PhaseResult], args: argparse.Namespace,
            failure: PhaseFailed | None) -> list[str]:
    """Why the run failed (empty: it did not): device faults, a server that did
    not start, and with --fail-on-errors failed requests."""
    reasons = [f"{r.gpu_faults} device fault(s) in phase {r.name}" for r in results
               if r.gpu_faults]
    if failure is not None:
        reasons.append(str(failure).splitlines()[0] + " (its log is above)")
    if args.fail_on_errors:
        reasons += [f"phase {r.name}: failed requests: {describe_errors(r.errors)}"
                    for r in results if r.errors and r.name != "overload"]
    return reasons


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that SIGTERM too stops the servers on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.perf_counter()
    load_before = os.getloadavg()
    corpus = build_corpus(args.small, args.large, args.large_fraction, seed=args.seed)
    print(f"corpus: {corpus.describe()} (made in {time.perf_counter() - began:.1f} s)")
    requests = Requests(corpus)
    failure: PhaseFailed | None = None
    try:
        results = asyncio.run(run(args, requests))
    except PhaseFailed as exc:
        failure, results = exc, exc.results
        print(f"FAILED: {exc}", flush=True)
    by_name = {r.name: r for r in results}
    found = ratios(by_name)

    machine = f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    today = datetime.date.today().isoformat()
    # Others' processes on a shared machine take CPU from both client and server.
    load = f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    print()
    print(f"{today}, {machine}; {args.seconds:g} s per phase after {args.warmup:g} s warm-up; "
          f"{load}")
    print(f"corpus: {corpus.describe()}")
    print()
    print(table(results))
    print()
    for key, value in found.items():
        print(f"- {key}: {fmt(value, 2)}")
    over = by_name.get("overload")
    if over:
        de = over.errors.get("DEADLINE_EXCEEDED", 0)
        print(
            f"- overload: offered {over.offered_per_s:.0f}/s, accepted {over.files_per_s:.1f}/s "
            f"(server hashed {over.server_files_per_s:.1f}/s), "
            f"DEADLINE_EXCEEDED {de}, server shed by reason {over.shed_by_reason or 'none'}, "
            f"peak RSS {fmt(over.peak_rss_mb, 0)} MB (VmHWM), max sampled VmRSS "
            f"{fmt(over.max_sampled_rss_mb, 0)} MB"
        )
    print(f"- total {time.perf_counter() - began:.0f} s")
    faults = sum(r.gpu_faults for r in results)
    if failure is not None:  # a strict server whose kernels failed logs why, then exits
        faults += len(GPU_FAULT_LINE.findall(str(failure)))
    reasons = verdict(results, args, failure)

    if args.json:
        document: dict[str, Any] = {
            "date": today,
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "load_average": {"before": load_before[0], "after": os.getloadavg()[0]},
            "args": vars(args),
            "corpus": corpus.describe(),
            "phases": [asdict(r) for r in results],
            "ratios": found,
        }
        with open(args.json, "w") as out:
            json.dump(document, out, indent=2)
    print(f"fallbacks: {faults}", flush=True)
    for reason in reasons:
        print(f"FAILED: {reason}", flush=True)
    return 1 if reasons or faults else 0


if __name__ == "__main__":
    raise SystemExit(main())
