"""``appliance bulk scan``: every file of a source hashed and matched on Ray Data.

The dataset is the files' names, nothing else. ``ScanWorker`` actors read
their files themselves (``reading.read_item``, under ``max_stream_bytes`` as
``appliance scan``), run them through the pipeline and snapshot the server
would build, and return one row per file; the driver writes the rows to
Parquet (``output.ParquetParts``). A file that cannot be read or hashed gets
its error code in its row; it never stops the scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import signals as sig
from appliance.bulk import engine
from appliance.bulk.output import ParquetParts, absolute, filesystem, is_uri
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.reading import hash_files, local_open, walk
from appliance.results import ItemResult

# Files per actor call: enough for the pipeline's batches, few enough that a
# batch of large files stays within memory (at most this many are held).
FILES_PER_CALL = 16


def list_source(source: str) -> list[str]:
    """The files of ``source``: every file under a directory (or object-store
    prefix), sorted, or the lines of a text file of paths (blank lines skipped;
    relative paths are from the working directory). Names come back absolute
    (local) or as URIs, as every worker can open them."""
    if not is_uri(source):
        root = Path(source)
        if root.is_dir():
            return [str(p) for p in walk(root.absolute())]
        if not root.is_file():
            raise ApplianceError(f"{source}: no such directory or file of paths")
        return _lines(root.read_text(encoding="utf-8"))
    from pyarrow import fs as pafs

    system, path = filesystem(source)
    scheme = source.split("://", 1)[0]
    info = system.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        found = system.get_file_info(pafs.FileSelector(path, recursive=True))
        return sorted(f"{scheme}://{i.path}" for i in found if i.type == pafs.FileType.File)
    if info.type == pafs.FileType.File:
        with system.open_input_stream(path) as f:
            return _lines(f.read().decode("utf-8"))
    raise ApplianceError(f"{source}: no such prefix or file of paths")


def _lines(text: str) -> list[str]:
    return [absolute(line.strip()) for line in text.splitlines() if line.strip()]


def columns(signals: Sequence[str]) -> tuple[str, ...]:
    """The signal columns of a scan: the requested signals, or the defaults."""
    return sig.select_computable(signals)


def quality_columns(signal_columns: Sequence[str]) -> tuple[str, ...]:
    """The signals among the columns whose values carry a quality (PDQ's
    ``pdq_quality``): each gets a ``SIGNAL_quality`` column beside its own."""
    return tuple(n for n in signal_columns if sig.SIGNALS[n].quality)


def schema(signal_columns: Sequence[str]) -> Any:
    import pyarrow as pa

    hit = pa.struct([("signal", pa.string()), ("list", pa.string()),
                     ("list_version", pa.string()), ("entry_id", pa.string()),
                     ("category", pa.string()), ("distance", pa.int32())])
    skipped = pa.struct([("signal", pa.string()), ("code", pa.string()),
                         ("message", pa.string())])
    return pa.schema([
        ("path", pa.string()), ("size", pa.int64()),
        *((name, pa.string()) for name in signal_columns),
        *((f"{name}_quality", pa.int32()) for name in quality_columns(signal_columns)),
        ("matched", pa.bool_()), ("matches", pa.list_(hit)),
        ("skipped", pa.list_(skipped)), ("error", pa.string()), ("error_message", pa.string()),
    ])


def rows(results: Sequence[ItemResult], signal_columns: Sequence[str]) -> dict[str, list[Any]]:
    """The scan's columns of ``results`` (the file as stored: a dihedral or
    EXIF variant's hash is not a column)."""
    out: dict[str, list[Any]] = {name: [] for name in schema(signal_columns).names}
    for r in results:
        stored = {h.signal: h for h in r.hashes if not h.variant}
        out["path"].append(r.id)
        out["size"].append(r.size)
        for name in signal_columns:
            out[name].append(stored[name].hex if name in stored else None)
        for name in quality_columns(signal_columns):
            value = stored.get(name)
            out[f"{name}_quality"].append(value.quality if value is not None else None)
        out["matched"].append(r.matched)
        out["matches"].append([{"signal": h.signal, "list": h.list,
                                "list_version": h.list_version, "entry_id": h.entry_id,
                                "category": h.category, "distance": h.distance}
                               for h in r.matches])
        out["skipped"].append([{"signal": s, "code": e.code, "message": e.message}
                               for s, e in r.skipped.items()])
        out["error"].append(r.error.code if r.error else None)
        out["error_message"].append(r.error.message if r.error else None)
    return out


