"""The dynamic batcher, driven by a FakeClock: no test sleeps."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from appliance.batching import Batcher, FakeClock, MonotonicClock, resolve
from appliance.config import BatchingConfig
from appliance.errors import DeadlineExceeded, Overloaded, ShuttingDown
from appliance.metrics import Metrics

T = TypeVar("T")
MS = 0.001


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    # A guard that only matters when a bug leaves a task waiting forever; tests
    # themselves never wait on real time.
    return asyncio.run(asyncio.wait_for(test(), timeout=5))


async def settle() -> None:
    """Let every runnable task run until all wait on something (a yield, not a sleep)."""
    for _ in range(50):
        await asyncio.sleep(0)


def config(**changes: Any) -> BatchingConfig:
    values: dict[str, Any] = dict(max_batch_items=4, max_batch_bytes=1000, max_delay_ms=10.0,
                                  max_queue_items=100, max_queue_bytes=100_000,
                                  max_queue_wait_ms=0.0)
    return BatchingConfig(**(values | changes))


class Pipeline:
    """A run_batch that records its batches, upper-cases each item, and (gated)
    waits until the test opens the gate of that call, or (jitter) yields a random
    number of times so that batches finish out of order."""

    def __init__(self, gated: bool = False, fail_on: str | None = None,
                 jitter: random.Random | None = None) -> None:
        self.gated, self.fail_on, self.jitter = gated, fail_on, jitter
        self.calls: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.running = self.max_running = 0

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gated:
                gate = asyncio.Event()
                self.gates.append(gate)
                await gate.wait()
            for _ in range(self.jitter.randrange(5) if self.jitter else 0):
                await asyncio.sleep(0)
            if self.fail_on is not None and self.fail_on in items:
                raise ValueError(f"cannot process {self.fail_on}")
            return [item.upper() for item in items]
        finally:
            self.running -= 1

    @property
    def seen(self) -> list[str]:
        return [item for call in self.calls for item in call]


def make(pipeline: Pipeline, clock: FakeClock, concurrency: int = 1,
         metrics: Metrics | None = None, **changes: Any) -> Batcher[str, str]:
    return Batcher(pipeline, config(**changes), len, concurrency, clock, metrics)


def spawn(batcher: Batcher[str, str], items: list[str],
          deadline: float | None = None) -> asyncio.Task[list[str]]:
    return asyncio.get_running_loop().create_task(batcher.submit(items, deadline))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# 1. When a batch leaves


def test_full_batch_leaves_at_once() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock)
        tasks = [spawn(batcher, [f"a{i}"]) for i in range(4)]
        await settle()
        assert pipeline.calls == [["a0", "a1", "a2", "a3"]]
        assert [t.result() for t in tasks] == [["A0"], ["A1"], ["A2"], ["A3"]]
        await batcher.close()

    run(body)


def test_delay_counts_from_the_first_item_of_the_batch() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock)
        first = spawn(batcher, ["a"])
        await settle()
        clock.advance(6 * MS)
        second = spawn(batcher, ["b"])
        await settle()
        clock.advance(3.9 * MS)
        await settle()
        assert pipeline.calls == []
        clock.advance(1 * MS)  # 10.9 ms after "a", only 4.9 after "b"
        await settle()
        assert pipeline.calls == [["a", "b"]]
        assert (first.result(), second.result()) == (["A"], ["B"])
        await batcher.close()

    run(body)


def test_bytes_bound_closes_a_batch() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock, max_batch_bytes=10)
        tasks = [spawn(batcher, [s]) for s in ("aaaa", "bbbb", "cccc")]
        await settle()
        assert pipeline.calls == [["aaaa", "bbbb"]]  # a third would make 12 bytes
        clock.advance(10 * MS)
        await settle()
        assert pipeline.calls == [["aaaa", "bbbb"], ["cccc"]]
        assert all(t.done() for t in tasks)
        await batcher.close()

    run(body)


def test_item_larger_than_a_batch_goes_alone() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock, max_batch_bytes=10)
        big, small = spawn(batcher, ["x" * 25]), spawn(batcher, ["s"])
        await settle()
        assert pipeline.calls == [["x" * 25]]
        clock.advance(10 * MS)
        await settle()
        assert pipeline.calls[1] == ["s"]
        assert big.result() == ["X" * 25] and small.result() == ["S"]
        await batcher.close()

    run(body)


def test_one_item_batches_turn_batching_off() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock, concurrency=8, max_batch_items=1, max_delay_ms=1000.0)
        tasks = [spawn(batcher, ["a", "b"]), spawn(batcher, ["c"])]
        await settle()
        assert pipeline.calls == [["a"], ["b"], ["c"]]
        assert [t.result() for t in tasks] == [["A", "B"], ["C"]]
        await batcher.close()

    run(body)


def test_zero_delay_leaves_at_once() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock, max_delay_ms=0.0)
        assert await batcher.submit(["a", "b"]) == ["A", "B"]
        assert pipeline.calls == [["a", "b"]]
        await batcher.close()

    run(body)


# 2. Splitting and reassembly


def test_large_request_is_split_and_reassembled_in_order() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock)
        items = [f"i{n}" for n in range(10)]
        task = spawn(batcher, items)
        await settle()
        clock.advance(10 * MS)  # the last 2 wait for company, like any partial batch
        await settle()
        assert [len(c) for c in pipeline.calls] == [4, 4, 2]
        assert task.result() == [s.upper() for s in items]
        await batcher.close()

    run(body)


def test_many_interleaved_requests_each_get_their_own_results() -> None:
    async def body() -> None:
        rng = random.Random(7)
        clock, pipeline = FakeClock(), Pipeline(jitter=rng)
        batcher = make(pipeline, clock, concurrency=3, max_batch_items=8, max_batch_bytes=100,
                       max_queue_items=10_000)
        requests = [[f"r{r}i{i}" + "x" * rng.randrange(20) for i in range(rng.randrange(1, 20))]
                    for r in range(60)]
        tasks = []
        for items in requests:
            tasks.append(spawn(batcher, items))
            if rng.random() < 0.3:
                await settle()
                clock.advance(rng.choice([0.0, 3 * MS, 10 * MS]))
        for _ in range(1000):
            await settle()
            clock.advance(1 * MS)
            if all(t.done() for t in tasks):
                break
        for items, task in zip(requests, tasks, strict=True):
            assert task.result() == [s.upper() for s in items]
        assert sorted(pipeline.seen) == sorted(s for items in requests for s in items)
        for call in pipeline.calls:
            assert len(call) <= 8
            assert len(call) == 1 or sum(map(len, call)) <= 100
        assert pipeline.max_running == 3
        # Both bounds were reached: some batches were full by count, others by bytes.
        assert any(len(c) == 8 for c in pipeline.calls)
        assert any(len(c) < 8 and sum(map(len, c)) > 80 for c in pipeline.calls)
        await batcher.close()

    run(body)


# 3. Errors of run_batch


def test_failing_batch_fails_only_its_requests() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline(fail_on="b2")
        batcher = make(pipeline, clock, max_batch_items=2)
        a, b, c = spawn(batcher, ["a"]), spawn(batcher, ["b1", "b2"]), spawn(batcher, ["c"])
        d = spawn(batcher, ["d"])
        await settle()
        clock.advance(10 * MS)
        await settle()
        assert pipeline.calls == [["a", "b1"], ["b2", "c"], ["d"]]
        assert a.result() == ["A"] and d.result() == ["D"]
        for task in (b, c):
            with pytest.raises(ValueError, match="cannot process b2"):
                task.result()
        await batcher.close()

    run(body)


def test_failed_request_drops_its_queued_rest() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline(fail_on="b1")
        batcher = make(pipeline, clock, max_batch_items=2)
        with pytest.raises(ValueError):
            await batcher.submit(["b1", "b2", "b3"])
        await settle()
        assert pipeline.calls == [["b1", "b2"]] and batcher.queued_items == 0
        await batcher.close()

    run(body)


def test_wrong_number_of_results_is_a_runtime_error() -> None:
    async def body() -> None:
        async def short(items: list[str]) -> list[str]:
            return items[:-1]

        batcher: Batcher[str, str] = Batcher(short, config(max_delay_ms=0.0), len, 1, FakeClock())
        with pytest.raises(RuntimeError, match="1 results for a batch of 2"):
            await batcher.submit(["a", "b"])
        await batcher.close()

    run(body)


# 4. The bounded queue


def test_full_queue_refuses_at_once_and_counts() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_delay_ms=0.0,
                       max_queue_items=4, max_queue_bytes=10)
        running = spawn(batcher, ["r"])
        await settle()
        queued = spawn(batcher, ["aa", "bb", "cc"])
        await settle()
        assert (batcher.queued_items, batcher.queued_bytes) == (3, 6)
        with pytest.raises(Overloaded, match="queue full"):
            await batcher.submit(["d", "e"])  # 5 items
        with pytest.raises(Overloaded, match="queue full"):
            await batcher.submit(["fffff"])  # 11 bytes
        assert (batcher.queued_items, batcher.queued_bytes) == (3, 6)
        fits = spawn(batcher, ["g"])  # exactly up to both bounds
        await settle()
        assert (batcher.queued_items, batcher.queued_bytes) == (4, 7)
        assert sample(metrics, "appliance_shed_requests_total", reason="queue_full") == 2
        pipeline.gates[0].set()
        await settle()
        pipeline.gates[1].set()
        await settle()
        assert running.result() == ["R"] and fits.result() == ["G"]
        assert queued.result() == ["AA", "BB", "CC"]
        await batcher.close()

    run(body)


def test_request_larger_than_the_queue_is_refused_with_reason() -> None:
    async def body() -> None:
        batcher = make(Pipeline(), FakeClock(), max_queue_items=3, max_queue_bytes=100)
        with pytest.raises(Overloaded, match="can never fit"):
            await batcher.submit(["a", "b", "c", "d"])
        with pytest.raises(Overloaded, match="can never fit"):
            await batcher.submit(["x" * 101])
        assert batcher.queued_items == 0
        await batcher.close()

    run(body)


# 5. Deadlines


def test_deadline_passing_in_the_queue_answers_promptly() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_delay_ms=0.0)
        spawn(batcher, ["r"])
        await settle()
        late = spawn(batcher, ["a", "b"], deadline=clock.now() + 5 * MS)
        await settle()
        clock.advance(4.9 * MS)
        await settle()
        assert not late.done()
        clock.advance(0.1 * MS)
        await settle()
        with pytest.raises(DeadlineExceeded):
            late.result()
        assert batcher.queued_items == batcher.queued_bytes == 0
        assert sample(metrics, "appliance_shed_requests_total", reason="deadline") == 1
        pipeline.gates[0].set()
        await settle()
        assert pipeline.seen == ["r"]
        await batcher.close()

    run(body)


def test_deadline_at_batch_time_is_refused_before_work() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline()
        batcher = make(pipeline, clock)
        doomed = spawn(batcher, ["a"], deadline=10 * MS)
        other = spawn(batcher, ["b"])
        await settle()
        clock.advance(10 * MS)
        await settle()
        with pytest.raises(DeadlineExceeded):
            doomed.result()
        assert other.result() == ["B"] and pipeline.seen == ["b"]
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["c"], deadline=clock.now())
        await batcher.close()

    run(body)


class SilentClock(FakeClock):
    """Time moves but no timer ever fires."""

    def call_at(self, when: float, callback: Callable[[], object]) -> Any:
        return super().call_at(float("inf"), callback)


def test_deadline_is_checked_when_forming_a_batch() -> None:
    async def body() -> None:
        # Under load the dispatcher can cut a batch before a due deadline timer has run.
        clock, pipeline, metrics = SilentClock(), Pipeline(), Metrics()
        batcher = make(pipeline, clock, metrics=metrics)
        doomed = spawn(batcher, ["a"], deadline=5 * MS)
        await settle()
        clock.advance(10 * MS)
        others = spawn(batcher, ["b", "c", "d", "e"])
        await settle()
        with pytest.raises(DeadlineExceeded):
            doomed.result()
        assert pipeline.calls == [["b", "c", "d", "e"]] and others.done()
        assert sample(metrics, "appliance_shed_requests_total", reason="deadline") == 1
        await batcher.close()

    run(body)


def test_deadline_is_ignored_once_items_started() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline(gated=True)
        batcher = make(pipeline, clock)
        items = [f"i{n}" for n in range(6)]
        task = spawn(batcher, items, deadline=5 * MS)
        await settle()
        assert pipeline.calls == [items[:4]]
        clock.advance(20 * MS)
        await settle()
        assert not task.done() and batcher.queued_items == 2
        pipeline.gates[0].set()
        await settle()
        assert not task.done()  # answered only once every part is back
        pipeline.gates[1].set()
        await settle()
        assert task.result() == [s.upper() for s in items]
        await batcher.close()
        assert clock.pending_timers == 0  # the deadline timer went with the request

    run(body)


# 6. Cancellation


def test_cancel_while_queued_frees_the_queue() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_delay_ms=0.0, max_queue_items=4)
        spawn(batcher, ["r"])
        await settle()
        queued = spawn(batcher, ["a", "b", "c", "d"])
        await settle()
        with pytest.raises(Overloaded):
            await batcher.submit(["e"])
        queued.cancel()
        await settle()
        assert queued.cancelled() and batcher.queued_items == 0
        assert sample(metrics, "appliance_queue_depth") == 0
        assert sample(metrics, "appliance_shed_requests_total", reason="cancelled") == 1
        fits = spawn(batcher, ["e"])
        await settle()
        pipeline.gates[0].set()
        await settle()
        pipeline.gates[1].set()
        await settle()
        assert fits.result() == ["E"]
        assert pipeline.calls == [["r"], ["e"]]
        await batcher.close()

    run(body)


def test_cancel_after_start_still_runs_the_batch_for_others() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_batch_items=2)
        gone, stays = spawn(batcher, ["a"]), spawn(batcher, ["b"])
        await settle()
        gone.cancel()
        await settle()
        pipeline.gates[0].set()
        await settle()
        assert gone.cancelled() and stays.result() == ["B"]
        assert pipeline.calls == [["a", "b"]]
        assert sample(metrics, "appliance_shed_requests_total", reason="cancelled") == 0
        await batcher.close()

    run(body)


def test_cancel_of_a_split_request_drops_its_queued_rest() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_batch_items=2)
        task = spawn(batcher, ["a", "b", "c", "d"])
        await settle()
        assert batcher.queued_items == 2
        task.cancel()
        await settle()
        assert batcher.queued_items == 0
        # Work had started on it: not a request shed before any work.
        assert sample(metrics, "appliance_shed_requests_total", reason="cancelled") == 0
        pipeline.gates[0].set()
        await settle()
        assert pipeline.calls == [["a", "b"]]
        await batcher.close()

    run(body)


# 7. Concurrency


def test_batches_fill_while_every_slot_is_busy() -> None:
    async def body() -> None:
        clock, pipeline = FakeClock(), Pipeline(gated=True)
        batcher = make(pipeline, clock, concurrency=2)
        first = spawn(batcher, ["a"])
        await settle()
        clock.advance(10 * MS)
        await settle()
        second = spawn(batcher, ["b"])
        await settle()
        clock.advance(10 * MS)
        await settle()
        assert pipeline.calls == [["a"], ["b"]] and batcher.running_batches == 2
        waiting = [spawn(batcher, [s]) for s in ("c", "d", "e")]
        await settle()
        clock.advance(50 * MS)
        await settle()
        assert len(pipeline.calls) == 2 and batcher.queued_items == 3
        pipeline.gates[0].set()
        await settle()  # the freed slot takes everything that piled up, without more delay
        assert pipeline.calls[2] == ["c", "d", "e"]
        for gate in pipeline.gates[1:]:
            gate.set()
        await settle()
        assert pipeline.max_running == 2
        assert [t.result() for t in (first, second, *waiting)] == [["A"], ["B"], ["C"], ["D"],
                                                                   ["E"]]
        await batcher.close()

    run(body)


# 8. Closing


def test_close_with_drain_answers_everything_accepted() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_delay_ms=1000.0)
        tasks = [spawn(batcher, ["a", "b"]), spawn(batcher, ["c"])]
        await settle()
        await batcher.close()  # no need to wait out the delay: nothing more will come
        assert [t.result() for t in tasks] == [["A", "B"], ["C"]]
        with pytest.raises(ShuttingDown):
            await batcher.submit(["d"])
        assert sample(metrics, "appliance_shed_requests_total", reason="shutdown") == 1

    run(body)


def test_close_without_drain_refuses_queued_and_finishes_running() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_delay_ms=0.0)
        running = spawn(batcher, ["a"])
        await settle()
        queued = spawn(batcher, ["b"])
        await settle()
        closing = asyncio.get_running_loop().create_task(batcher.close(drain=False))
        await settle()
        with pytest.raises(ShuttingDown):
            queued.result()
        assert not closing.done() and not running.done()
        pipeline.gates[0].set()
        await settle()
        assert closing.done() and running.result() == ["A"]
        assert pipeline.seen == ["a"] and batcher.queued_items == 0
        assert sample(metrics, "appliance_shed_requests_total", reason="shutdown") == 1

    run(body)


# 9. Metrics


def test_metrics_of_queue_and_batches() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, max_batch_bytes=20)
        first = spawn(batcher, ["aaa"])
        await settle()
        clock.advance(4 * MS)
        second = spawn(batcher, ["bbbbb"])
        await settle()
        assert sample(metrics, "appliance_queue_depth") == 2
        assert sample(metrics, "appliance_queue_bytes") == 8
        clock.advance(6 * MS)
        await settle()
        assert sample(metrics, "appliance_queue_depth") == 0
        assert sample(metrics, "appliance_queue_bytes") == 0
        assert sample(metrics, "appliance_batches_running") == 1
        stage = {"stage": "queue"}
        assert sample(metrics, "appliance_stage_seconds_count", **stage) == 2
        assert sample(metrics, "appliance_stage_seconds_sum", **stage) == pytest.approx(16 * MS)
        # The batch size is the pipeline's to count (Pipeline.record), not the batcher's.
        assert sample(metrics, "appliance_batch_size_count") in (None, 0)
        # 2/4 items against 8/20 bytes: the larger share
        assert sample(metrics, "appliance_batch_fill_ratio_sum") == pytest.approx(0.5)
        pipeline.gates[0].set()
        await settle()
        assert sample(metrics, "appliance_batches_running") == 0
        assert first.result() == ["AAA"] and second.result() == ["BBBBB"]
        spawn(batcher, ["x" * 50])  # oversized: fill is capped at 1
        await settle()
        assert sample(metrics, "appliance_batch_fill_ratio_sum") == pytest.approx(1.5)
        pipeline.gates[1].set()
        await batcher.close()

    run(body)


# The clocks and helpers


def test_fake_clock_fires_due_timers_in_order() -> None:
    async def body() -> None:
        clock, fired = FakeClock(start=100.0), []
        clock.call_at(102.0, lambda: fired.append(("b", clock.now())))
        clock.call_at(101.0, lambda: fired.append(("a", clock.now())))
        clock.call_at(103.0, lambda: fired.append(("never", clock.now()))).cancel()
        clock.advance(1.5)
        assert fired == [("a", 101.0)] and clock.now() == 101.5
        clock.advance(5)
        assert fired == [("a", 101.0), ("b", 102.0)] and clock.pending_timers == 0
        sleeper = asyncio.get_running_loop().create_task(clock.sleep(2))
        await settle()
        assert not sleeper.done()
        clock.advance(2)
        await settle()
        assert sleeper.done()
        with pytest.raises(ValueError):
            clock.advance(-1)

    run(body)


def test_monotonic_clock_runs_due_timers() -> None:
    async def body() -> None:
        clock, fired = MonotonicClock(), asyncio.Event()
        clock.call_at(clock.now() - 1, fired.set)  # already due: no real waiting
        await asyncio.wait_for(fired.wait(), 1)
        await clock.sleep(0)

    run(body)


def test_empty_request_and_explicit_start() -> None:
    async def body() -> None:
        pipeline = Pipeline()
        batcher = make(pipeline, FakeClock())
        assert await batcher.submit([]) == []
        batcher.start()
        batcher.start()
        await batcher.close()
        await batcher.close()
        assert pipeline.calls == []

    run(body)
    with pytest.raises(ValueError):
        Batcher(Pipeline(), config(), len, 0)


def test_resolve_fills_in_the_automatic_settings_by_backend() -> None:
    given = BatchingConfig(max_batch_items=7, max_concurrent_batches=3)
    assert resolve(given, "cpu", 16) == given
    cpu = resolve(BatchingConfig(), "cpu", 16)
    assert (cpu.max_batch_items, cpu.max_concurrent_batches) == (16, 2)
    for backend in ("gpu", "gpu-sim"):
        gpu = resolve(BatchingConfig(), backend, 16)
        assert (gpu.max_batch_items, gpu.max_concurrent_batches) == (256, 2)


def test_a_request_arriving_while_the_oldest_file_waits_too_long_is_shed() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, concurrency=1, max_batch_items=1,
                       max_queue_wait_ms=50.0)
        running = spawn(batcher, ["a"])  # holds the only slot
        await settle()
        waiting = spawn(batcher, ["b"])
        await settle()
        clock.advance(0.04)
        third = spawn(batcher, ["c"])  # the oldest has waited 40 ms: admitted
        await settle()
        clock.advance(0.02)
        with pytest.raises(Overloaded, match="max_queue_wait_ms=50"):
            await batcher.submit(["d"])  # 60 ms
        assert sample(metrics, "appliance_shed_requests_total", reason="queue_wait") == 1
        for k in range(3):  # one batch at a time: a, then b, then c
            pipeline.gates[k].set()
            await settle()
        assert running.result() == ["A"] and waiting.result() == ["B"] and third.result() == ["C"]
        assert pipeline.seen == ["a", "b", "c"]

    run(body)


def test_bytes_held_in_queue_and_running_batches_are_bounded() -> None:
    async def body() -> None:
        clock, pipeline, metrics = FakeClock(), Pipeline(gated=True), Metrics()
        batcher = make(pipeline, clock, metrics=metrics, concurrency=1, max_batch_items=1,
                       max_inflight_bytes=10)
        running = spawn(batcher, ["aaaaaa"])  # 6 bytes, in the running batch
        await settle()
        assert batcher.queued_bytes == 0
        with pytest.raises(Overloaded, match="6 bytes held"):
            await batcher.submit(["bbbbb"])  # 6 + 5 > 10, though the queue is empty
        queued = spawn(batcher, ["cccc"])  # 6 + 4 fits
        await settle()
        assert sample(metrics, "appliance_shed_requests_total", reason="inflight_bytes") == 1
        pipeline.gates[0].set()
        await settle()
        assert running.result() == ["AAAAAA"]
        assert await batcher.submit([]) == []
        late = spawn(batcher, ["dddddd"])  # the first batch ended: 4 + 6 fits
        await settle()
        pipeline.gates[1].set()
        await settle()
        pipeline.gates[2].set()
        await settle()
        assert queued.result() == ["CCCC"] and late.result() == ["DDDDDD"]

    run(body)
