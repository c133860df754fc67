"""What docs/agent-platforms.md says runs unchanged on Windows and macOS: checked, not assumed."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

from agent.core.events import FileEvent
from agent.sources.fanotify import FanotifyEventMapper, FanotifyRecord

ROOT = Path(__file__).resolve().parents[2]

PORTABLE = [
    "agent.core.events", "agent.core.fingerprint", "agent.core.index", "agent.snapshot", "agent.spool",
    "agent.recorder", "agent.transport", "agent.wire", "agent.policy", "agent.content_watch",
]
LINUX_ONLY = ["fcntl", "pwd", "grp", "termios", "resource", "agent.sources.fanotify",
              "agent.sources.watchdog_source", "watchdog.observers.inotify"]


def test_the_portable_modules_import_nothing_linux_only() -> None:
    script = f"""
import importlib.abc, sys
BLOCKED = {LINUX_ONLY!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED:
            raise ImportError(f"{{name}} does not exist on Windows or macOS")
        return None
for name in BLOCKED:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Block())
import importlib
for module in {PORTABLE!r}:
    importlib.import_module(module)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{ROOT}:{ROOT / 'proto'}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_core_does_no_io() -> None:
    io_modules = {"os", "io", "socket", "sqlite3", "subprocess", "threading", "select", "ctypes", "pathlib",
                  "shutil", "tempfile", "grpc", "watchdog", "psutil"}
    for source in (ROOT / "agent" / "core").glob("*.py"):
        tree = ast.parse(source.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & io_modules, (source.name, imported & io_modules)
        assert "open(" not in source.read_text().replace("_open(", ""), source.name


def test_a_record_from_any_platform_maps_to_the_same_events() -> None:
    """An ETW or Endpoint Security adapter hands records of this shape; the mapper does the rest."""
    mapper = FanotifyEventMapper()
    now = time.time_ns()
    opened = FanotifyRecord("C:\\Finance\\q3.xlsx", "open", 4242, 1001, "CORP\\ana", "EXCEL.EXE",
                            "C:\\Program Files\\Microsoft Office\\EXCEL.EXE", now)
    closed = FanotifyRecord("C:\\Finance\\q3.xlsx", "close_nowrite", 4242, 1001, "CORP\\ana", "EXCEL.EXE",
                            opened.exe, now + 2_000_000)
    assert mapper.map(opened) is None
    read = mapper.map(closed)
    assert isinstance(read, FileEvent)
    assert (read.kind, read.path, read.pid, read.user, read.process) == (
        "file.read", "C:\\Finance\\q3.xlsx", 4242, "CORP\\ana", "EXCEL.EXE")
    assert read.attributes["open_ms"] == 2.0
    wrote = mapper.map(FanotifyRecord("/Users/ana/Contracts/nda.pages", "close_write", 77, 501, "ana", "Pages",
                                      "/Applications/Pages.app/Contents/MacOS/Pages", now))
    assert wrote is not None and wrote.kind == "file.write" and wrote.uid == 501
