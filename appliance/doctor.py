"""``appliance doctor``: everything ``serve`` would do, checked, without serving.

Each check prints one line, ``ok`` or ``FAIL`` with the reason: the
configuration (file, environment, flags), the backend, TLS and identities,
both ports (bound, then released), the lists (loaded as a start would), the
kernels (compiled, or loaded from numba's cache) and the decode workers.
Exit 0 when every check passed, else 2: what ``serve`` would refuse.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from appliance.config import Config


def _bind(host: str, port: int) -> str:
    """Bind and release host:port as the server would (no SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host.strip("[]"), port))
        return f"{host}:{probe.getsockname()[1]} free"


def _security(config: Config) -> str:
    from appliance.security import ProbeGuard, Security
    from appliance.security.transport import check_transport

    security = Security.make(config.security, ProbeGuard(1, 1, lambda _: 0))
    check_transport(config, security)
    return security.describe()


def _lists(config: Config) -> str:
    from appliance.loading import Catalog
    from appliance.reloader import describe

    return describe(Catalog().load(config))


def _kernels(config: Config) -> str:
    from appliance.warmup import compile_kernels

    return f"ready in {compile_kernels():.1f} s"


def _workers(config: Config) -> str:
    from appliance.backend import make_pipeline, select_backend

    pipeline = make_pipeline(config, select_backend(config.server.backend, config.gpu))
    started = time.perf_counter()
    try:
        pipeline.start()
    finally:
        pipeline.close()
    return f"{config.limits.decode_isolation} decoding, started in " \
           f"{time.perf_counter() - started:.1f} s"


def _backend(config: Config) -> str:
    from appliance.backend import select_backend

    backend = select_backend(config.server.backend, config.gpu)
    return f"{backend.name} on {backend.device} ({backend.reason})"


def run(config: Config, origin: str) -> int:
    """Print one line per check; 0 when all passed, else 2."""
    s = config.server
    checks: list[tuple[str, Callable[[Config], str]]] = [
        ("backend", _backend),
        ("security", _security),
        ("grpc port", lambda c: _bind(s.host, s.port)),
        ("metrics port", lambda c: _bind(s.host, s.metrics_port)),
        *([("health port", lambda c: _bind(s.host, s.health_port))] if s.health_port else []),
        ("lists", _lists),
        ("kernels", _kernels),
        ("decode workers", _workers),
    ]
    print(f"configuration: ok ({origin})")
    failed = 0
    for name, check in checks:
        try:
            print(f"{name}: ok, {check(config)}", flush=True)
        except Exception as exc:  # every failure is one line: what serve would say
            failed += 1
            print(f"{name}: FAIL, {exc}", flush=True)
    print("ready to serve" if not failed else f"{failed} check(s) failed: serve would not start"
          " as configured")
    return 2 if failed else 0
