"""CPU seconds used by a process and its descendants, read from /proc (Linux).

The scale-out and load benchmarks run every part on the same few cores; how much CPU each part
(replicas, proxy, database, load generator) took during the timed window says whether the
replicas were starved of cores or did more work per step as they were added."""
from __future__ import annotations

import os
import pathlib

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of one process, None if it is gone."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces: split after its closing one
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (a child that already exited is not
    counted: the parts measured here live through the window)."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                parents[int(entry.name)], seconds[int(entry.name)] = stat
    total, frontier = 0.0, [root]
    while frontier:
        pid = frontier.pop()
        total += seconds.get(pid, 0.0)
        frontier += [child for child, parent in parents.items() if parent == pid]
    return total


def own_cpu_seconds() -> float:
    """This process's CPU seconds (its threads included, its children not)."""
    stat = _stat(os.getpid())
    return stat[1] if stat else 0.0
