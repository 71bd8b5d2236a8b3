#!/usr/bin/env python3
"""Generate every number, table and figure reference the report shows, from results files.

    python scripts/make_report_inputs.py [--results results] [--figures figures] [--out report/generated]

Reads what the notebooks wrote (the single source of truth):
  RESULTS/<run>/results.json          one training run (resnet_lib.train_and_evaluate)
  RESULTS/per_class_accuracy.csv      notebook 05: test accuracy (%) per class and run
  RESULTS/confused_pairs.csv          notebook 05: the most confused class pairs per run
  FIGURES/<name>.pdf (or .png)        the notebooks' figures

and writes LaTeX fragments into OUT (numbers.tex, results_table.tex, ...), which
report/report.tex `\\input`s, plus OUT/manifest.json (what was found). The facts come from
resnet_tools.report.facts, the LaTeX from resnet_tools.report.paper (this script runs its main);
scripts/update_readme_results.py renders the same facts as Markdown for the README.
"""

import sys
from pathlib import Path

# The package beside this script comes first, installed or not: an editable install of another checkout
# (a shared environment) must not render, and write, that checkout's README and paper.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_tools.report.paper import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
