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


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_spec_defaults_are_in_defaults(role: Path):
    """A spec default does not set the variable: a role run without the option would fail on it."""
    options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"].get("options", {})
    defaults_file = role / "defaults/main.yml"
    defaults = (yaml.safe_load(defaults_file.read_text()) or {}) if defaults_file.exists() else {}
    missing = sorted(n for n, o in options.items() if "default" in o and not o.get("required") and n not in defaults)
    assert missing == [], f"options with a spec default but none in defaults/main.yml: {missing}"
