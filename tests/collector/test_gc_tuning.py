"""The serve process and the detection worker collect cycles after 50,000 net allocations, with what
start-up made frozen (collector/gc_tuning.py). Checked in a fresh interpreter, as the processes are."""

from __future__ import annotations

import json
import subprocess
import sys

from collector import gc_tuning


def test_tune_sets_the_thresholds_and_freezes_what_start_up_made() -> None:
    probe = ("import gc, json; import collector.gc_tuning as t; before = gc.get_threshold(); t.tune(); "
             "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count()]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    before, after, frozen = json.loads(out.stdout)
    assert tuple(before) == (700, 10, 10)  # CPython's defaults: what the processes ran with before
    assert tuple(after) == gc_tuning.THRESHOLDS
    assert frozen > 1000  # the modules' objects and more are out of every collection
