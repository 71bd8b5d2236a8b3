"""Print how many faults the fault suite (tests/test_faults_processes.py, test_faults_files.py,
test_faults_inputs.py and test_faults_weak.py) injects and how many bad inputs it tries.

    python tests/fault_counts.py            # "N faults injected, M bad inputs tried"
    python tests/fault_counts.py --detail   # the same, then one line per group

The numbers come from the suite's own case lists (FAULT_CASES, BAD_INPUT_CASES of each module),
the lists its tests are parametrized over, so the counts in docs/development.md cannot drift from the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def counts() -> tuple[dict[str, int], dict[str, int]]:
    """({fault group: cases}, {bad-input group: cases})."""
    import test_faults_files
    import test_faults_inputs
    import test_faults_processes
    import test_faults_weak  # issue 29's weak cases, in a module of their own

    modules = (test_faults_processes, test_faults_files, test_faults_inputs, test_faults_weak)
    return ({k: len(v) for m in modules for k, v in m.FAULT_CASES.items()},
            {k: len(v) for m in modules for k, v in m.BAD_INPUT_CASES.items()})


def main(argv: list[str]) -> int:
    faults, bad = counts()
    print(f"{sum(faults.values())} faults injected, {sum(bad.values())} bad inputs tried")
    if "--detail" in argv:
        for title, groups in (("faults injected", faults), ("bad inputs tried", bad)):
            print(f"\n{title}:")
            for name, n in groups.items():
                print(f"  {n:>4}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
