"""How clients reach several replicas: round robin and retries, in gRPC's own resolver.

gRPC over HTTP/2 keeps one connection per channel, so behind a plain
Kubernetes Service every call of a client lands on the one pod its
connection reached. A client that resolves every replica itself and spreads
its calls over them does not: ``target`` turns ``HOST:PORT`` into a
``dns:///`` target (a headless Service's name resolves to every pod) and
keeps gRPC's own ``ipv4:``/``ipv6:`` address lists and ``dns:``/``unix:``
targets as given; ``OPTIONS`` selects ``round_robin`` over the resolved
addresses and retries a call that fails UNAVAILABLE (a replica stopping, or
not serving yet) or RESOURCE_EXHAUSTED (a replica shedding load), with
exponential back-off, on another replica. gRPC retries a call only while
it has not had an answer and its request fits the retry buffer (256 KiB by
default): a large MatchStream that fails midway is the caller's to resend.
"""

from __future__ import annotations

import json

SERVICE = "appliance.v1.Appliance"
RETRIED = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": SERVICE}, {"service": "grpc.health.v1.Health"}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2.0,
            "retryableStatusCodes": list(RETRIED),
        },
    }],
}

OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
]
"""Channel options: round robin, the retry policy, retries enabled."""

_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def target(address: str) -> str:
    """The gRPC target of ``address``: ``HOST:PORT`` as ``dns:///HOST:PORT``;
    a target with a resolver scheme (``ipv4:10.0.0.1:50051,10.0.0.2:50051``,
    ``dns:///appliance.ns.svc:50051``, ``unix:...``) as it is."""
    text = address.strip()
    return text if text.startswith(_SCHEMES) else f"dns:///{text}"
