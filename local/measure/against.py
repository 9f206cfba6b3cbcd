"""`make bench BENCH_ARGS="--against REF"`: one measurement of this tree and of REF, in one run.

    python -m local.measure.bench --against 67e146b --rate 10 --duration 20 --rounds 2
    python -m local.measure.bench --against 67e146b --idle 30
    python -m local.measure.bench --against 67e146b --broker-growth --sizes 0,5000
    python -m local.measure.bench --against 67e146b --broker-growth --bookings 10000 --rate 25

Two benchmarks taken at different times on a shared machine differ by more
than most changes do (machines of one kind differ nearly two to one per
booking; other people's work comes and goes). So both trees are measured in
one run, alternately (this tree, REF, this tree, REF, ...) for `--rounds`
rounds, and each figure is the median of its side's rounds, with the ratio
this / REF. REF is built with `git archive` into a temporary folder
(`local.measure.trees`), and each side runs its own bench as a subprocess in
its own folder with the same arguments (`--rate`, `--duration`, `--warmup`,
`--mix`, `--users`, `--hold-ttl`; `--idle SECONDS`, `--settle`; `--sizes`,
`--probes`), writing its JSON. `--broker-growth --bookings N` instead
starts each tree's own `make run` and books and pays N times through it
from this tree's load generator, then counts the batches its broker stored
(`local.measure.batches`). The table is `local.measure.compare`'s; every
run's machine-speed figure is printed under it, to judge the noise. A run
that fails stops the comparison, which exits 1 and says which side failed
and why (each run's output is in `.local/bench-against/`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local import console
from local.measure import batches, compare, idlerun, trees
from local.measure.bench import reference_loop_ms
from local.measure.compare import Figures, Routing
from local.measure.trees import Tree

LOGS = console.LOG_FOLDER / "bench-against"
LOAD_OPTIONS = ("rate", "duration", "warmup", "mix", "users", "hold-ttl")
IDLE_OPTIONS = ("settle",)
BROKER_OPTIONS = ("sizes", "probes")


class RunFailed(Exception):
    """One side's run did not give its figures; the message says why."""


@dataclass
class Side:
    tree: Tree
    slug: str  # "this" or "ref": log file names
    routing: Routing | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)
    speeds: list[float | None] = field(default_factory=list)  # each run's machine speed, ms
    noise: list[float | None] = field(default_factory=list)  # cores busy outside, each run


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return "\n      ".join(text[-lines:]) or "(no output)"


def run_module(tree: Tree, argv: list[str], log: Path) -> str:
    """`python -m <its bench> argv` in the tree's folder: its output, or RunFailed."""
    with log.open("wb") as output:
        done = subprocess.run([sys.executable, "-m", tree.bench, *argv], cwd=tree.folder,
                              stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RunFailed(f"exit {done.returncode}; its output ({console.shown(log)}) ends:\n"
                        f"      {_tail(log)}")
    return log.read_text(errors="replace")


def run_json(tree: Tree, argv: list[str], log: Path) -> dict[str, Any]:
    """The tree's bench with `--json`: the report it wrote, or RunFailed."""
    with tempfile.TemporaryDirectory(prefix="marketplace-against-json-") as tmp:
        path = Path(tmp) / "figures.json"
        run_module(tree, [*argv, "--json", str(path)], log)
        try:
            report: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RunFailed(f"it exited 0 but wrote no JSON ({exc}); its output"
                            f" ({console.shown(log)}) ends:\n      {_tail(log)}") from exc
    return report


def idle_report(tree: Tree, seconds: float, settle: float, log: Path) -> dict[str, Any]:
    """The tree's own `--idle` if it has one; else its `make run` measured from outside."""
    if tree.supports("--idle"):
        return run_json(tree, ["--idle", str(seconds), "--settle", str(settle)], log)
    if tree.run is None:
        raise RunFailed("it has neither --idle nor a run module"
                        f" ({' or '.join(trees.RUN_MODULES)})")
    speed = reference_loop_ms()
    try:
        return {"reference_loop_ms": speed,
                "idle": idlerun.measure(tree.folder, tree.run, seconds, settle, log)}
    except Exception as exc:
        raise RunFailed(f"{type(exc).__name__}: {exc}; its output ({console.shown(log)})"
                        f" ends:\n      {_tail(log)}") from exc


def forwarded(args: argparse.Namespace, options: tuple[str, ...]) -> list[str]:
    """The options given on the command line, to pass to both sides as they were given."""
    argv = []
    for option in options:
        value = getattr(args, option.replace("-", "_"))
        if value is not None:
            argv += [f"--{option}", value]
    return argv


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True, metavar="REF", help="a commit to compare")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side, alternated")
    parser.add_argument("--idle", type=float, nargs="?", const=60.0, metavar="SECONDS",
                        help="compare the stacks at rest instead (default 60 s)")
    parser.add_argument("--broker-growth", action="store_true",
                        help="compare local.measure.brokergrowth instead")
    parser.add_argument("--bookings", type=int,
                        help="with --broker-growth: the batches stored for this many paid"
                             " bookings (at --rate, default 20/s) through each tree's make run")
    for option in (*LOAD_OPTIONS, *IDLE_OPTIONS, *BROKER_OPTIONS):
        parser.add_argument(f"--{option}", help="passed to both sides")
    parser.add_argument("--json", type=Path, help="write the comparison here too")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.idle is not None and args.broker_growth:
        parser.error("--idle and --broker-growth are two comparisons: one at a time")
    return args


