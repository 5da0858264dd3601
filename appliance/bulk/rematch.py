"""``appliance bulk rematch``: a host's stored hash records matched on Ray Data.

The records are Parquet or CSV with an ``id`` column and any signal columns
(``md5``, ``sha1``, ``sha256``, ``pdq``, ``phash``, ..., ``photodna``) in
hex, and optionally ``SIGNAL_quality`` columns; without a quality column a
signal is matched without its quality gate. Ray Data reads them in blocks;
``RematchWorker`` actors, each with the lists' index built once (or only
what the lists added since an older snapshot: ``delta``), match every value
as the Lookup RPC does (``Pipeline.lookup``: the same thresholds, one hit
per entry, the closest) and hand back the hits with their row counts; the
driver writes one Parquet row per hit: ``id, signal, list, list_version,
entry_id, category, distance, kind``. A value that is not valid hex of its
signal's width, or a quality outside 0..100, is counted as malformed and
skipped; its row's other values are still matched.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from appliance.bulk import delta, engine
from appliance.bulk.output import ParquetParts, filesystem
from appliance.config import Config
from appliance.errors import ApplianceError, ItemFault
from appliance.index.snapshot import VIDEO_KINDS, Snapshot
from appliance.listspec import ListSpec
from appliance.pipeline import best_per_entry
from appliance.results import Hit
from appliance.signals import SIGNALS

# Records per actor call: one query per signal for this many values.
ROWS_PER_CALL = 65536
# CPUs a read task holds: reading and decoding Parquet is light beside matching.
_READ_CPUS = 0.5


def hit_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("signal", pa.string()), ("list", pa.string()),
        ("list_version", pa.string()), ("entry_id", pa.string()), ("category", pa.string()),
        ("distance", pa.int32()), ("kind", pa.string()),
    ])


def _batch_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("rows", pa.int64()), ("rows_hit", pa.int64()),
                      ("malformed", pa.int64()), ("hits", pa.list_(pa.struct(hit_schema())))])


def signal_columns(names: Sequence[str]) -> list[str]:
    """The signal columns among ``names``; ApplianceError when there is no ``id``,
    no signal column, or a video signal (whole videos are not retro-matched)."""
    if "id" not in names:
        raise ApplianceError(f"the hash records have no id column (columns: {', '.join(names)})")
    found = [n for n in names if n in SIGNALS]
    video = [n for n in found if SIGNALS[n].match in VIDEO_KINDS]
    if video:
        raise ApplianceError(f"{', '.join(video)}: video signals are not retro-matched; "
                             "drop the column")
    if not found:
        known = ", ".join(n for n in SIGNALS if SIGNALS[n].match not in VIDEO_KINDS)
        raise ApplianceError(f"the hash records have no signal column (known: {known})")
    return found


def _load(config: Config, since: Sequence[str]) -> Snapshot:
    """The snapshot to match against: the lists, or what they added since ``since``."""
    from appliance.loading import load_snapshot

    snapshot = load_snapshot(config).snapshot
    if not since:
        return snapshot
    old = load_snapshot(replace(config, lists=tuple(ListSpec.parse(s) for s in since)))
    return delta.added(snapshot, old.snapshot)


def _parse(signal: str, texts: list[str | None]) -> tuple[list[int], list[bytes], int]:
    """(row positions, raw values, malformed count) of a column of hex values;
    nulls and empty strings are no value."""
    spec = SIGNALS[signal]
    positions = [i for i, t in enumerate(texts) if t]
    width = 2 * spec.nbytes
    wanted = [texts[i] for i in positions]
    if all(len(t) == width for t in wanted if t is not None):
        try:  # one C call for the whole column when every value is plain hex
            raw = bytes.fromhex("".join(t for t in wanted if t is not None))
        except ValueError:
            raw = b""
        if len(raw) == spec.nbytes * len(wanted):
            n = spec.nbytes
            return positions, [raw[k * n:(k + 1) * n] for k in range(len(wanted))], 0
    good: list[int] = []
    values: list[bytes] = []
    for i in positions:
        try:
            values.append(spec.parse(str(texts[i])))
        except ItemFault:
            continue
        good.append(i)
    return good, values, len(positions) - len(good)


class RematchWorker:
    """One actor: the index of the lists (or of their delta), built once,
    matching the hash records it is handed."""

    def __init__(self, config: Config, since: tuple[str, ...]) -> None:
        from appliance.backend import make_pipeline, select_backend

        self.pipeline = make_pipeline(config, select_backend(config.server.backend, config.gpu))
        self.snapshot = _load(config, since)
        self.pipeline.prepare_snapshot(self.snapshot)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        names = batch.column_names
        ids = batch.column("id").cast(pa.string()).to_pylist()
        malformed = 0
        found_in: dict[int, list[Hit]] = defaultdict(list)  # row -> its hits, all signals
        for signal in signal_columns(names):
            positions, values, bad = _parse(
                signal, batch.column(signal).cast(pa.string()).to_pylist())
            malformed += bad
            qualities: list[int | None] | None = None
            if f"{signal}_quality" in names:
                column = batch.column(f"{signal}_quality").cast(pa.int64()).to_pylist()
                kept = [(p, v, column[p]) for p, v in zip(positions, values, strict=True)
                        if column[p] is None or 0 <= column[p] <= 100]
                malformed += len(positions) - len(kept)
                positions = [p for p, _, _ in kept]
                values = [v for _, v, _ in kept]
                qualities = [q for _, _, q in kept]
            if not values:
                continue
            found = self.pipeline.lookup(self.snapshot, signal, values,
                                         qualities or [None] * len(values))
            for row, hits in zip(positions, found, strict=True):
                if hits:
                    found_in[row].extend(hits)
        # One hit per record and entry, the closest: as files and the Lookup RPC
        # get them (match_results; its per-record objects would cost a fifth of
        # the rows/s here, so the hits are gathered per row instead).
        rows = [{"id": ids[row], "signal": h.signal, "list": h.list,
                 "list_version": h.list_version, "entry_id": h.entry_id,
                 "category": h.category, "distance": h.distance, "kind": h.kind}
                for row in sorted(found_in) for h in best_per_entry(found_in[row])]
        rows_hit = len(found_in)
        return pa.table({"rows": [len(ids)], "rows_hit": [rows_hit], "malformed": [malformed],
                         "hits": [rows]}, schema=_batch_schema())


@dataclass
class Summary:
    rows: int = 0
    hits: int = 0
    rows_hit: int = 0
    malformed: int = 0
    seconds: float = 0.0
    first_seconds: float = 0.0
    parts: int = 0
    against: str = ""

    def as_dict(self) -> dict[str, Any]:
        rate = round(self.rows / self.seconds, 1) if self.seconds > 0 else 0.0
        return {"rows": self.rows, "hits": self.hits, "rows_hit": self.rows_hit,
                "malformed": self.malformed, "seconds": round(self.seconds, 3),
                "first_result_seconds": round(self.first_seconds, 3),
                "rows_per_second": rate, "parquet_files": self.parts, "against": self.against}


@dataclass(frozen=True)
class Records:
    """Where the hash records are and which of their columns are read."""

    system: Any
    path: str
    csv: bool
    columns: tuple[str, ...]
    header: tuple[str, ...] = ()
    # From the Parquet footers, for the progress bar; CSV: unknown until read.
    rows: int | None = None

    @classmethod
    def open(cls, hashes: str) -> Records:
        """Their columns, read here on the driver: records that cannot be matched
        are refused before any cluster is asked for anything."""
        import pyarrow.dataset as pads

        system, path = filesystem(hashes)
        is_csv = hashes.lower().endswith(".csv")
        rows = None
        try:
            if is_csv:
                with system.open_input_stream(path) as f:
                    header = next(csv.reader(io.TextIOWrapper(f, encoding="utf-8")), [])
            else:
                parquet = pads.dataset(path, filesystem=system, format="parquet")
                header = parquet.schema.names
        except (OSError, ValueError) as exc:
            raise ApplianceError(f"{hashes}: {exc}") from exc
        signals = signal_columns(header)
        if not is_csv:
            rows = int(parquet.count_rows())
        used = ("id", *signals, *(f"{s}_quality" for s in signals if f"{s}_quality" in header))
        return cls(system, path, is_csv, used, tuple(header), rows)

    def dataset(self) -> Any:
        import pyarrow as pa
        import pyarrow.csv as pacsv
        import ray.data

        if not self.csv:
            return ray.data.read_parquet(self.path, filesystem=self.system,
                                         columns=list(self.columns), num_cpus=_READ_CPUS)
        # Every column as text: hex such as "0123..." must not become a number.
        types = {n: pa.int64() if n.endswith("_quality") else pa.string() for n in self.header}
        options = pacsv.ConvertOptions(column_types=types, include_columns=list(self.columns),
                                       strings_can_be_null=True)
        return ray.data.read_csv(self.path, filesystem=self.system, convert_options=options,
                                 num_cpus=_READ_CPUS)


def run(config: Config, hashes: str, out: str, since: Sequence[str], *,
        ray_address: str | None = None, actors: int = 0, threads: int = 0,
        progress: bool = True) -> Summary:
    """Match the records of ``hashes`` into Parquet under ``out``."""
    engine.require()
    import pyarrow as pa
    import pyarrow.compute as pc

    since = tuple(since)
    records = Records.open(hashes)
    # Loaded here first: a bad list fails before a cluster is asked for
    # anything, and the summary can say what was matched.
    snapshot = _load(config, since)
    values = delta.count(snapshot)
    against = (f"{values} values added since {', '.join(since)}" if since
               else f"{values} list values")
    sink = ParquetParts(out, hit_schema())
    summary = Summary(against=against)

    def batches() -> Any:
        # One thread an actor (a lookup is one thread's work), a CPU left to
        # the tasks that read the records.
        pool = engine.size_pool(config.server.backend, actors, threads, reserve=1,
                                default_threads=1)
        matched = records.dataset().map_batches(
            RematchWorker, batch_size=ROWS_PER_CALL, batch_format="pyarrow",
            fn_constructor_kwargs={"config": config, "since": since}, **pool.remote_args())
        return matched.iter_batches(batch_format="pyarrow", batch_size=None)

    def write(table: Any) -> int:
        flat = pc.list_flatten(table.column("hits"))
        if len(flat):
            sink.write(pa.Table.from_struct_array(flat))
        summary.hits += len(flat)
        summary.rows_hit += engine.column_sum(table, "rows_hit")
        summary.malformed += engine.column_sum(table, "malformed")
        return engine.column_sum(table, "rows")

    drained = engine.execute(ray_address, sink, batches, write, records.rows, "row",
                             progress)
    summary.rows, summary.seconds = drained.done, drained.seconds
    summary.first_seconds, summary.parts = drained.first_seconds, len(sink.files)
    return summary
