#!/usr/bin/env python3
"""Removes superseded test and binary executables from a warm cargo target dir.

Every change to a crate relinks its test and binary executables under a new hash in
`<target>/<profile>/deps/` and leaves the old ones behind: 100-370 MB each, tens of GB
after a day of commits (a run on 2026-12-06 filled the disk mid-test with 46 GB there).
An executable is superseded when a newer one was built from the same source file: the
first path in its `.d` dep-info file, so that same-named tests of different crates
(`proxy/tests/resumption.rs`, `cert-authority/tests/resumption.rs`) are told apart.
Libraries are left alone (small, and shared between builds with different features).

Usage: prune-target.py TARGET_DIR [--dry-run]
"""

import os
import re
import sys
from collections import defaultdict

HASHED = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{16})$")


def source_of(dep_info: str) -> str:
    """The first source file a `.d` file lists for its output (the crate root)."""
    try:
        with open(dep_info, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return ""
    _, _, deps = first.partition(": ")
    return deps.split(" ", 1)[0].strip()


def prune(deps_dir: str, dry_run: bool) -> int:
    groups = defaultdict(list)
    for entry in os.scandir(deps_dir):
        m = HASHED.match(entry.name)
        if not m or not entry.is_file() or not os.access(entry.path, os.X_OK):
            continue
        dep_info = os.path.join(deps_dir, entry.name + ".d")
        key = (m.group("name"), source_of(dep_info))
        groups[key].append((entry.stat().st_mtime, entry.path, dep_info))
    freed = 0
    for versions in groups.values():
        versions.sort(reverse=True)
        for _, path, dep_info in versions[1:]:
            freed += os.path.getsize(path)
            if not dry_run:
                os.remove(path)
                if os.path.exists(dep_info):
                    os.remove(dep_info)
    return freed


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    target, dry_run = sys.argv[1], "--dry-run" in sys.argv[2:]
    freed = 0
    for profile in ("debug", "release"):
        deps = os.path.join(target, profile, "deps")
        if os.path.isdir(deps):
            freed += prune(deps, dry_run)
    verb = "would free" if dry_run else "freed"
    print(f"prune-target: {verb} {freed / 2**30:.1f} GB of superseded executables")


if __name__ == "__main__":
    main()
