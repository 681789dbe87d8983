"""Checks a demo run's report.json: every operation ran, at its target rate within 1 %."""

from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    problems = []
    for op in ("store", "recall", "spread"):
        o = report["operations"][op]
        if o["count"] <= 0:
            problems.append(f"{op}: count {o['count']}")
        error = abs(o["achieved_rate"] - o["target_rate"]) / o["target_rate"]
        if error > 0.01:
            problems.append(f"{op}: achieved {o['achieved_rate']:.2f}/s vs {o['target_rate']}/s")
        print(f"{op}: {o['count']} requests, {o['achieved_rate']:.2f}/s of {o['target_rate']}/s")
    print(f"status {report['status']}, verdict {report['verdict']}")
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
