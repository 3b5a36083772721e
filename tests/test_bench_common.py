"""The benchmarks' shared output helper (``benchmarks/_common.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _common():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import _common

    return _common


def test_out_may_name_a_file_or_an_existing_folder(tmp_path: Path):
    common = _common()
    as_file = common.write_json("bench_x", {"a": 1}, tmp_path / "chosen.json")
    assert as_file == tmp_path / "chosen.json" and json.loads(as_file.read_text()) == {"a": 1}
    # A folder gets the benchmark's default name inside it (it used to fail in the final rename).
    in_folder = common.write_json("bench_x", {"b": 2}, tmp_path)
    assert in_folder == tmp_path / "bench_x.json" and json.loads(in_folder.read_text()) == {"b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench_x.json", "chosen.json"]
