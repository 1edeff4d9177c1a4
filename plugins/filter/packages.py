# Copyright: kata.osbuilder contributors
# Apache License 2.0
"""Filters: a package database as a graph, and what a set of packages needs (the finalize role).

The finalize role keeps the packages the guest needs and drops the rest, for every package
family. dpkg's side is done with apt-cache; rpm and apk have no installed-only recursive
dependency query, so their databases are read into the same small graph here:

    {name: {"version": str, "arch": str, "requires": [cap, ...], "provides": [cap, ...], "files": [path, ...]}}

A requirement is met by every installed package that provides it (its name, a Provides, or a file);
rich (boolean) rpm dependencies count every capability they name. So the closure can keep a
little more than a resolver would, never less.
"""
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

_RICH_WORDS = {"and", "or", "if", "unless", "else", "with", "without"}
_OPERATORS = {"<", ">", "=", "<=", ">=", "=>", "=<"}
_APK_VERSION = re.compile(r"[<>=~].*$")


def _entry(graph: dict, name: str) -> dict:
    return graph.setdefault(name, {"version": "", "arch": "", "requires": [], "provides": [], "files": []})


def rpm_graph(text: str) -> dict:
    """Parse `rpm -qa --qf` output: `NAME\tN\tVERSION-RELEASE\tARCH` then R(equire), P(rovide), F(ile) lines."""
    graph: dict = {}
    for line in str(text).splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        name, kind = fields[0], fields[1]
        e = _entry(graph, name)
        if kind == "N":
            e["version"] = fields[2]
            e["arch"] = fields[3] if len(fields) > 3 else ""
        elif kind == "R":
            e["requires"].append(fields[2])
        elif kind == "P":
            e["provides"].append(fields[2])
        elif kind == "F":
            e["files"].append(fields[2])
    return graph


def apk_graph(text: str) -> dict:
    """Parse apk's installed database (/lib/apk/db/installed)."""
    graph: dict = {}
    for record in re.split(r"\n\s*\n", str(text)):
        fields = [(line[:1], line[2:]) for line in record.splitlines() if len(line) > 1 and line[1] == ":"]
        name = next((v for k, v in fields if k == "P"), None)
        if not name:
            continue
        e = _entry(graph, name)
        folder = ""
        for key, value in fields:
            if key == "V":
                e["version"] = value
            elif key == "A":
                e["arch"] = value
            elif key == "D":
                e["requires"] += [d for d in value.split() if not d.startswith("!")]
            elif key == "p":
                e["provides"] += value.split()
            elif key == "F":
                folder = "/" + value.strip("/")
                e["files"].append(folder)
            elif key == "R":
                e["files"].append(folder.rstrip("/") + "/" + value)
    return graph


def _capabilities(dep: str) -> list[str]:
    """The capability names a dependency mentions (rpm rich deps name several; apk's carry versions)."""
    dep = dep.strip()
    if dep.startswith("("):
        names, skip = [], False
        for token in re.findall(r"[^\s()]+", dep):
            if skip:
                skip = False
            elif token in _OPERATORS:
                skip = True
            elif token not in _RICH_WORDS:
                names.append(token)
        return names
    return [_APK_VERSION.sub("", dep.split()[0])] if dep else []


def _providers(graph: dict) -> dict:
    providers: dict = {}
    for name, e in graph.items():
        for cap in [name] + [_APK_VERSION.sub("", p.split()[0]) for p in e["provides"] if p.strip()] + e["files"]:
            providers.setdefault(cap, set()).add(name)
    return providers


def pkg_closure(graph: dict, roots: list) -> list:
    """Installed packages that ROOTS (names or capabilities) need, ROOTS' providers included; sorted."""
    if not isinstance(graph, dict):
        raise AnsibleFilterError("pkg_closure expects a package graph (rpm_graph or apk_graph)")
    providers = _providers(graph)
    todo = sorted({p for r in roots for c in _capabilities(str(r)) for p in providers.get(c, ())})
    seen = set(todo)
    while todo:
        for dep in graph[todo.pop()]["requires"]:
            for cap in _capabilities(dep):
                for p in providers.get(cap, ()):
                    if p not in seen:
                        seen.add(p)
                        todo.append(p)
    return sorted(seen)


def pkg_autoremove(graph: dict, build: list) -> list:
    """What removing BUILD takes with it: BUILD's closure less what any other package needs; sorted."""
    build_closure = set(pkg_closure(graph, build))
    needed = set(pkg_closure(graph, sorted(set(graph) - build_closure)))
    return sorted(set(graph) - needed)


def pkg_files(graph: dict, names: list) -> list:
    """Every path the packages NAMES own (directories included), sorted."""
    return sorted({f for n in names for f in graph.get(n, {}).get("files", [])})


def pkg_manifest(graph: dict, names: list) -> str:
    """`name<TAB>version<TAB>arch` lines for NAMES, as dpkg-query writes the Debian manifest."""
    return "".join(f"{n}\t{graph[n]['version']}\t{graph[n]['arch']}\n" for n in sorted(names) if n in graph)


class FilterModule:
    def filters(self):
        return {
            "rpm_graph": rpm_graph,
            "apk_graph": apk_graph,
            "pkg_closure": pkg_closure,
            "pkg_autoremove": pkg_autoremove,
            "pkg_files": pkg_files,
            "pkg_manifest": pkg_manifest,
        }
