"""The ``appliance`` command line: its subcommands and their options.

A flag that sets a configuration key is not declared here: its spelling,
type, help and default come from the key's field (appliance.settings.setting);
this module only says which command has which of them, in what order
(``add_settings``), and maps the parsed flags back onto the keys
(``setting_overrides``). Options that are not settings (``--lists``,
``--config``, ``--server`` and the client's, the commands' own) are declared
here by hand.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from appliance.listspec import SPEC_FORMS
from appliance.settings import Setting, settings
from appliance.signals import COMPUTABLE_SIGNALS, DEFAULT_SIGNALS
from appliance.signals import options as signal_options

Command = Callable[[argparse.Namespace], int]
_Adder = argparse.ArgumentParser | argparse._ArgumentGroup



def _signal_flags(section: str) -> tuple[str, ...]:
    """The keys of the signal types' options of ``section`` that have a flag
    (PDQ's --pdq-mode, --pdq-threshold, ...), in registry order."""
    return tuple(f"{section}.{s.field(o.key)}" for s, o in signal_options(section) if o.flag)


# The settings each kind of command has as flags, in their help's order.
HASHING_FLAGS = (*_signal_flags("hashing"), "hashing.exif_orientation", "limits.decode_isolation")
MATCHING_FLAGS = _signal_flags("matching")
SERVER_HELP = ("ask a running server instead (or its replicas: a name resolving to each, or "
               "ipv4:A:P,B:P; round robin, retried on UNAVAILABLE and RESOURCE_EXHAUSTED)")
SERVER_FLAGS = ("server.host", "server.port", "server.metrics_port", "server.health_port",
                "server.backend",
                "server.workers", "server.audit_log", "server.log_format",
                "server.log_requests", "server.grace_seconds")
SECURITY_FLAGS = ("security.tls_cert", "security.tls_key", "security.tls_client_ca",
                  "security.identities_file", "security.allow_insecure",
                  "security.metrics_tls")
BATCHING_FLAGS = ("batching.max_batch_items", "batching.max_batch_bytes",
                  "batching.max_delay_ms", "batching.max_queue_items",
                  "batching.max_queue_bytes", "batching.max_queue_wait_ms",
                  "batching.max_inflight_bytes", "batching.max_concurrent_batches")


def add_setting(p: _Adder, key: str, help: str | None = None) -> argparse.Action:
    """The flag of the setting ``key`` (``help`` instead of its own, for a command
    where the flag reads differently). Unset, the flag leaves the value to the
    file, the environment or the default (argparse's default is None)."""
    s = settings()[key]
    if s.flag is None:
        raise ValueError(f"{key} has no flag")
    kwargs: dict[str, Any] = {"dest": s.dest, "help": s.help_text(help)}
    if s.metavar:
        kwargs["metavar"] = s.metavar
    if s.type is bool:
        kwargs.update(action="store_true", default=None)
    elif s.choices is not None:
        kwargs["choices"] = list(s.choices)
    elif s.type in (int, float):
        kwargs["type"] = s.type
    return p.add_argument(s.flag, **kwargs)


def add_settings(p: _Adder, keys: tuple[str, ...]) -> None:
    for key in keys:
        add_setting(p, key)


def setting_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """section -> key -> value of every setting's flag that was given."""
    out: dict[str, dict[str, Any]] = {}
    for s in settings().values():
        value = getattr(args, s.dest, None) if s.flag else None
        if value is not None:
            out.setdefault(s.section, {})[s.name] = value
    return out


def flagged() -> list[Setting]:
    """The settings that have a flag."""
    return [s for s in settings().values() if s.flag]


def _add_client(p: argparse.ArgumentParser) -> None:
    """How --server is reached: TLS, a client certificate, a token."""
    g = p.add_argument_group("with --server")
    g.add_argument("--tls-ca", metavar="FILE",
                   help="TLS, trusting this CA for the server's certificate")
    g.add_argument("--tls-cert", metavar="FILE", help="this client's certificate (mutual TLS)")
    g.add_argument("--tls-key", metavar="FILE", help="its private key")
    g.add_argument("--token", help="bearer token (default: $APPLIANCE_TOKEN)")


def _add_lists(p: argparse.ArgumentParser, greedy: bool = True) -> None:
    help_text = (f"hash lists (default: the embedded demo list), each {SPEC_FORMS}; "
                 "KIND block or allow (default: allow for the NSRL formats, block for the "
                 "others), FORMAT auto (default) or a list format")
    if greedy:
        p.add_argument("--lists", nargs="+", action="extend", metavar="SPEC", help=help_text)
    else:
        # Positional arguments follow, so each --lists takes one SPEC (repeat
        # the flag for more).
        p.add_argument("--lists", action="append", metavar="SPEC",
                       help=help_text + "; repeat the flag for several lists")
    add_settings(p, MATCHING_FLAGS)


def _add_serve(p: argparse.ArgumentParser) -> None:
    """The options of serve (and of doctor, which checks them)."""
    add_settings(p, SERVER_FLAGS)
    add_settings(p.add_argument_group("security (see README: Who may ask what)"),
                 SECURITY_FLAGS)
    add_settings(p.add_argument_group("batching (see README: Serving at scale)"),
                 BATCHING_FLAGS)
    add_settings(p, HASHING_FLAGS)
    _add_lists(p)


def build_parser(run: Mapping[str, Command]) -> argparse.ArgumentParser:
    """The parser; ``run`` maps each command ("serve", "lists compile", ...) to
    the function that runs it, set as the parsed arguments' ``func``."""
    parser = argparse.ArgumentParser(
        prog="appliance", description="Hash files and match them against known-content lists."
    )
    parser.add_argument("--config", help="TOML configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the gRPC server")
    _add_serve(p)
    p.set_defaults(func=run["serve"])

    p = sub.add_parser("doctor", help="check what serve would do (configuration, backend, "
                       "TLS, ports, lists, kernels, decode workers) without serving")
    _add_serve(p)
    p.set_defaults(func=run["doctor"])

    signals_help = (f"comma-separated, of {','.join(COMPUTABLE_SIGNALS)} "
                    f"(default: {','.join(DEFAULT_SIGNALS)})")
    p = sub.add_parser("hash", help="print the hashes of files")
    p.add_argument("--signals", help=signals_help)
    add_settings(p, HASHING_FLAGS)
    add_setting(p, "matching.pdq_dihedral",
                help="also print PDQ's 7 other rotations/flips (pdq_variants)")
    p.add_argument("--server", metavar="HOST:PORT", help=SERVER_HELP)
    _add_client(p)
    p.add_argument("files", nargs="+", metavar="FILE")
    add_setting(p, "server.backend")
    p.set_defaults(func=run["hash"])

    p = sub.add_parser("match", help="hash files and match them against lists")
    p.add_argument("--signals", help=signals_help)
    add_settings(p, HASHING_FLAGS)
    p.add_argument("--server", metavar="HOST:PORT", help=SERVER_HELP)
    _add_client(p)
    _add_lists(p, greedy=False)
    p.add_argument("files", nargs="+", metavar="FILE")
    add_setting(p, "server.backend")
    p.set_defaults(func=run["match"])

    p = sub.add_parser("scan", help="hash and match every file under a directory")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--out", help="write JSON lines here (default: standard output)")
    p.add_argument("--signals", help=signals_help)
    add_setting(p, "server.workers", help="threads (default {default}: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", action="store_true",
                   help="also print the summary as one JSON line on standard error")
    add_settings(p, HASHING_FLAGS)
    _add_lists(p, greedy=False)  # DIR is positional: a greedy --lists would swallow it
    add_setting(p, "server.backend")
    p.set_defaults(func=run["scan"])

    _add_bulk(sub, run, signals_help)

    p = sub.add_parser("lists", help="compile and inspect list snapshots")
    lists_sub = p.add_subparsers(dest="lists_command", metavar="{compile,inspect}",
                                 required=True)
    q = lists_sub.add_parser(
        "compile", help="parse lists and build their indexes into one snapshot file that "
                        "`serve --lists FILE` maps at once")
    q.add_argument("specs", nargs="*", metavar="SPEC",
                   help=f"lists to compile (default: the [[lists]] of --config), each "
                   f"{SPEC_FORMS}; KIND block or allow (default: allow for the NSRL "
                   "formats, block for the others), FORMAT auto (default) or a list format")
    q.add_argument("-o", "--out", required=True, metavar="FILE")
    q.set_defaults(func=run["lists compile"])
    q = lists_sub.add_parser("inspect", help="lists, versions and counts of a snapshot file")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--verify", action="store_true", help="also check every array's checksum")
    q.set_defaults(func=run["lists inspect"])

    p = sub.add_parser("audit", help="check the audit log")
    audit_sub = p.add_subparsers(dest="audit_command", metavar="{verify}", required=True)
    q = audit_sub.add_parser(
        "verify", help="check the hash chain of audit log files: exit 0 when it holds, "
                       "1 at the first bad record")
    q.add_argument("files", nargs="+", metavar="FILE",
                   help="oldest first: the rotated files, then the current one")
    q.set_defaults(func=run["audit verify"])

    p = sub.add_parser("demo", help="write the demo images and their list")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=run["demo"])
    for command in _commands(parser):
        # `appliance serve --config F` as well as `appliance --config F serve`; SUPPRESS
        # so that a subcommand without it keeps the value given before it.
        command.add_argument("--config", default=argparse.SUPPRESS,
                             help="TOML configuration file")
        command.set_defaults(parser=command)
    return parser


