"""Resident memory of a process and everything it started, read from Linux's /proc.

The pipeline is a tree of processes (the CLI or supervisor and one process per stage replica), so
its memory is the sum over the tree. Used by the benchmarks and the memory tests; processes that
end while they are being read are skipped.
"""
from __future__ import annotations

import os

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid → parent pid of every process visible now."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    parents[int(entry.name)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def tree_members(root: int) -> set[int]:
    """``root`` and all its descendants."""
    parents = _parents()
    members, grown = {root}, True
    while grown:
        new = {pid for pid, parent in parents.items() if parent in members} - members
        members |= new
        grown = bool(new)
    return members


def resident_bytes(pid: int) -> int:
    """Resident memory of one process in bytes (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def tree_resident_bytes(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in bytes."""
    return sum(resident_bytes(pid) for pid in tree_members(root))
