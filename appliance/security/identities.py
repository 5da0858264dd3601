"""Who may ask what: identities from a file, and how a request proves which it is.

The identities file (TOML, ``security.identities_file``, reloaded on SIGHUP)
has one ``[[identity]]`` table per caller:

    [[identity]]
    name = "uploads"                   # in logs, audit records and metric labels
    token_sha256 = "9f86d08...0f00a08" # hex SHA-256 of its bearer token (never the token)
    client_subject = "CN=uploads,O=Example"  # and/or its client certificate's subject
    scopes = ["hash", "match"]         # of hash, match, lookup, status, admin
    files_per_second = 200             # rate limits; absent: none
    lookups_per_second = 5000          # Lookup hashes per second
    burst = 2.0                        # seconds' worth of each rate spent at once (default 1)
    reveal = "protected"               # or "full": exact distances (trusted callers only)

A request names its identity with ``authorization: Bearer TOKEN`` metadata
or, on a mutual-TLS port, with its certificate. Without an identities file
the server is in open mode: everyone is ``anonymous``, with every scope, full
answers and no rate limit (development, and meshes that authenticate callers
themselves).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from appliance.errors import ConfigError, Unauthenticated

SCOPES = ("hash", "match", "lookup", "status", "admin")
Reveal = Literal["full", "protected"]
# Names become metric label values and log fields: a small, plain alphabet.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "token_sha256", "client_subject", "scopes", "files_per_second",
         "lookups_per_second", "burst", "reveal"}


@dataclass(frozen=True)
class Identity:
    name: str
    scopes: frozenset[str]
    token_sha256: str = ""
    client_subject: str = ""
    files_per_second: float | None = None
    lookups_per_second: float | None = None
    # Seconds' worth of each rate that may be spent at once.
    burst: float = 1.0
    reveal: Reveal = "protected"

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Identity("anonymous", frozenset(SCOPES), reveal="full")
"""Everyone, in open mode."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _rate(table: Mapping[str, Any], key: str, where: str) -> float | None:
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


def _identity(table: Any, where: str) -> Identity:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: an [[identity]] must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == ANONYMOUS.name:
        raise ConfigError(f"{where}: name must be 1-64 of A-Z a-z 0-9 . _ - (not "
                          f"'anonymous'), got {name!r}")
    where = f"{where} ({name})"
    token = str(table.get("token_sha256", "")).strip().lower()
    subject = str(table.get("client_subject", "")).strip()
    if token and not _HEX64.fullmatch(token):
        raise ConfigError(f"{where}: token_sha256 must be 64 hex digits (the SHA-256 of the "
                          "token, e.g. `printf %s TOKEN | sha256sum`)")
    if not token and not subject:
        raise ConfigError(f"{where}: needs token_sha256 or client_subject to authenticate")
    scopes = table.get("scopes")
    if not isinstance(scopes, list) or not scopes or not set(scopes) <= set(SCOPES):
        raise ConfigError(f"{where}: scopes must be a non-empty list of {list(SCOPES)}, "
                          f"got {scopes!r}")
    reveal = table.get("reveal", "protected")
    if reveal not in ("full", "protected"):
        raise ConfigError(f"{where}: reveal must be 'full' or 'protected', got {reveal!r}")
    burst = _rate(table, "burst", where) or 1.0
    return Identity(name, frozenset(scopes), token, subject,
                    _rate(table, "files_per_second", where),
                    _rate(table, "lookups_per_second", where), burst, reveal)


class Identities:
    """The identities of a file (or open mode), and authentication against them."""

    def __init__(self, identities: Sequence[Identity], source: str = "") -> None:
        self.source = source
        self.all = tuple(identities)
        self.by_name = {i.name: i for i in identities}
        self._by_token = {i.token_sha256: i for i in identities if i.token_sha256}
        self._by_subject = {i.client_subject: i for i in identities if i.client_subject}

    @property
    def open_mode(self) -> bool:
        return not self.source

    @classmethod
    def open(cls) -> Identities:
        return cls([ANONYMOUS])

    @classmethod
    def load(cls, path: str) -> Identities:
        """The identities of the TOML file at ``path``; ConfigError naming what is wrong."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"identities file {path}: {exc}") from exc
        unknown = set(data) - {"identity"}
        if unknown:
            raise ConfigError(f"identities file {path}: unknown sections {sorted(unknown)}")
        tables = data.get("identity", [])
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"identities file {path}: no [[identity]] tables")
        identities = [_identity(t, f"{path} identity {n + 1}") for n, t in enumerate(tables)]
        _unique(path, "name", [i.name for i in identities])
        _unique(path, "token_sha256", [i.token_sha256 for i in identities if i.token_sha256])
        _unique(path, "client_subject", [i.client_subject for i in identities
                                         if i.client_subject])
        return cls(identities, path)

    def authenticate(self, metadata: Iterable[tuple[str, Any]],
                     auth_context: Mapping[str, Sequence[bytes]]) -> Identity:
        """The caller's identity, or Unauthenticated: a bearer token wins over a
        client certificate; in open mode everyone is ``anonymous``."""
        if self.open_mode:
            return ANONYMOUS
        token = _bearer(metadata)
        if token is not None:
            found = self._by_token.get(token_digest(token))
            if found is None:
                raise Unauthenticated("the bearer token names no identity")
            return found
        subjects = auth_context.get("x509_subject") or ()
        for raw in subjects:
            found = self._by_subject.get(raw.decode(errors="replace"))
            if found is not None:
                return found
        if subjects:
            raise Unauthenticated("the client certificate's subject names no identity")
        raise Unauthenticated("no credentials: send 'authorization: Bearer TOKEN' metadata "
                              "or a client certificate")


def _bearer(metadata: Iterable[tuple[str, Any]]) -> str | None:
    for key, value in metadata:
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization metadata must be 'Bearer TOKEN'")
            return token.strip()
    return None


def _unique(path: str, what: str, values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ConfigError(f"identities file {path}: two identities share a {what}")
        seen.add(value)
