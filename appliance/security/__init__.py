"""Who may ask what, and what the answers reveal: TLS, identities and scopes,
rate limits, protected answers (see each module).

``Security`` holds one server's state of all of it: the identities (or open
mode), their rate buckets, the probe guard, the TLS certificates; ``reload``
re-reads the identities and certificates (SIGHUP).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from appliance.config import SecurityConfig
from appliance.security.identities import ANONYMOUS, SCOPES, Identities, Identity
from appliance.security.rates import RateLimits
from appliance.security.secrecy import ProbeGuard, redact
from appliance.security.tls import Certificates, TlsFiles

log = logging.getLogger("appliance.security")

# The scope each RPC needs.
METHOD_SCOPE = {
    "Hash": "hash", "Match": "match", "MatchBatch": "match", "MatchStream": "match",
    "Lookup": "lookup", "GetStatus": "status", "ReloadLists": "admin",
}


@dataclass
class Security:
    config: SecurityConfig
    identities: Identities
    guard: ProbeGuard
    certificates: Certificates | None = None
    rates: RateLimits = field(default_factory=RateLimits)

    @classmethod
    def make(cls, config: SecurityConfig, guard: ProbeGuard) -> Security:
        identities = (Identities.load(config.identities_file) if config.identities_file
                      else Identities.open())
        certificates = (Certificates(TlsFiles(config.tls_cert, config.tls_key,
                                              config.tls_client_ca))
                        if config.tls_cert else None)
        return cls(config, identities, guard, certificates)

    def authenticate(self, context: Any) -> Identity:
        return self.identities.authenticate(context.invocation_metadata() or (),
                                            context.auth_context() or {})

    def reload(self) -> list[str]:
        """Re-read the identities and the certificates; what failed (the old kept)."""
        failed = []
        if self.config.identities_file:
            try:
                self.identities = Identities.load(self.config.identities_file)
                self.guard.clear()  # an operator's reload also lifts suspensions
                log.info("identities reloaded from %s: %d", self.config.identities_file,
                         len(self.identities.all))
            except Exception as exc:
                failed.append(str(exc))
                log.error("identities not reloaded, the old ones serve: %s", exc)
        if self.certificates is not None:
            try:
                self.certificates.reload()
            except Exception as exc:
                failed.append(str(exc))
                log.error("TLS certificates not reloaded, the old ones serve: %s", exc)
        return failed

    def describe(self) -> str:
        """For the ready line."""
        if self.certificates is None:
            tls = "off" + (" (security.allow_insecure)" if self.config.allow_insecure else "")
        else:
            tls = "mutual" if self.certificates.files.mutual else "on"
        who = ("open mode (no identities file: everyone is anonymous, every scope, full "
               "answers)" if self.identities.open_mode
               else f"{len(self.identities.all)} from {self.identities.source}")
        return f"tls={tls} identities={who}"


__all__ = ["ANONYMOUS", "METHOD_SCOPE", "SCOPES", "Identities", "Identity", "ProbeGuard",
           "RateLimits", "Security", "redact"]