def _mode(args: argparse.Namespace) -> tuple[str, Callable[[Side, Path], Figures]]:
    """The comparison's title and how one run of a side is made and read."""
    if args.idle is not None:
        settle = float(args.settle) if args.settle is not None else 10.0

        def idle(side: Side, log: Path) -> Figures:
            report = idle_report(side.tree, args.idle, settle, log)
            side.speeds.append(report.get("reference_loop_ms"))
            side.noise.append(report.get("idle", {}).get("other_processes_busy_cores"))
            return compare.idle_figures(report)

        return (f"the make run stack at rest, {args.idle:.0f} s measured from {settle:.0f} s"
                " after /healthz answered"), idle
    if args.broker_growth and args.bookings:
        rate = float(args.rate) if args.rate is not None else 20.0

        def stored(side: Side, log: Path) -> Figures:
            side.speeds.append(reference_loop_ms())
            side.noise.append(None)
            if side.tree.run is None:
                raise RunFailed(f"{side.tree.label} has no make run module")
            try:
                found = batches.measure(side.tree.folder, side.tree.run, args.bookings, rate,
                                        log)
            except Exception as exc:
                raise RunFailed(f"{type(exc).__name__}: {exc}; its output"
                                f" ({console.shown(log)}) ends:\n      {_tail(log)}") from exc
            return compare.batch_figures(found)

        return (f"what the broker stored for {args.bookings} bookings booked and paid at"
                f" {rate:.0f}/s through each tree's make run"), stored
    if args.broker_growth:
        def broker(side: Side, log: Path) -> Figures:
            side.speeds.append(reference_loop_ms())
            side.noise.append(None)
            return compare.broker_figures(
                run_module(side.tree, ["--broker-growth", *forwarded(args, BROKER_OPTIONS)],
                           log))

        return "the embedded broker as a topic grows", broker

    def load(side: Side, log: Path) -> Figures:
        report = run_json(side.tree, forwarded(args, LOAD_OPTIONS), log)
        side.speeds.append(report.get("reference_loop_ms"))
        side.noise.append(report.get("result", {}).get("other_processes_busy_cores"))
        return compare.load_figures(report, side.routing)

    given = " ".join(forwarded(args, LOAD_OPTIONS)) or "the bench's defaults"
    return f"bookings offered at one rate ({given})", load


def _each_run(values: list[float | None], unit: str) -> str:
    return ", ".join(compare.shown(v) for v in values) + unit


@console.command("bench-against")
def main(argv: list[str] | None = None) -> None:
    args = arguments(list(sys.argv[1:] if argv is None else argv))
    try:
        compared(args)
    except trees.TreeError as exc:
        console.say(f"FAILED: {exc}")
        raise SystemExit(1) from exc


def compared(args: argparse.Namespace) -> None:
    commit = trees.resolve(args.against)
    ref_label = args.against if len(args.against) <= 12 else commit[:10]
    title, one_run = _mode(args)
    LOGS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="marketplace-against-") as tmp:
        folder = Path(tmp) / "ref"
        console.say(f"building {args.against} ({commit[:12]}) into {folder} (git archive) ...")
        trees.export(commit, folder)
        sides = [Side(trees.tree("this tree", trees.ROOT), "this"),
                 Side(trees.tree(ref_label, folder), "ref")]
        for side in sides:
            side.routing = trees.routing(side.tree.folder)
            if side.routing is None:
                console.say(f"  {side.tree.label}: its routing could not be read; schedules"
                            f" are taken to be {', '.join(sorted(compare.SCHEDULES))}")
        runs: dict[str, list[Figures]] = {"this": [], "ref": []}
        failed = None
        for number in range(1, args.rounds + 1):
            for side in sides:
                log = LOGS / f"{number}-{side.slug}.log"
                console.say(f"round {number}/{args.rounds}: {side.tree.label}"
                            f" ({side.tree.bench}) ...")
                try:
                    runs[side.slug].append(one_run(side, log))
                except RunFailed as exc:
                    failed = f"{side.tree.label} ({side.slug}), round {number}, failed: {exc}"
                    break
            if failed:
                break
        table = compare.rows(runs["this"], runs["ref"])
        console.say()
        console.say(f"this tree ({trees.ROOT}, HEAD {trees.head()} with its changes) against"
                    f" {ref_label} ({commit[:12]}): {title}; median of"
                    f" {len(runs['this'])} and {len(runs['ref'])} runs, alternated")
        if runs["this"] and runs["ref"]:
            console.say("\n".join(compare.render(table, "this", ref_label)))
        for side in sides:
            console.say(f"  machine speed, {side.tree.label}: {_each_run(side.speeds, ' ms')}"
                        " of CPU for a 10 M-step loop, each run; cores busy outside the stack:"
                        f" {_each_run(side.noise, '')}")
    if args.json:
        args.json.write_text(json.dumps({
            "ref": {"given": args.against, "commit": commit}, "title": title, "runs": runs,
            "rows": [{"figure": r.name, "this": r.this, "ref": r.ref, "ratio": r.ratio}
                     for r in table], "failed": failed}, indent=2) + "\n")
    if failed:
        console.say(f"FAILED: {failed}")
        raise SystemExit(1)
