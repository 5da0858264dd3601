"""TLS for the gRPC port (server credentials, reloaded on SIGHUP) and for clients.

The server's credentials are grpc's dynamic SSL credentials: gRPC asks for
the certificate configuration at each new connection, and ``Certificates``
answers with a new one once ``reload`` has read new files (and None, "keep
the current one", otherwise). So a renewed certificate is served from the
next connection on, without a restart, and a renewal that cannot be read
(a key that does not fit its certificate, a missing file) is refused at
reload with the old one kept. A client CA makes client certificates required
(mutual TLS); the client certificate's subject can name an identity.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc

from appliance.errors import ConfigError

log = logging.getLogger("appliance.security")


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str
    client_ca: str = ""

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca)


def _read(files: TlsFiles) -> tuple[bytes, bytes, bytes | None]:
    """The PEM contents, checked to be a key and certificate that belong together."""
    try:
        cert, key = Path(files.cert).read_bytes(), Path(files.key).read_bytes()
        ca = Path(files.client_ca).read_bytes() if files.client_ca else None
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read {exc.filename}: {exc.strerror}") from exc
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        check.load_cert_chain(files.cert, files.key)
        if files.client_ca:
            check.load_verify_locations(files.client_ca)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"TLS: {files.cert} and {files.key} (client CA "
                          f"{files.client_ca or 'none'}) do not load: {exc}") from exc
    return cert, key, ca


class Certificates:
    """The server's certificate configuration, swapped in by ``reload``."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        cert, key, ca = _read(files)
        self._initial = grpc.ssl_server_certificate_configuration([(key, cert)], ca)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC takes None from the fetcher as "unchanged"; its stubs say it may not.
        fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], self._fetch)
        return grpc.dynamic_ssl_server_credentials(
            self._initial, fetch, require_client_authentication=self.files.mutual
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC for each new connection, on one of its threads.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def reload(self) -> None:
        """Read the files again; the next connections get them. ConfigError
        (the current ones kept) when they do not load."""
        cert, key, ca = _read(self.files)
        with self._lock:
            self._pending = grpc.ssl_server_certificate_configuration([(key, cert)], ca)
        log.info("TLS certificates reloaded from %s", self.files.cert)


def metrics_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSL context for the metrics port with the gRPC port's certificate;
    ``load_cert_chain`` on it again reloads it for new connections."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    return context


def client_credentials(ca: str = "", cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    """A client's TLS credentials: the CA that signed the server's certificate
    (empty: the system's roots), and its own certificate and key for mutual TLS."""
    try:
        root = Path(ca).read_bytes() if ca else None
        own_cert = Path(cert).read_bytes() if cert else None
        own_key = Path(key).read_bytes() if key else None
    except OSError as exc:
        raise ConfigError(f"TLS: cannot read {exc.filename}: {exc.strerror}") from exc
    if bool(own_cert) != bool(own_key):
        raise ConfigError("TLS: a client certificate needs its key, and a key its certificate")
    return grpc.ssl_channel_credentials(root, own_key, own_cert)
