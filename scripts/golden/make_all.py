"""Regenerates every golden fixture: runs each scripts/golden/*.py except this file and common.py."""

import glob
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
scripts = sorted(
    p for p in glob.glob(os.path.join(here, "*.py")) if os.path.basename(p) not in ("make_all.py", "common.py")
)
for script in scripts:
    print(f"== {os.path.basename(script)}", flush=True)
    subprocess.run([sys.executable, script], check=True)
