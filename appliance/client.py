"""A small client of a running server, for ``appliance hash|match --server``.

Files of up to 4 MiB go in one Hash/Match call; larger ones are streamed in
chunks through MatchStream, so a client never needs a raised message limit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from appliance.balancing import OPTIONS, target
from appliance.convert import result_json
from appliance.errors import ItemCode
from appliance.v1 import appliance_pb2 as pb
from appliance.v1 import appliance_pb2_grpc as pb_grpc

CHUNK = 1 << 20
SINGLE_CALL_LIMIT = 4 << 20


def _chunks(path: Path, name: str, signals: Sequence[str]) -> Iterator[pb.Chunk]:
    with path.open("rb") as f:
        first = True
        while True:
            data = f.read(CHUNK)
            if not data and not first:
                return
            yield pb.Chunk(id=name, signals=list(signals) if first else [], data=data)
            first = False


@dataclass(frozen=True)
class ClientAuth:
    """How the client reaches the server: TLS (with ``ca``, or a client
    certificate), and a bearer token. All empty: plaintext, anonymous."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    token: str = ""

    def channel(self, address: str) -> grpc.Channel:
        """A channel to every replica ``address`` resolves to, round robin, with
        retries (appliance.balancing)."""
        where = target(address)
        if not (self.ca or self.cert or self.key):
            return grpc.insecure_channel(where, options=OPTIONS)
        from appliance.security.tls import client_credentials

        return grpc.secure_channel(where, client_credentials(self.ca, self.cert, self.key),
                                   options=OPTIONS)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def match_files(address: str, files: Sequence[str], signals: Sequence[str], match: bool,
                auth: ClientAuth | None = None) -> int:
    failed = False
    auth = auth or ClientAuth()
    metadata = auth.metadata
    with auth.channel(address) as channel:
        stub = pb_grpc.ApplianceStub(channel)
        for name in files:
            path = Path(name)
            try:
                if match and path.stat().st_size > SINGLE_CALL_LIMIT:
                    response = stub.MatchStream(_chunks(path, name, signals), metadata=metadata)
                else:
                    request = pb.FileRequest(
                        id=name, content=path.read_bytes(), signals=list(signals)
                    )
                    response = (stub.Match if match else stub.Hash)(request, metadata=metadata)
            except OSError as exc:
                failed = True
                obj: dict[str, Any] = {
                    "file": name, "error": {"code": ItemCode.UNREADABLE, "message": str(exc)}
                }
            except grpc.RpcError as exc:
                print(f"appliance: {address}: {exc.code().name}: {exc.details()}",
                      file=sys.stderr)
                return 2
            else:
                failed |= response.result.HasField("error")
                obj = result_json(name, response.result, match)
            print(json.dumps(obj, separators=(",", ":")), flush=True)
    return 1 if failed else 0