def _add_engine(p: argparse.ArgumentParser) -> None:
    """How a bulk command runs on Ray, and what it shows."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="write Parquet here (part-00000.parquet, ...); a local directory, new "
                   "or without parts, or an object-store URI")
    g = p.add_argument_group("Ray")
    g.add_argument("--ray-address", metavar="ADDR",
                   help="the Ray cluster to run on (default: a local Ray started for the run)")
    g.add_argument("--actors", type=int, default=0, metavar="N",
                   help="worker actors (default: one per GPU on the GPU backend, else the "
                   "cluster's CPUs / --threads)")
    g.add_argument("--threads", type=int, default=0, metavar="N",
                   help="hashing threads (CPUs) per actor (default 2, or CPUs / --actors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", action="store_true",
                   help="also print the summary as one JSON line on standard error")
    add_setting(p, "server.backend")


def _add_bulk(sub: Any, run: Mapping[str, Command], signals_help: str) -> None:
    p = sub.add_parser("bulk", help="scan stored files, or rematch stored hashes, on Ray Data")
    bulk = p.add_subparsers(dest="bulk_command", metavar="{scan,rematch}", required=True)
    q = bulk.add_parser(
        "scan", help="hash and match every file of a directory tree, a text file of paths, or "
                     "an object-store prefix, into Parquet (one row per file)")
    q.add_argument("source", metavar="SOURCE",
                   help="a directory, a text file of paths (one per line), or a URI "
                   "(s3://bucket/prefix, ...) of either")
    q.add_argument("--signals", help=signals_help)
    add_settings(q, HASHING_FLAGS)
    _add_lists(q, greedy=False)
    _add_engine(q)
    q.set_defaults(func=run["bulk scan"])
    q = bulk.add_parser(
        "rematch", help="match stored hash records (id plus signal columns in hex) against "
                        "the lists, or only what they added since an older snapshot, into "
                        "Parquet (one row per hit)")
    q.add_argument("hashes", metavar="HASHES",
                   help="Parquet (a file or a directory of files) or CSV (*.csv) of records: "
                   "id, then signal columns (md5, pdq, ...) and optionally pdq_quality")
    _add_lists(q, greedy=False)
    q.add_argument("--only-new-since", action="append", metavar="SNAPSHOT",
                   help="match only the values that the lists gained since this older "
                   "snapshot (a compiled snapshot or list SPEC; repeat for several)")
    _add_engine(q)
    q.set_defaults(func=run["bulk rematch"])


def _commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """The parsers that run a command (leaves of the subcommand tree)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for child in subs[0].choices.values():
        yield from _commands(child)
