#!/usr/bin/env python3
"""List the distros the bootstrap role knows: one vars file each in roles/bootstrap/vars/."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

VARS = Path(__file__).resolve().parents[1] / "roles" / "bootstrap" / "vars"


def main() -> int:
    for f in sorted(VARS.glob("*.yml")):
        v = yaml.safe_load(f.read_text())
        if "bootstrap_discontinued" in v:
            print(f"{f.stem:<14} not buildable: {v['bootstrap_discontinued']}")
            continue
        print(f"{f.stem:<14} default {v['bootstrap_default_release']:<10} "
              f"releases {','.join(map(str, v['bootstrap_releases']))}  arch {','.join(v['bootstrap_arch_map'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
