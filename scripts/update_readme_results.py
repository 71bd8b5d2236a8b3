#!/usr/bin/env python3
"""Write the README's results section from the results files, between two markers, and the full
results page (docs/results.md, beside the README unless --doc names another path).

    python scripts/update_readme_results.py [--readme README.md] [--doc PATH] [--results results] [--figures figures]
        [--stdout]

Replaces whatever lies between `<!-- results:start -->` and `<!-- results:end -->` (each
must appear exactly once, in that order) with a block generated from RESULTS/<run>/results.json
and notebook 05's per-class CSV files, the same facts and caveats as the paper
(resnet_tools.report.facts; this script runs resnet_tools.report.readme's main). --stdout prints
the block instead of writing the README.
"""

import sys
from pathlib import Path

# The package beside this script comes first, installed or not: an editable install of another checkout
# (a shared environment) must not render, and write, that checkout's README and paper.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_tools.report.readme import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
