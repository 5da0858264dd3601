"""The ``appliance`` command: serve, hash, match, scan, demo.

Output of hash/match/scan is one JSON object per file and line (see the
README): ``{"file", "md5", "sha1", "sha256", "pdq", "pdq_quality", ...}``, with
``"matched"`` and ``"matches"`` for match and scan, ``"skipped"`` for signals
that could not be made, or ``{"file", "error": {"code", "message"}}``. Exit
status: 0 when every file was processed, 1 when some file had an error, 2 for
bad usage, a bad configuration, or a list or port that does not work.
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

from appliance import config as cfg
from appliance.errors import ApplianceError, ItemCode

# Heavy modules (numba, Pillow, grpc) are imported by the commands that need
# them, so `appliance --help` answers at once.


def _config(args: argparse.Namespace) -> cfg.Config:
    server = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "backend": getattr(args, "backend", None),
        "workers": getattr(args, "workers", None),
        "audit_log": getattr(args, "audit_log", None),
        "grace_seconds": getattr(args, "grace_seconds", None),
        "log_format": getattr(args, "log_format", None),
        "log_requests": getattr(args, "log_requests", None),
    }
    batching = {
        key: getattr(args, key, None)
        for key in ("max_batch_items", "max_batch_bytes", "max_delay_ms",
                    "max_queue_items", "max_queue_bytes", "max_queue_wait_ms",
                    "max_inflight_bytes",
                    "max_concurrent_batches")
    }
    matching = {
        "pdq_threshold": getattr(args, "pdq_threshold", None),
        "pdq_quality_min": getattr(args, "pdq_quality_min", None),
        "pdq_dihedral": getattr(args, "dihedral", None),
    }
    hashing = {
        "pdq_mode": getattr(args, "pdq_mode", None),
        "exif_orientation": getattr(args, "exif_orientation", None),
    }
    limits = {"decode_isolation": getattr(args, "decode_isolation", None)}
    security = {
        "tls_cert": getattr(args, "tls_server_cert", None),
        "tls_key": getattr(args, "tls_server_key", None),
        "tls_client_ca": getattr(args, "tls_client_ca", None),
        "identities_file": getattr(args, "identities", None),
        "allow_insecure": getattr(args, "allow_insecure", None),
        "metrics_tls": getattr(args, "metrics_tls", None),
    }
    return cfg.load(
        path=args.config,
        env=os.environ,
        overrides={"server": server, "hashing": hashing, "matching": matching,
                   "batching": batching, "limits": limits, "security": security},
        lists=getattr(args, "lists", None),
    )


def _read_item(path: Path, limit: int, signals: tuple[str, ...]) -> Any:
    """The Item of a file, or the ItemResult saying why it could not be read.

    Local files are held to ``limits.max_stream_bytes``, as ``--server`` is
    (it streams the files it sends), so local and remote answers agree; a
    larger file is refused from its size, unread.
    """
    from appliance.pipeline import Item, ItemError, ItemResult

    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                return ItemResult(id=str(path), size=size, error=ItemError(
                    ItemCode.TOO_LARGE, f"{size} bytes exceeds limits.max_stream_bytes={limit}"))
            return Item(str(path), f.read(limit + 1), signals, streamed=True)
    except OSError as exc:
        return ItemResult(id=str(path), size=0, error=ItemError(ItemCode.UNREADABLE, str(exc)))


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
    from appliance.pipeline import Item

    pipeline = make_pipeline(config, select_backend(config.server.backend, config.gpu))
    snapshot = load_snapshot(config).snapshot if match else None
    if snapshot is not None:
        pipeline.prepare_snapshot(snapshot)
    limit = config.limits.max_stream_bytes

    def run(chunk: Sequence[Path]) -> list[Any]:
        read = list(pool.map(lambda p: _read_item(p, limit, signals), chunk))
        items = [r for r in read if isinstance(r, Item)]
        done = iter(pipeline.run(items, snapshot, pool))
        return [next(done) if isinstance(r, Item) else r for r in read]

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
_LOCAL_ONLY = ("lists", "dihedral", "pdq_threshold", "pdq_quality_min", "pdq_mode",
               "exif_orientation", "decode_isolation", "backend")


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


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def cmd_scan(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    root = Path(args.dir)
    if not root.is_dir():
        raise ApplianceError(f"{root} is not a directory")
    config = _config(args)
    _signals(args)
    if args.out:
        _writable_parent(args.out, "--out")
    paths = list(_walk(root))
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


def _add_hashing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pdq-mode", choices=["exact", "fast"],
                   help="exact: the reference's bits (default); fast: JPEGs decoded at "
                        "reduced scale first, a few bits of drift (see README)")
    p.add_argument("--exif-orientation", action="store_true", default=None,
                   help="also hash the EXIF-corrected orientation (variant 'exif')")
    p.add_argument("--decode-isolation", choices=["process", "inline"],
                   help="process: decode in sandboxed worker processes, killed past "
                   "limits.max_decode_seconds (default); inline: in the hashing threads")


def _add_client(p: argparse.ArgumentParser) -> None:
    """How --server is reached: TLS, a client certificate, a token."""
    g = p.add_argument_group("with --server")
    g.add_argument("--tls-ca", metavar="FILE",
                   help="TLS, trusting this CA for the server's certificate")
    g.add_argument("--tls-cert", metavar="FILE", help="this client's certificate (mutual TLS)")
    g.add_argument("--tls-key", metavar="FILE", help="its private key")
    g.add_argument("--token", help="bearer token (default: $APPLIANCE_TOKEN)")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["auto", "cpu", "gpu", "gpu-sim"],
                   help="compute backend (default cpu; auto: the GPU when there is one; "
                   "gpu-sim: the GPU path simulated on the CPU, slow, for tests)")


def _add_lists(p: argparse.ArgumentParser, greedy: bool = True) -> None:
    help_text = (f"hash lists (default: the embedded demo list), each {cfg.SPEC_FORMS}; "
                 "KIND block or allow (default: allow for the NSRL formats, block for the "
                 "others), FORMAT auto (default) or a list format")
    if greedy:
        p.add_argument("--lists", nargs="+", action="extend", metavar="SPEC", help=help_text)
    else:
        # Positional arguments follow, so each --lists takes one SPEC (repeat
        # the flag for more).
        p.add_argument("--lists", action="append", metavar="SPEC",
                       help=help_text + "; repeat the flag for several lists")
    p.add_argument("--pdq-threshold", type=int, help="PDQ match distance (default 31)")
    p.add_argument("--pdq-quality-min", type=int, help="skip PDQ below this quality (default 50)")
    p.add_argument("--dihedral", action="store_true", default=None,
                   help="match all 8 rotations/flips of PDQ, so turned or mirrored copies match")


def _add_serve(p: argparse.ArgumentParser) -> None:
    """The options of serve (and of doctor, which checks them)."""
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--metrics-port", type=int)
    _add_backend(p)
    p.add_argument("--workers", type=int, help="hashing threads (default: one per core)")
    p.add_argument("--audit-log", help="append every match to this JSON-lines file")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="text (default) or one JSON object per line")
    p.add_argument("--log-requests", action="store_true", default=None,
                   help="log every RPC (request id, method, code, seconds), not only failures")
    p.add_argument("--grace-seconds", type=float,
                   help="on SIGTERM, time given to accepted requests (default 10)")
    t = p.add_argument_group("security (see README: Who may ask what)")
    t.add_argument("--tls-cert", dest="tls_server_cert", metavar="FILE",
                   help="the server's certificate (PEM): TLS on the gRPC port")
    t.add_argument("--tls-key", dest="tls_server_key", metavar="FILE",
                   help="its private key (PEM)")
    t.add_argument("--tls-client-ca", metavar="FILE",
                   help="CA of client certificates: mutual TLS, certificates required")
    t.add_argument("--identities", metavar="FILE",
                   help="identities (TOML): tokens, scopes, rate limits; without: open mode")
    t.add_argument("--allow-insecure", action="store_true", default=None,
                   help="serve plaintext on a non-loopback address (a sidecar terminates TLS)")
    t.add_argument("--metrics-tls", action="store_true", default=None,
                   help="serve the metrics port over TLS with the same certificate")
    g = p.add_argument_group("batching (see README: Serving at scale)")
    g.add_argument("--max-batch-items", type=int,
                   help="files per batch (default 0: one per worker on cpu, 256 on gpu; "
                   "1 turns batching off)")
    g.add_argument("--max-batch-bytes", type=int, help="bytes per batch (default 64 MiB)")
    g.add_argument("--max-delay-ms", type=float,
                   help="longest wait for a batch to fill, from its first file (default 2)")
    g.add_argument("--max-queue-items", type=int,
                   help="files queued at most; beyond, RESOURCE_EXHAUSTED (default 4096)")
    g.add_argument("--max-queue-bytes", type=int,
                   help="bytes queued at most; beyond, RESOURCE_EXHAUSTED (default 1 GiB)")
    g.add_argument("--max-queue-wait-ms", type=float,
                   help="shed new requests while the oldest queued file has waited longer "
                   "(default 500; 0: never)")
    g.add_argument("--max-inflight-bytes", type=int,
                   help="bytes of files held at once, queued, running or arriving in "
                   "streams (default 512 MiB; 0: no bound beyond the queue's)")
    g.add_argument("--max-concurrent-batches", type=int,
                   help="batches processed at once (default 0: 2)")
    _add_hashing(p)
    _add_lists(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="Hash files and match them against known-content lists."
    )
    parser.add_argument("--config", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    _add_serve(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("doctor", help="check what serve would do (configuration, backend, "
                       "TLS, ports, lists, kernels, decode workers) without serving")
    _add_serve(p)
    p.set_defaults(func=cmd_doctor)

    signals_help = (
        "comma-separated, of md5,sha1,sha256,pdq,phash,dhash,ahash,whash "
        "(default: md5,sha1,sha256,pdq)"
    )
    p = sub.add_parser("hash", help="print the hashes of files")
    p.add_argument("--signals", help=signals_help)
    _add_hashing(p)
    p.add_argument("--dihedral", action="store_true", default=None,
                   help="also print PDQ's 7 other rotations/flips (pdq_variants)")
    p.add_argument("--server", metavar="HOST:PORT", help="ask a running server instead")
    _add_client(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    _add_backend(p)
    p.set_defaults(func=lambda a: cmd_hash_or_match(a, match=False))

    p = sub.add_parser("match", help="hash files and match them against lists")
    p.add_argument("--signals", help=signals_help)
    _add_hashing(p)
    p.add_argument("--server", metavar="HOST:PORT", help="ask a running server instead")
    _add_client(p)
    _add_lists(p, greedy=False)
    p.add_argument("files", nargs="+", metavar="FILE")
    _add_backend(p)
    p.set_defaults(func=lambda a: cmd_hash_or_match(a, match=True))

    p = sub.add_parser("scan", help="hash and match every file under a directory")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", help="write JSON lines here (default: standard output)")
    p.add_argument("--signals", help=signals_help)
    p.add_argument("--workers", type=int, help="threads (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", action="store_true",
                   help="also print the summary as one JSON line on standard error")
    _add_hashing(p)
    _add_lists(p, greedy=False)  # DIR is positional: a greedy --lists would swallow it
    _add_backend(p)
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("lists", help="compile and inspect list snapshots")
    lists_sub = p.add_subparsers(dest="lists_command", metavar="{compile,inspect}",
                                 required=True)
    q = lists_sub.add_parser(
        "compile", help="parse lists and build their indexes into one snapshot file that "
                        "`serve --lists FILE` maps at once")
    q.add_argument("specs", nargs="*", metavar="SPEC",
                   help=f"lists to compile (default: the [[lists]] of --config), each "
                   f"{cfg.SPEC_FORMS}; KIND block or allow (default: allow for the NSRL "
                   "formats, block for the others), FORMAT auto (default) or a list format")
    q.add_argument("-o", "--out", required=True, metavar="FILE")
    q.set_defaults(func=cmd_lists_compile)
    q = lists_sub.add_parser("inspect", help="lists, versions and counts of a snapshot file")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--verify", action="store_true", help="also check every array's checksum")
    q.set_defaults(func=cmd_lists_inspect)

    p = sub.add_parser("audit", help="check the audit log")
    audit_sub = p.add_subparsers(dest="audit_command", metavar="{verify}", required=True)
    q = audit_sub.add_parser(
        "verify", help="check the hash chain of audit log files: exit 0 when it holds, "
                       "1 at the first bad record")
    q.add_argument("files", nargs="+", metavar="FILE",
                   help="oldest first: the rotated files, then the current one")
    q.set_defaults(func=cmd_audit_verify)

    p = sub.add_parser("demo", help="write the demo images and their list")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_demo)
    for command in _commands(parser):
        # `appliance serve --config F` as well as `appliance --config F serve`; SUPPRESS
        # so that a subcommand without it keeps the value given before it.
        command.add_argument("--config", default=argparse.SUPPRESS,
                             help="TOML configuration file")
        command.set_defaults(parser=command)
    return parser


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run a command (leaves of the subcommand tree)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for child in subs[0].choices.values():
        yield from _commands(child)


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