class ScanWorker:
    """One actor: the server's pipeline and snapshot, built once, hashing and
    matching the files it is handed (it reads them itself)."""

    def __init__(self, config: Config, signals: tuple[str, ...], threads: int) -> None:
        from appliance.backend import make_pipeline, select_backend
        from appliance.loading import load_snapshot

        self.pipeline = make_pipeline(config, select_backend(config.server.backend, config.gpu))
        self.snapshot = load_snapshot(config).snapshot
        self.pipeline.prepare_snapshot(self.snapshot)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="appliance-bulk")
        self.signals, self.columns = signals, columns(signals)
        self.limit = config.limits.max_stream_bytes

    @staticmethod
    def _opener(name: str) -> Callable[[str], AbstractContextManager[Any]]:
        if not is_uri(name):
            return local_open

        def open_uri(n: str) -> AbstractContextManager[Any]:
            system, path = filesystem(n)
            return system.open_input_file(path)  # type: ignore[no-any-return]

        return open_uri

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        # The files' bytes are gone once hash_files returns, before the rows leave.
        results = hash_files(batch.column("path").to_pylist(), self.pipeline, self.snapshot,
                             self.pool, self.limit, self.signals, self._opener)
        return pa.table(rows(results, self.columns), schema=schema(self.columns))


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    matches: int = 0
    matched_files: int = 0
    errors: int = 0
    seconds: float = 0.0
    # Until the first result came back: the actors' set-up, mostly.
    first_seconds: float = 0.0
    parts: int = 0

    def as_dict(self) -> dict[str, Any]:
        rate = round(self.files / self.seconds, 1) if self.seconds > 0 else 0.0
        return {"files": self.files, "bytes": self.bytes, "matches": self.matches,
                "matched_files": self.matched_files, "errors": self.errors,
                "seconds": round(self.seconds, 3), "first_result_seconds":
                round(self.first_seconds, 3), "files_per_second": rate,
                "parquet_files": self.parts}


def run(config: Config, source: str, out: str, signals: tuple[str, ...], *,
        ray_address: str | None = None, actors: int = 0, threads: int = 0,
        progress: bool = True) -> Summary:
    """Scan ``source`` into Parquet under ``out`` (see the module docstring)."""
    engine.require()
    import ray.data

    names = list_source(source)
    sink = ParquetParts(out, schema(columns(signals)))
    summary = Summary()

    def batches() -> Any:
        if not names:
            return ()
        pool = engine.size_pool(config.server.backend, actors, threads or config.server.workers)
        blocks = max(1, min(len(names) // FILES_PER_CALL, 4 * pool.actors * 8))
        dataset = ray.data.from_items([{"path": n} for n in names],
                                      override_num_blocks=blocks)
        hashed = dataset.map_batches(
            ScanWorker, batch_size=FILES_PER_CALL, batch_format="pyarrow",
            fn_constructor_kwargs={"config": config, "signals": signals,
                                   "threads": pool.threads},
            **pool.remote_args())
        return hashed.iter_batches(batch_format="pyarrow", batch_size=None)

    def write(table: Any) -> int:
        import pyarrow.compute as pc

        sink.write(table)
        summary.bytes += engine.column_sum(table, "size")
        summary.errors += table.num_rows - table.column("error").null_count
        summary.matched_files += engine.column_sum(table, "matched")
        summary.matches += int(pc.sum(pc.list_value_length(table.column("matches"))).as_py()
                               or 0)
        return int(table.num_rows)

    drained = engine.execute(ray_address, sink, batches, write, len(names), "file", progress)
    summary.files, summary.seconds = drained.done, drained.seconds
    summary.first_seconds, summary.parts = drained.first_seconds, len(sink.files)
    return summary
