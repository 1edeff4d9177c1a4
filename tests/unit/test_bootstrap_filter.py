"""The bootstrap role's placeholder, per-release and key-source filters."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kata.osbuilder.plugins.filter import bootstrap as bf


def test_fill_strings_lists_and_dicts():
    fields = {"mirror": "https://m", "release": "9", "arch": "x86_64"}
    assert bf.bootstrap_fill("{mirror}/{release}-stream/BaseOS/{arch}/os/", fields) == "https://m/9-stream/BaseOS/x86_64/os/"
    assert bf.bootstrap_fill([{"id": "a", "baseurl": "{mirror}/{arch}"}], fields) == [{"id": "a", "baseurl": "https://m/x86_64"}]
    assert bf.bootstrap_fill(3, fields) == 3
    with pytest.raises(AnsibleFilterError, match=r"no value for \{branch\}"):
        bf.bootstrap_fill("{mirror}/{branch}", fields)


def test_for_release():
    assert bf.bootstrap_for_release({"tumbleweed": ["t"], "*": ["l"]}, "tumbleweed") == ["t"]
    assert bf.bootstrap_for_release({"tumbleweed": ["t"], "*": ["l"]}, "15.6") == ["l"]
    assert bf.bootstrap_for_release({"9": {"a": 1}}, 9) == {"a": 1}
    assert bf.bootstrap_for_release(["same"], "x") == ["same"]
    with pytest.raises(AnsibleFilterError, match="no entry for release '8'"):
        bf.bootstrap_for_release({"9": 1}, "8")


def test_key_sources():
    assert bf.bootstrap_key_sources(
        ["https://h/keys/RPM-GPG-KEY-x", "/usr/share/k.gpg", "file:///etc/k.asc", "https://h/pks/lookup?op=get&search=0xAB"], "/c/keys") == [
        {"url": "https://h/keys/RPM-GPG-KEY-x", "dest": "/c/keys/00-RPM-GPG-KEY-x"},
        {"url": "", "dest": "/usr/share/k.gpg"},
        {"url": "", "dest": "/etc/k.asc"},
        {"url": "https://h/pks/lookup?op=get&search=0xAB", "dest": "/c/keys/03-lookup"},
    ]
