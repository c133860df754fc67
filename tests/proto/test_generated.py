"""The committed generated modules are exactly what the pinned generator makes of the .proto files."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "the generator produced nothing"
    committed = ROOT / "proto"
    stale = [str(p) for p in generated if not filecmp.cmp(tmp_path / p, committed / p, shallow=False)]
    assert not stale, f"regenerate with 'python scripts/gen_proto.py': {stale}"
    on_disk = {p.relative_to(committed) for p in (committed / "shoumi" / "v1").glob("*_pb2*.py*")}
    assert on_disk == set(generated), "a generated file is committed that the .proto files no longer make"
