"""Regenerate appliance/v1 from proto/ (python scripts/gen_proto.py [OUT_DIR]).

The generated modules are committed; tests/test_proto_fresh.py regenerates
them into a temporary folder and fails when the committed ones differ. The
generator versions are pinned in pyproject.toml's test extra for that reason.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTOS = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Write the generated modules under ``out`` (which mirrors the package root)."""
    from grpc_tools import protoc

    # mypy-protobuf's plugins live beside this interpreter's scripts.
    scripts = Path(sysconfig.get_path("scripts"))
    mypy_plugin = shutil.which("protoc-gen-mypy", path=str(scripts))
    grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=str(scripts))
    if not mypy_plugin or not grpc_plugin:
        raise SystemExit("mypy-protobuf is not installed; install the test extra")
    out.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    stems = [out / proto.removesuffix(".proto") for proto in PROTOS]
    return [
        stem.with_name(stem.name + suffix)
        for stem in stems
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    ]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()
