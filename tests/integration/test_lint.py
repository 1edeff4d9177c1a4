"""ansible-lint, production profile (.ansible-lint), over the whole collection."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ansible_lint_production_clean(tmp_path):
    assert shutil.which("ansible-lint"), "ansible-lint is in requirements-dev.txt"
    r = subprocess.run(["ansible-lint", "--nocolor"], cwd=REPO, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "ANSIBLE_HOME": str(tmp_path)})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr
