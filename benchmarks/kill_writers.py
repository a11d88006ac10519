"""How often a SIGKILL lands inside a write, and whether the target survives it.

Uses the writer of ``tests/robustness/test_faults.py`` (it rewrites one file in a loop) and
kills it ``--kills`` times per kind at varied moments. A leftover temporary sibling means the
kill landed inside a write; the target must load every time.

Usage:
    python benchmarks/kill_writers.py --kills 10
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import synthguard as sg
from synthguard.sources import read_pairs

TESTS = Path(__file__).resolve().parents[1] / "tests" / "robustness" / "test_faults.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("test_faults", TESTS)
    assert spec is not None and spec.loader is not None
    faults = importlib.util.module_from_spec(spec)
    sys.modules["test_faults"] = faults
    spec.loader.exec_module(faults)
    loaders = {
        "shards": ("out.tar", lambda p: len(read_pairs(p)) == 20),
        "reference": ("ref.sgref", lambda p: sg.Reference.load(p).n_support == 3000),
        "monitor": ("log.jsonl", lambda p: sg.CollapseMonitor(p).next_generation >= 1),
    }
    for kind, (name, loads) in loaders.items():
        inside = readable = 0
        for seed in range(args.kills):
            folder = Path(tempfile.mkdtemp())
            faults._kill_while_writing(kind, folder / name, seed)
            inside += any(p.name.endswith(".tmp") for p in folder.iterdir())
            readable += bool(loads(folder / name))
        print(f"{kind}: kill inside a write {inside}/{args.kills}; "
              f"target readable {readable}/{args.kills}")  # fmt: skip


if __name__ == "__main__":
    main()
