# Copyright: kata.osbuilder contributors
# Apache License 2.0
"""Filters for the bootstrap role's distro files (roles/bootstrap/vars/<distro>.yml).

Repository URLs and key locations in a distro's vars file are plain data with placeholders,
`{mirror}`, `{release}`, `{arch}` (the distro's name for the architecture), `{branch}` and the
like, so the vars file can be read (by preflight, tools/list-distros.py) before any of them is known.
"""
from __future__ import annotations

import posixpath
import re

from ansible.errors import AnsibleFilterError

_FIELD = re.compile(r"\{([a-z_]+)\}")


def bootstrap_fill(value, fields: dict):
    """Replace {name} placeholders with FIELDS[name] in a string, or in every string of a list/dict."""
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in fields:
                raise AnsibleFilterError(f"bootstrap_fill: no value for {{{m.group(1)}}} in {value!r}")
            return str(fields[m.group(1)])
        return _FIELD.sub(sub, value)
    if isinstance(value, (list, tuple)):
        return [bootstrap_fill(v, fields) for v in value]
    if isinstance(value, dict):
        return {k: bootstrap_fill(v, fields) for k, v in value.items()}
    return value


def bootstrap_for_release(value, release: str):
    """A per-release value: VALUE[release], else VALUE['*']; a list or string is the same for every release."""
    if isinstance(value, dict):
        if str(release) in value:
            return value[str(release)]
        if "*" in value:
            return value["*"]
        raise AnsibleFilterError(f"no entry for release {release!r} (known: {', '.join(map(str, value))})")
    return value


def bootstrap_key_sources(keys: list, directory: str) -> list:
    """[{url, dest}]: a key URL is downloaded to DIRECTORY/<nn>-<its name>; a path on the builder
    (or a file:// URL) is used where it is, with an empty url."""
    out = []
    for key in keys:
        key = str(key)
        if re.match(r"^[a-z]+://", key) and not key.startswith("file://"):
            name = posixpath.basename(key.split("?", 1)[0].rstrip("/")) or "key"
            name = re.sub(r"[^A-Za-z0-9._@+-]", "_", name)
            out.append({"url": key, "dest": posixpath.join(directory, f"{len(out):02d}-{name}")})
        else:
            out.append({"url": "", "dest": key[len("file://"):] if key.startswith("file://") else key})
    return out


class FilterModule:
    def filters(self):
        return {
            "bootstrap_fill": bootstrap_fill,
            "bootstrap_for_release": bootstrap_for_release,
            "bootstrap_key_sources": bootstrap_key_sources,
        }
