#!/usr/bin/python
# Copyright: kata.osbuilder contributors
# Apache License 2.0
from __future__ import annotations

DOCUMENTATION = r"""
module: rootfs_finalize
short_description: Finish a guest rootfs from the builder's side
description:
  - Works on a rootfs directory on the builder (not inside it), so it can remove what the tools
    inside need to run, the shell and Python included.
  - Paths are inside the rootfs and are resolved as the guest would resolve them; an absolute
    symlink in the tree never sends a removal or a write to the builder's own files.
  - Order - remove O(remove_files), O(remove) and what the O(prune) globs match, drop directories left empty by
    O(remove), write O(files), make O(links), then clamp every mtime to O(source_date_epoch).
version_added: 0.1.0
author: kata.osbuilder contributors
options:
  root:
    description: The rootfs directory.
    type: path
    required: true
  remove:
    description: Paths inside the rootfs to remove (files, links, directories with their content).
    type: list
    elements: str
    default: []
  remove_files:
    description:
      - Paths inside the rootfs to remove when they are not directories (a package's file list, say);
        directories in the list are kept, and removed afterwards only if that left them empty.
    type: list
    elements: str
    default: []
  prune:
    description: Glob patterns (a C(*) in the last component only) of more paths to remove.
    type: list
    elements: str
    default: []
  prune_defaults:
    description:
      - Also remove what no guest needs - documentation, man and info pages, translations, package
        caches and lists, logs, temporary files, Ansible's leftovers in /root.
    type: bool
    default: true
  files:
    description: Files to write, path inside the rootfs to content.
    type: dict
    default: {}
  links:
    description: Symlinks to make, path inside the rootfs to target.
    type: dict
    default: {}
  source_date_epoch:
    description: Clamp every mtime in the tree to this time; not done when unset.
    type: int
attributes:
  check_mode:
    support: none
"""

EXAMPLES = r"""
- name: Finish the rootfs
  kata.osbuilder.rootfs_finalize:
    root: /var/lib/kata-osbuilder/work/debian-x86_64-agent/rootfs
    prune: ["/usr/share/doc/*", "/var/lib/apt/lists/*"]
    files:
      /etc/resolv.conf: ""
    links:
      /var/run: /run
    source_date_epoch: 1700000000
"""

RETURN = r"""
removed:
  description: Entries removed.
  returned: success
  type: int
freed_bytes:
  description: Bytes of file data removed.
  returned: success
  type: int
size_bytes:
  description: Apparent size of the tree afterwards.
  returned: success
  type: int
entries:
  description: Entries in the tree afterwards.
  returned: success
  type: int
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kata.osbuilder.plugins.module_utils import rootfs


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            remove=dict(type="list", elements="str", default=[]),
            remove_files=dict(type="list", elements="str", default=[]),
            prune=dict(type="list", elements="str", default=[]),
            prune_defaults=dict(type="bool", default=True),
            files=dict(type="dict", default={}),
            links=dict(type="dict", default={}),
            source_date_epoch=dict(type="int"),
        ),
        supports_check_mode=False,
    )
    p = module.params
    root = p["root"]
    if not os.path.isdir(root) or os.path.realpath(root) == "/":
        module.fail_json(msg=f"rootfs {root} is not a directory (or is /)")
    try:
        files, dirs = rootfs.split_dirs(root, p["remove_files"])
        removed, freed = rootfs.remove(root, files + list(p["remove"]) + rootfs.expand(root, (rootfs.DEFAULT_PRUNE if p["prune_defaults"] else []) + p["prune"]))
        removed += rootfs.remove_empty_dirs(root, dirs + [os.path.dirname(x) for x in files])
        changed = removed > 0
        for path, content in sorted(p["files"].items()):
            changed |= rootfs.write_file(root, path, content or "")
        for path, target in sorted(p["links"].items()):
            changed |= rootfs.symlink(root, path, target)
        if p["source_date_epoch"] is not None:
            changed |= rootfs.clamp_mtimes(root, p["source_date_epoch"]) > 0
        size, entries = rootfs.tree_size(root)
    except (OSError, rootfs.RootfsError) as e:
        module.fail_json(msg=f"finalizing {root}: {e}")
    module.exit_json(changed=changed, removed=removed, freed_bytes=freed, size_bytes=size, entries=entries)


if __name__ == "__main__":
    main()
