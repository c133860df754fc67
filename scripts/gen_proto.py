"""Regenerates the committed protocol modules from proto/shoumi/v1/*.proto.

Pinned generators (see pyproject's test extra): grpcio-tools for *_pb2.py and *_pb2_grpc.py,
mypy-protobuf for the *.pyi stubs. Run: python scripts/gen_proto.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent / "proto"


def generate(out_dir: Path) -> None:
    """Writes the generated modules for every .proto file under proto/ into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "shoumi").rglob("*.proto"))
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside this interpreter
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
