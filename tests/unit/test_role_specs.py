"""Every role validates its input: meta/argument_specs.yml exists and agrees with defaults/main.yml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent for p in REPO.glob("roles/*/tasks"))


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_has_argument_specs(role: Path):
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]
    assert "main" in specs and specs["main"].get("short_description")
    for name, opt in specs["main"].get("options", {}).items():
        assert name.startswith(role.name + "_"), f"{name}: options carry the role's prefix"
        assert opt.get("description"), f"{name} has no description"
        assert opt.get("type"), f"{name} has no type"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_are_specified(role: Path):
    """A default that no spec names would escape validation; a spec default must match."""
    defaults_file = role / "defaults/main.yml"
    if not defaults_file.exists():
        pytest.skip("no defaults")
    defaults = yaml.safe_load(defaults_file.read_text()) or {}
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"].get("options", {})
    assert sorted(set(defaults) - set(options)) == [], "defaults without a spec"
    for name, value in defaults.items():
        spec_default = options[name].get("default")
        if spec_default in (None, [], {}) or isinstance(value, str) and "{{" in value:
            continue  # long lists and templated values live in defaults only
        assert spec_default == value, f"{name}: spec default {spec_default!r} != defaults/main.yml {value!r}"
