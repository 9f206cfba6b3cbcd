"""CPU time per process tree and per thread, read from /proc (Linux), for the benchmark.

A role's CPU is the utime+stime of its leader and every live descendant,
plus their cutime+cstime: a PostgreSQL backend or a gunicorn worker that
exited (and was reaped by its parent) is then still counted, exactly once.
Sampled before and after a window, the difference is the CPU the role spent
in it. Resolution is one clock tick (10 ms), fine over seconds of load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))
PROC = Path("/proc")


@dataclass(frozen=True)
class _Stat:
    ppid: int
    own: float  # utime + stime, seconds
    reaped: float  # cutime + cstime: children that exited and were waited for


def _stat(path: Path) -> _Stat | None:
    try:
        text = path.read_text()
    except OSError:  # gone meanwhile
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    # fields[0] is field 3 of proc(5): state; ppid is 4, utime..cstime are 14..17
    return _Stat(int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK,
                 (int(fields[13]) + int(fields[14])) / TICK)


def _all_processes() -> dict[int, _Stat]:
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(entry / "stat")
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def tree_seconds(leaders: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each role's process tree (0 for a leader that is gone)."""
    processes = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, stat in processes.items():
        children.setdefault(stat.ppid, []).append(pid)
    totals = {}
    for role, leader in leaders.items():
        total, todo = 0.0, [leader]
        while todo:
            pid = todo.pop()
            found = processes.get(pid)
            if found is not None:
                total += found.own + found.reaped
                todo.extend(children.get(pid, ()))
        totals[role] = total
    return totals


def own_seconds() -> float:
    """This process's own CPU (its threads, live and exited), children excluded."""
    stat = _stat(PROC / "self" / "stat")
    return stat.own if stat is not None else 0.0


def thread_seconds(native_ids: list[int]) -> dict[int, float]:
    """CPU seconds of each live thread of this process, by native thread id."""
    found = {}
    for tid in native_ids:
        stat = _stat(PROC / "self" / "task" / str(tid) / "stat")
        if stat is not None:
            found[tid] = stat.own
    return found


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (/proc/stat)."""
    first = (PROC / "stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / TICK, total / TICK


def own_process_seconds(pid: int) -> float:
    """utime+stime of process `pid` alone (its threads, no children); 0 once it is gone."""
    stat = _stat(PROC / str(pid) / "stat")
    return stat.own if stat is not None else 0.0


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`, by pid."""
    return sorted(child for child, stat in _all_processes().items() if stat.ppid == pid)


def command_line(pid: int) -> list[str]:
    """Process `pid`'s argv ([] once it is gone, or for a kernel thread)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
