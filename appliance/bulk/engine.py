"""Ray for the bulk commands: join a cluster or start one here, size the actor
pool, and stream a pipeline's results to Parquet behind a progress bar."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.errors import ApplianceError

# A local Ray's object store holds paths and results only (never content):
# a small one leaves the memory to the hashing.
_LOCAL_STORE_BYTES = 256 * 1024 * 1024


def require() -> None:
    """ApplianceError, with the way out, when Ray or pyarrow is not installed."""
    try:
        import pyarrow  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ApplianceError(
            f"the bulk commands need Ray Data and pyarrow ({exc.name} is missing): "
            "pip install 'baseline-appliance[bulk]'") from exc


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` ("auto": the one this machine is part
    of), or start a local Ray when there is none; True when this call started
    it (the caller shuts it down). A Ray already initialised in this process
    is used as it is."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": True}
    if address:
        ray.init(address=address, **common)
    else:
        # Bound to loopback: a Ray head takes code from whoever reaches its
        # ports, and a local one has no business being reachable.
        ray.init(object_store_memory=_LOCAL_STORE_BYTES, _node_ip_address="127.0.0.1",
                 **common)
    return True


@dataclass(frozen=True)
class Pool:
    """The actor pool: ``actors`` actors of ``threads`` CPUs (hashing threads)
    and ``gpus`` GPUs each."""

    actors: int
    threads: int
    gpus: float

    def remote_args(self) -> dict[str, Any]:
        """map_batches' arguments for these actors."""
        from ray.data import ActorPoolStrategy

        return {"compute": ActorPoolStrategy(size=self.actors), "num_cpus": self.threads,
                "num_gpus": self.gpus or None}


def size_pool(backend: str, actors: int = 0, threads: int = 0, reserve: int = 0,
              default_threads: int = 2) -> Pool:
    """The actors for ``backend`` on the connected cluster: on the GPU backend
    (or auto with GPUs present) one per GPU by default, each with a GPU of its
    own; otherwise actors of ``threads`` CPUs (``default_threads``) filling the
    CPUs. ``reserve`` CPUs are left to the tasks that read the input: actors
    holding every CPU would wait forever for input no task can read."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = max(1, int(resources.get("CPU", 1)) - reserve)
    gpus = int(resources.get("GPU", 0))
    if backend == "gpu" or (backend == "auto" and gpus > 0):
        if gpus == 0:
            raise ApplianceError("--backend gpu: the Ray cluster has no GPU")
        n = actors or gpus
        return Pool(n, threads or max(1, cpus // n), 1.0)
    if actors:
        return Pool(actors, threads or max(1, cpus // actors), 0.0)
    threads = threads or min(default_threads, cpus)
    return Pool(max(1, cpus // threads), threads, 0.0)


def quiet_data() -> None:
    """Ray Data's own progress bars and banners off: the command has its own."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # Its execution banners are INFO, its note that its bars are off a WARNING.
    logging.getLogger("ray.data").setLevel(logging.ERROR)


@dataclass
class Drained:
    """What ``drain`` saw: units done, seconds in all, and seconds until the
    first result (Ray Data's planning and the actors' set-up: loading the
    snapshot, the kernels)."""

    done: int = 0
    seconds: float = 0.0
    first_seconds: float = 0.0


def drain(batches: Any, sink: Callable[[Any], int], total: int | None, unit: str,
          progress: bool) -> Drained:
    """Feed every pyarrow batch of ``batches`` to ``sink`` (which says how many
    ``unit`` it held), behind a progress bar of ``unit`` done and per second."""
    from tqdm import tqdm

    out = Drained()
    start = time.perf_counter()
    with tqdm(total=total, unit=unit, file=sys.stderr, disable=not progress or None,
              smoothing=0.1) as bar:
        for batch in batches:
            if not out.first_seconds:
                out.first_seconds = time.perf_counter() - start
            n = sink(batch)
            out.done += n
            bar.update(n)
    out.seconds = time.perf_counter() - start
    return out


def execute(address: str | None, sink: Any, batches: Callable[[], Any],
            write: Callable[[Any], int], total: int | None, unit: str,
            progress: bool) -> Drained:
    """Connect (``connect``), run the pipeline that ``batches`` builds into
    ``write`` (``drain``), then close ``sink`` (a ParquetParts) and stop the
    Ray this call started, whatever happened."""
    import ray

    started = connect(address)
    try:
        quiet_data()
        return drain(batches(), write, total, unit, progress)
    finally:
        sink.close()
        if started:
            ray.shutdown()


def column_sum(table: Any, name: str) -> int:
    """The sum of a pyarrow table's integer or boolean column (0 when empty)."""
    import pyarrow.compute as pc

    return int(pc.sum(table.column(name)).as_py() or 0)
