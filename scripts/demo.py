"""`make demo`: the main job on the embedded default — synthetic NP diffusion at CPU size,
quick training, a short γ sweep, the NP analysis — and the path to its report.

Runs `scripts/reproduce.py --cases np_diffusion --out outputs/demo`; rerunning it skips
finished steps. Pass extra reproduce.py options after `--`, e.g. `-- --force`.
"""

from __future__ import annotations

import sys

from reproduce import main  # scripts/ is on sys.path when run as a script

if __name__ == "__main__":
    sys.exit(main(["--scale", "quick", "--cases", "np_diffusion", "--out", "outputs/demo", "--keep-going",
                   *sys.argv[1:]]))
