"""Every role's molecule scenario: converge, idempotence (a second converge changes nothing), verify.

No containers: the scenarios use molecule's default driver unmanaged, with this machine as the
builder and scratch rootfs trees reached over kata.osbuilder.chroot (tests/molecule/).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(REPO.glob("roles/*/molecule/*/molecule.yml"))

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="scenarios need root")]


def test_every_role_has_a_scenario():
    roles = {p.parent.name for p in REPO.glob("roles/*/tasks")}
    with_scenario = {p.parents[2].name for p in SCENARIOS}
    assert roles - with_scenario == set()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: f"{p.parents[2].name}-{p.parent.name}")
def test_molecule_scenario(scenario: Path):
    role_dir = scenario.parents[2]
    base = os.path.relpath(REPO / "tests/molecule/molecule.yml", role_dir)
    r = subprocess.run(["molecule", "--base-config", base, "test", "-s", scenario.parent.name],
                       cwd=role_dir, capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1", "PY_COLORS": "0"})
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)
    assert r.returncode == 0, out[-4000:]
    assert re.search(r"idempotence: Executed: Successful", out), out[-3000:]
    assert re.search(r"verify: Executed: Successful", out), out[-3000:]
