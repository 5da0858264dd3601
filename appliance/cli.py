"""The ``appliance`` command: serve, hash, match, scan, bulk, lists, audit, demo.

Output of hash/match/scan is one JSON object per file and line (see the
README): ``{"file", "md5", "sha1", "sha256", "pdq", "pdq_quality", ...}``, with
``"matched"`` and ``"matches"`` for match and scan, ``"skipped"`` for signals
that could not be made, or ``{"file", "error": {"code", "message"}}``. Exit
status: 0 when every file was processed, 1 when some file had an error, 2 for
bad usage, a bad configuration, or a list or port that does not work.
``bulk scan`` and ``bulk rematch`` write Parquet instead (appliance.bulk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from appliance import cli_parser
from appliance import config as cfg
from appliance.errors import ApplianceError
from appliance.settings import settings

# Heavy modules (numba, Pillow, grpc) are imported by the commands that need
# them, so `appliance --help` answers at once.


def _config(args: argparse.Namespace) -> cfg.Config:
    return cfg.load(
        path=args.config,
        env=os.environ,
        overrides=cli_parser.setting_overrides(args),
        lists=getattr(args, "lists", None),
    )


def _local_results(
    paths: Sequence[Path], config: cfg.Config, signals: tuple[str, ...], match: bool,
    workers: int,
) -> Iterator[tuple[Path, Any]]:
    """Hash (and match) files on the configured backend, yielding results in order.

    Files go through the pipeline in chunks, which bound the memory held at
    once and give the index batches; two chunks are in flight, so on a GPU
    backend the decoding of one overlaps the device work on the other.
    """
    from appliance.backend import make_pipeline, select_backend
    from appliance.loading import load_snapshot
    from appliance.reading import hash_files

    pipeline = make_pipeline(config, select_backend(config.server.backend, config.gpu))
    snapshot = load_snapshot(config).snapshot if match else None
    if snapshot is not None:
        pipeline.prepare_snapshot(snapshot)
    limit = config.limits.max_stream_bytes

    def run(chunk: Sequence[Path]) -> list[Any]:
        return hash_files([str(p) for p in chunk], pipeline, snapshot, pool, limit, signals)

    step = 8 * workers
    chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="appliance-cli") as pool, \
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="appliance-batch") as drivers:
        pending: deque[tuple[Sequence[Path], Future[list[Any]]]] = deque()
        for chunk in chunks:
            pending.append((chunk, drivers.submit(run, chunk)))
            if len(pending) == 2:
                done_chunk, future = pending.popleft()
                yield from zip(done_chunk, future.result(), strict=True)
        while pending:
            done_chunk, future = pending.popleft()
            yield from zip(done_chunk, future.result(), strict=True)


def _workers(config: cfg.Config) -> int:
    return config.server.workers or os.cpu_count() or 1


def _json(name: str, result: Any, with_matches: bool) -> dict[str, Any]:
    from appliance.convert import result_json, result_to_pb

    return result_json(name, result_to_pb(result), with_matches)


def _emit(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, separators=(",", ":")) + "\n")
    out.flush()


def _signals(args: argparse.Namespace) -> tuple[str, ...]:
    """The --signals names, checked: a misspelt one is a usage error, not a
    per-file one."""
    from appliance import signals as sig
    from appliance.errors import ItemFault

    names = tuple(s.strip() for s in (args.signals or "").split(",") if s.strip())
    for name in names:
        try:
            sig.get(name)
        except ItemFault as fault:
            raise ApplianceError(f"--signals: {fault.message}") from fault
    return names


# Options that say how this machine hashes or matches: a server decides
# those for itself, so with --server they are refused, never ignored.
_LOCAL_ONLY = ("lists", *(settings()[key].dest for key in
                          (*cli_parser.MATCHING_FLAGS, *cli_parser.HASHING_FLAGS)), "backend")


def cmd_hash_or_match(args: argparse.Namespace, match: bool) -> int:
    if getattr(args, "server", None):
        from appliance.client import ClientAuth, match_files

        given = [f"--{n.replace('_', '-')}" for n in _LOCAL_ONLY if getattr(args, n, None)]
        if given:
            raise ApplianceError(f"{', '.join(given)} cannot apply to --server: the server's "
                                 "own configuration decides them")
        auth = ClientAuth(ca=args.tls_ca or "", cert=args.tls_cert or "", key=args.tls_key or "",
                          token=args.token or os.environ.get("APPLIANCE_TOKEN", ""))
        return match_files(args.server, args.files, _signals(args), match, auth)
    client_only = [f"--{n.replace('_', '-')}" for n in ("tls_ca", "tls_cert", "tls_key", "token")
                   if getattr(args, n, None)]
    if client_only:
        raise ApplianceError(f"{', '.join(client_only)} only apply with --server")
    config = _config(args)
    paths = [Path(f) for f in args.files]
    failed = False
    for path, result in _local_results(paths, config, _signals(args), match, _workers(config)):
        failed |= result.error is not None
        _emit(sys.stdout, _json(str(path), result, match))
    return 1 if failed else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "es" if noun.endswith("ch") else "s")


def _writable_parent(path: str, what: str) -> None:
    """Refuse an output path whose directory does not exist or cannot be written
    (missing parents are never created)."""
    parent = Path(path).absolute().parent
    if not parent.is_dir():
        raise ApplianceError(f"{what} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ApplianceError(f"{what} {path}: the directory {parent} cannot be written")


def cmd_scan(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from appliance.reading import walk

    root = Path(args.dir)
    if not root.is_dir():
        raise ApplianceError(f"{root} is not a directory")
    config = _config(args)
    _signals(args)
    if args.out:
        _writable_parent(args.out, "--out")
    paths = list(walk(root))
    out: TextIO = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    files = nbytes = matches = matched_files = errors = 0
    start = time.perf_counter()
    try:
        with tqdm(total=len(paths), unit="file", file=sys.stderr,
                  disable=args.no_progress or None) as bar:
            results = _local_results(paths, config, _signals(args), True, _workers(config))
            for path, result in results:
                files += 1
                nbytes += result.size
                errors += result.error is not None
                matches += len(result.matches)
                # Matched: a block list hit no allow list vouched for (as the server counts).
                matched_files += result.matched
                _emit(out, _json(str(path), result, True))
                bar.update(1)
    finally:
        if args.out:
            out.close()
    elapsed = time.perf_counter() - start
    summary = {
        "files": files, "bytes": nbytes, "matches": matches, "matched_files": matched_files,
        "errors": errors, "seconds": round(elapsed, 3),
        "files_per_second": round(files / elapsed, 1) if elapsed > 0 else 0.0,
    }
    print(
        f"scanned {_count(files, 'file')} ({nbytes / 1e6:.1f} MB) in {elapsed:.1f} s "
        f"({summary['files_per_second']} files/s): {_count(matches, 'match')} in "
        f"{_count(matched_files, 'matched file')}, {_count(errors, 'error')}",
        file=sys.stderr,
    )
    if args.summary_json:
        print(json.dumps(summary), file=sys.stderr)
    return 1 if errors else 0


def _bulk_summary(args: argparse.Namespace, text: str, summary: dict[str, Any]) -> None:
    print(text, file=sys.stderr)
    if args.summary_json:
        print(json.dumps(summary), file=sys.stderr)


def cmd_bulk_scan(args: argparse.Namespace) -> int:
    from appliance.bulk import scan

    config = _config(args)
    signals = _signals(args)
    done = scan.run(config, args.source, args.out, signals, ray_address=args.ray_address,
                    actors=args.actors, threads=args.threads, progress=not args.no_progress)
    s = done.as_dict()
    _bulk_summary(args, (
        f"bulk scanned {_count(done.files, 'file')} ({done.bytes / 1e6:.1f} MB) in "
        f"{done.seconds:.1f} s ({s['files_per_second']} files/s): "
        f"{_count(done.matches, 'match')} in {_count(done.matched_files, 'matched file')}, "
        f"{_count(done.errors, 'error')}; wrote {_count(done.parts, 'Parquet file')} to "
        f"{args.out}"), s)
    return 1 if done.errors else 0


def cmd_bulk_rematch(args: argparse.Namespace) -> int:
    from appliance.bulk import rematch

    config = _config(args)
    if config.matching.pdq_dihedral:
        raise ApplianceError("--dihedral needs the pictures (their rotations are hashed); "
                             "stored hashes are matched as they are")
    done = rematch.run(config, args.hashes, args.out, args.only_new_since or (),
                       ray_address=args.ray_address, actors=args.actors, threads=args.threads,
                       progress=not args.no_progress)
    s = done.as_dict()
    _bulk_summary(args, (
        f"bulk rematched {_count(done.rows, 'row')} in {done.seconds:.1f} s "
        f"({s['rows_per_second']} rows/s) against {done.against}: "
        f"{_count(done.hits, 'hit')} in {_count(done.rows_hit, 'row')}, "
        f"{_count(done.malformed, 'malformed value')}; wrote "
        f"{_count(done.parts, 'Parquet file')} to {args.out}"), s)
    return 1 if done.malformed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from appliance.logs import setup_logging
    from appliance.server import serve

    config = _config(args)
    setup_logging(config.server.log_format, logging.INFO, sys.stderr)
    return asyncio.run(serve(config))


def cmd_doctor(args: argparse.Namespace) -> int:
    from appliance.doctor import run

    config = _config(args)
    return run(config, f"file {args.config}" if args.config else "defaults, environment, flags")


def cmd_lists_compile(args: argparse.Namespace) -> int:
    import time

    from appliance.index.compiled import write_compiled
    from appliance.loading import Catalog

    config = cfg.load(path=args.config, env=os.environ, lists=args.specs or None)
    if not config.lists:
        raise ApplianceError("name the lists to compile (SPEC..., or [[lists]] in --config)")
    _writable_parent(args.out, "-o")
    start = time.perf_counter()
    loaded = Catalog().load(config)
    size = write_compiled(args.out, loaded.snapshot.indexes, loaded.sources)
    for index in loaded.snapshot.indexes:
        counts = ", ".join(f"{s} {index.count(s)}" for s in index.matchers) or "no values"
        print(f"{index.name}@{index.hash_list.version} [{index.kind}]: {counts}", file=sys.stderr)
    print(f"wrote {args.out}: {size / 1e6:.1f} MB in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)
    return 0


def cmd_lists_inspect(args: argparse.Namespace) -> int:
    from appliance.index import snapfile
    from appliance.index.compiled import describe

    info = describe(args.file)
    if args.verify:
        snapfile.verify(args.file)
        info["verified"] = True
    print(json.dumps(info, indent=2))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from appliance.audit_chain import run_verify

    return run_verify(args.files)


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance import demo

    demo_set = demo.build()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ApplianceError(f"--out {out}: not a directory")
    _writable_parent(str(out), "--out")
    try:
        written = demo.write(out)
    except OSError as exc:
        raise ApplianceError(f"--out {out}: {exc.strerror}") from exc
    for path in written:
        note = demo_set.expectations.get(path.name, "the list: matches the files above")
        print(f"{path}  ({note})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    return cli_parser.build_parser({
        "serve": cmd_serve, "doctor": cmd_doctor,
        "hash": lambda a: cmd_hash_or_match(a, match=False),
        "match": lambda a: cmd_hash_or_match(a, match=True),
        "scan": cmd_scan, "bulk scan": cmd_bulk_scan, "bulk rematch": cmd_bulk_rematch,
        "lists compile": cmd_lists_compile,
        "lists inspect": cmd_lists_inspect, "audit verify": cmd_audit_verify, "demo": cmd_demo,
    })


def main(argv: Iterable[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(None if argv is None else list(argv))
    if unknown:
        # Said by the command's own parser, with its usage, not the top level's.
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args.func(args))
    except ApplianceError as exc:
        print(f"appliance: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
