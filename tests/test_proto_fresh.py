"""The committed appliance/v1 modules are what scripts/gen_proto.py makes now."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    generated = gen_proto.generate(tmp_path)
    assert generated
    for path in generated:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python scripts/gen_proto.py"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.relative_to(ROOT)} is stale: run python scripts/gen_proto.py"
        )


def test_contract_names() -> None:
    from appliance.v1 import appliance_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["Appliance"]
    assert service.full_name == "appliance.v1.Appliance"
    assert set(service.methods_by_name) == {
        "Hash", "Match", "MatchBatch", "MatchStream", "Lookup", "GetStatus", "ReloadLists"
    }
    messages = pb.DESCRIPTOR.message_types_by_name.values()
    fields = {m.name: {f.name for f in m.fields} for m in messages}
    assert {"content", "id", "signals"} <= fields["FileRequest"]
    assert {"files"} <= fields["BatchRequest"]
    assert {"id", "signals", "data"} <= fields["Chunk"]
    assert {"result"} <= fields["FileResponse"]
    assert {"results"} <= fields["BatchResponse"]
    assert {"id", "hashes", "matches", "matched", "error"} <= fields["FileResult"]
    assert {"signal", "value", "quality"} <= fields["Hash"]
    assert {"signal", "list", "list_version", "entry_id", "category", "distance", "query"} <= (
        fields["MatchHit"]
    )
    assert {"code", "message"} <= fields["ItemError"]
    assert {"hashes"} <= fields["LookupRequest"]
    assert {"results"} <= fields["LookupResponse"]
    assert {"query", "matches"} <= fields["LookupResult"]
