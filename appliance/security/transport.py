"""What the gRPC server checks of its transport and callers before any servicer runs.

Plaintext is served on loopback only, unless the configuration says a sidecar
terminates TLS (``check_transport``, also run by ``appliance doctor``); the
reflection service lists the API, so only admin identities may call it
(``AdminOnly``).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import grpc

from appliance.config import Config
from appliance.errors import ConfigError, RequestFault
from appliance.security import Security

# The method prefix of the reflection service, which AdminOnly guards.
REFLECTION = "/grpc.reflection."


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_transport(config: Config, security: Security) -> None:
    """Plaintext only on loopback, unless the configuration says a sidecar does TLS."""
    host = config.server.host
    if security.certificates is None and not config.security.allow_insecure \
            and not _loopback(host):
        raise ConfigError(
            f"serving on {host} without TLS: give security.tls_cert and tls_key "
            "(--tls-cert, --tls-key), or set security.allow_insecure = true when a sidecar "
            "or mesh terminates TLS in front of the appliance")


class AdminOnly(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Methods under ``prefix`` (reflection) for identities with the admin scope."""

    def __init__(self, security: Security, prefix: str) -> None:
        self._security = security
        self._prefix = prefix

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix) \
                or handler.stream_stream is None:
            return handler
        inner, security = handler.stream_stream, self._security

        async def guarded(requests: Any, context: Any) -> Any:
            try:
                identity = security.authenticate(context)
            except RequestFault as fault:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(fault))
            if not identity.allows("admin"):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"reflection is for admin identities; {identity.name!r} "
                                    "is not one")
            async for response in inner(requests, context):
                yield response

        return grpc.stream_stream_rpc_method_handler(
            guarded, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
