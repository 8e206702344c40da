"""asv's install step after pip (asv.conf.json's install_command): give every source file
of the installed fastbp one modification time, derived from the whole package's content.

Numba's on-disk cache is valid while a source file keeps its (mtime, size); pip writes files
with the install's time, so every reinstall of the same commit (asv reinstalls at each switch
of an interleaved run) found the cache stale and compiled everything again: minutes a
commit. One time for all files, from all their bytes, keeps the cache across reinstalls of
identical code and drops all of it when any file changes (a cached function can carry code
inlined from another file, so a per-file stamp could run stale code).

    python tools/asv_stamp.py      # in the environment where fastbp is installed
"""
import hashlib
import importlib.util
import os
import sys
from pathlib import Path


def stamp(root):
    """Set every .py under root to one mtime from their paths and bytes; (mtime, count)."""
    files = sorted(root.rglob("*.py"))
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    mtime = 1_000_000_000 + int(digest.hexdigest()[:8], 16) % 100_000_000
    for path in files:
        os.utime(path, (mtime, mtime))
    return mtime, len(files)


def main():
    spec = importlib.util.find_spec("fastbp")          # finds the package, runs none of it
    if spec is None or spec.origin is None:
        print("asv_stamp: fastbp is not installed here", file=sys.stderr)
        return 1
    mtime, n = stamp(Path(spec.origin).parent)
    print(f"asv_stamp: {n} files of {Path(spec.origin).parent} at mtime {mtime}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
