#!/usr/bin/env python3
"""List the distros the bootstrap role knows: one vars file each in roles/bootstrap/vars/.

A distro whose vars file says bootstrap_discontinued is listed with that reason (preflight refuses it).
"""
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
        inits = "" if "bootstrap_inits" not in v else f"  init {','.join(v['bootstrap_inits'])} only"
        print(f"{f.stem:<14} default {v['bootstrap_default_release']:<10} "
              f"releases {','.join(map(str, v['bootstrap_releases']))}  arch {','.join(v['bootstrap_arch_map'])}"
              f"  packages {v.get('bootstrap_pkg_family', 'deb')}{inits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
