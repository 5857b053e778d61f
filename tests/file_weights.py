"""How long each test file takes, so the suite can start its longest files first (tests/conftest.py).

``pytest -n N --dist loadfile`` hands whole files to its workers, by default the files with the most tests first
(pytest-xdist's loadscope reorder): a file of three minute-long end-to-end tests then starts last and the run
waits for it alone. Started longest first (the classic longest-processing-time rule) the workers finish nearly
together. ``.ci/run`` passes ``--no-loadscope-reorder`` and writes a JUnit report; refresh the table from one:

    .venv/bin/python tests/file_weights.py test-output/junit.xml > tests/file_weights.json

Files missing from the table (new ones) weigh nothing and run after the weighed ones, in collection order.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

__all__ = ["WEIGHTS_FILE", "file_weights", "weights_from_junit"]

#: Seconds per test file (setup, calls and teardown of its tests), from a JUnit report of the whole suite.
WEIGHTS_FILE = Path(__file__).with_name("file_weights.json")


def file_weights(path: Path = WEIGHTS_FILE) -> dict[str, float]:
    """``{file name: seconds}``; empty when the table is missing or unreadable (the order is only an optimisation)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def weights_from_junit(report: Path) -> dict[str, float]:
    """Seconds per test file in a JUnit report (pytest's ``--junitxml``), rounded to a tenth, longest first."""
    seconds: Counter[str] = Counter()
    for case in ET.parse(report).getroot().iter("testcase"):
        module = (case.get("classname") or "").split(".")
        name = next((f"{part}.py" for part in module if part.startswith("test_")), None)
        if name:
            seconds[name] += float(case.get("time") or 0.0)
    return {name: round(s, 1) for name, s in seconds.most_common() if s >= 1.0}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/file_weights.py JUNIT_XML > tests/file_weights.json")
    json.dump(weights_from_junit(Path(sys.argv[1])), sys.stdout, indent=0)
    sys.stdout.write("\n")
