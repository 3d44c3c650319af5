"""Run the fuzz targets of :mod:`targets`.

    python tests/fuzz/run.py replay [--generated N] [--report FILE] [TARGET ...]
        the committed corpus, then N generated inputs per target (the same on every machine);
        what ``make test`` runs
    python tests/fuzz/run.py cli [--report FILE]
        every corpus file through the command lines that read it (msakit.cli.main)
    python tests/fuzz/run.py fuzz [--seconds S] [TARGET ...]
        a campaign: S seconds per target, coverage-guided with atheris (libFuzzer) when it is
        installed (``pip install atheris``), else random structured mutations; what
        ``make fuzz`` runs. Inputs that fail go to fuzz-out/crashes/
    python tests/fuzz/run.py repro TARGET FILE...
        the contract's failures of these files, in this process
    python tests/fuzz/run.py minimize TARGET FILE --out SMALL
        the smallest file found that fails the same way (pickle opcodes, lines, then bytes
        removed while the failure stays), each try in a forked child so a crash is seen

Inputs run in a worker process that this supervisor restarts when it dies, so a crash (a
signal) is one failure of the input that caused it, and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
OUT = ROOT / "fuzz-out"
# How many generated inputs per target ``make test`` replays, and a bound on a run's wall time
# that only stops a stuck worker (a failure backstop, not a measurement).
CI_GENERATED = 25
WORKER_TIMEOUT_S = 1800


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MPLBACKEND="Agg", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


# --------------------------------------------------------------------------- cases
def cases(mode: str, names: list[str], generated: int) -> list[tuple[str, str]]:
    """(target, case) pairs: ``corpus:FILE`` and ``gen:K`` (replay) or ``cli:FILE:K`` (cli)."""
    import targets

    out = []
    for name in names:
        files = [p.name for p in targets.corpus_files(name)]
        if mode == "cli":
            import cli_cases

            out += [(name, f"cli:{f}:{k}") for f in files
                    for k in range(len(cli_cases.COMMANDS.get(name, ())))]
        else:
            out += [(name, f"corpus:{f}") for f in files]
            out += [(name, f"gen:{k}") for k in range(generated)]
    return out


def input_of(target: str, case: str, generators: dict) -> bytes:
    import targets

    kind, _, rest = case.partition(":")
    if kind == "gen":
        if target not in generators:
            generators[target] = targets.Generator(targets.TARGETS[target])
        return generators[target].case(int(rest))
    return (targets.CORPUS / target / rest.rsplit(":", 1)[0] if kind == "cli"
            else targets.CORPUS / target / rest).read_bytes()


# --------------------------------------------------------------------------- worker
def worker(args: argparse.Namespace) -> int:
    """Run the cases from ``--start`` on; one JSON line per case on the status descriptor."""
    import targets

    status = os.fdopen(int(args.status_fd), "w", buffering=1)
    todo = cases(args.mode, args.targets, args.generated)[args.start:]
    root = Path(tempfile.mkdtemp(prefix="msakit-fuzz-"))
    os.chdir(root)
    try:
        ws = targets.Workspace(root)
        runner = _cli_runner(ws) if args.mode == "cli" else None
        _warm_up(ws, args.targets)
        targets.cap_address_space()
        generators: dict = {}
        for target, case in todo:
            status.write(json.dumps({"begin": [target, case]}) + "\n")
            if runner is not None:
                failures = runner(target, case)
            else:
                try:
                    data = input_of(target, case, generators)
                except Exception as exc:  # noqa: BLE001 - a bug of the mutators, not msakit
                    status.write(json.dumps({"harness": f"{target} {case}: {exc!r}"}) + "\n")
                    raise
                failures = targets.check(targets.TARGETS[target], data, ws)
            status.write(json.dumps({"end": [target, case], "failures": failures}) + "\n")
        status.write(json.dumps({"done": True}) + "\n")
    finally:
        os.chdir(ROOT)
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _warm_up(ws, names: list[str]) -> None:
    """Each target once on its first seed: imports and first-call allocations happen before the
    address space is capped and before any input's RSS is measured."""
    import targets

    for name in names:
        files = [p for p in targets.corpus_files(name) if p.name.startswith("seed-")]
        if files:
            targets.check(targets.TARGETS[name], files[0].read_bytes(), ws)


def _cli_runner(ws):
    import cli_cases

    def run(target: str, case: str) -> list[str]:
        _, name, k = case.split(":")
        return cli_cases.check(ws, target, name, int(k))

    return run


# --------------------------------------------------------------------------- supervisor
def supervise(mode: str, names: list[str], generated: int) -> dict:
    """Run every case in workers, restarting after a crash; the per-target results."""
    import targets

    todo = cases(mode, names, generated)
    results = {n: {"inputs": 0, "failures": [], "known": []} for n in names}
    start, deadline = 0, time.monotonic() + WORKER_TIMEOUT_S
    while start < len(todo):
        done, last = _one_worker(mode, names, generated, start, results, deadline)
        if done:
            break
        if last is None:  # died before its first case: nothing to blame, nothing to retry
            raise SystemExit(f"the fuzz worker could not start (cases from {start})")
        index = todo.index(tuple(last["begin"]))
        target, case = todo[index]
        description = f"{target}: {case}: the process died ({last.get('exit', '?')})"
        _record(results[target], description, targets)
        _save_crash(target, case)
        results[target]["inputs"] += 1
        start = index + 1
    return results


def _one_worker(mode, names, generated, start, results, deadline):
    import targets

    read, write = os.pipe()
    cmd = [sys.executable, str(Path(__file__)), "worker", "--mode", mode, "--start", str(start),
           "--generated", str(generated), "--status-fd", str(write), *names]
    proc = subprocess.Popen(cmd, pass_fds=(write,), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(write)
    last = None
    with os.fdopen(read) as status:
        for line in status:
            event = json.loads(line)
            if "done" in event:
                proc.wait()
                return True, None
            if "begin" in event:
                last = event
                continue
            if "harness" in event:
                proc.kill()
                raise SystemExit(f"the fuzz harness failed to make an input: {event['harness']}")
            target = event["end"][0]
            results[target]["inputs"] += 1
            for failure in event["failures"]:  # "target: call: ..." -> "target: case: call: ..."
                _record(results[target], f"{target}: {event['end'][1]}: "
                        f"{failure.split(': ', 1)[1]}", targets)
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"the fuzz run exceeded {WORKER_TIMEOUT_S} s")
    stderr = proc.communicate()[1].decode(errors="replace")
    if last is not None:
        last["exit"] = f"exit status {proc.returncode}: " + " ".join(stderr.split()[-30:])
    return False, last


def _record(result: dict, description: str, targets) -> None:
    entry = targets.known(description)
    if entry is None:
        result["failures"].append(description)
    else:
        result["known"].append({"failure": description, "pattern": entry.pattern})


def _save_crash(target: str, case: str) -> None:
    folder = OUT / "crashes"
    folder.mkdir(parents=True, exist_ok=True)
    data = input_of(target, case, {})
    (folder / f"{target}-{case.replace(':', '-')}").write_bytes(data)


def summary(results: dict, title: str) -> list[str]:
    """The table and the failures; also the KNOWN_FAILURES entries that matched nothing."""
    import targets

    lines = [title, f"{'target':<18} {'inputs':>7} {'failures':>8} {'known':>6}"]
    for name, r in results.items():
        lines.append(f"{name:<18} {r['inputs']:>7} {len(r['failures']):>8} {len(r['known']):>6}")
    for r in results.values():
        lines += [f"FAIL {f}" for f in r["failures"]]
    if not title.startswith("replay"):  # the command lines meet only some known failures
        return lines
    return lines + [f"STALE known failure (matched nothing): {s}" for s in stale(results, targets)]


def stale(results: dict, targets) -> list[str]:
    used = {k["pattern"] for r in results.values() for k in r["known"]}
    return [k.pattern for k in targets.KNOWN_FAILURES if k.pattern not in used]


# --------------------------------------------------------------------------- campaigns
def campaign(names: list[str], seconds: float, extra: list[str]) -> int:
    """``seconds`` per target, each in its own process; a table of executions per target."""
    try:
        import atheris  # noqa: F401
        engine = "atheris (libFuzzer, coverage-guided)"
    except ImportError:
        engine = "random structured mutations (atheris is not installed: not coverage-guided)"
    print(f"engine: {engine}; {seconds:g} s per target", flush=True)
    rows, bad = [], 0
    for name in names:
        cmd = [sys.executable, str(Path(__file__)), "campaign-one", name, "--seconds",
               str(seconds), *(["--", *extra] if extra else [])]
        log = OUT / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:  # libFuzzer's progress, readable while it runs
            proc = subprocess.run(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                  timeout=seconds * 3 + 600)
        stats = _campaign_stats(log.read_text(errors="replace"))
        ok = proc.returncode == 0
        bad += not ok
        rows.append(f"{name:<18} {stats['runs']:>10} {stats['seconds']:>7} {stats['cov']:>6} "
                    f"{stats['known']:>6}  {'ok' if ok else 'FAILED: see ' + str(log)}")
        print(rows[-1], flush=True)
    print(f"{'target':<18} {'executions':>10} {'seconds':>7} {'cov':>6} {'known':>6}  result")
    print("\n".join(rows))
    return 1 if bad else 0


def _campaign_stats(log: str) -> dict:
    """Executions, seconds, coverage and known failures from a campaign's log (libFuzzer's
    final statistics, or the fallback's EXECUTIONS line)."""
    runs = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    rate = re.findall(r"stat::average_exec_per_sec: +(\d+)", log)
    ours = re.findall(r"^EXECUTIONS (\d+) SECONDS (\d+)", log, flags=re.M)
    cov = re.findall(r"cov: (\d+)", log)
    if ours:
        runs_n, secs = ours[-1]
    elif runs:
        runs_n = runs[-1]
        secs = str(round(int(runs_n) / max(1, int(rate[-1])))) if rate else "?"
    else:
        runs_n, secs = "?", "?"
    return {"runs": runs_n, "seconds": secs, "cov": cov[-1] if cov else "-",
            "known": len(re.findall(r"^KNOWN ", log, flags=re.M))}


def campaign_one(name: str, seconds: float, extra: list[str]) -> int:
    """One target's campaign in this process."""
    root = Path(tempfile.mkdtemp(prefix="msakit-fuzz-"))
    os.chdir(root)
    try:
        import atheris
    except ImportError:
        return _random_campaign(name, seconds, root)
    with atheris.instrument_imports(include=["msakit"]):
        import msakit.api  # noqa: F401 - every module the targets reach, instrumented
        import msakit.extract.corpus  # noqa: F401
        import msakit.extract.merge  # noqa: F401
        import msakit.extract.vision  # noqa: F401
        import msakit.reporting.plots  # noqa: F401
        import msakit.reporting.report  # noqa: F401
        import msakit.rerun  # noqa: F401
    return _atheris_campaign(atheris, name, seconds, root, extra)


def _atheris_campaign(atheris, name: str, seconds: float, root: Path, extra: list[str]) -> int:
    import targets

    ws = targets.Workspace(root)
    _warm_up(ws, [name])
    targets.cap_address_space()
    target, generator = targets.TARGETS[name], targets.Generator(targets.TARGETS[name])
    corpus = OUT / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    crashing = {f for k in targets.KNOWN_FAILURES for f in k.files}
    for f in targets.corpus_files(name):
        if f"{name}/{f.name}" not in crashing:
            shutil.copy(f, corpus / f.name)
    crashes = OUT / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)

    def one_input(data: bytes) -> None:
        failures = targets.check(target, data, ws)
        unknown = [f for f in failures if targets.known(f) is None]
        for f in failures:
            if f not in unknown:
                print(f"KNOWN {f}", flush=True)
        if unknown:
            raise AssertionError("\n".join(unknown))

    def mutate(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.4:
            return atheris.Mutate(data, max_size)
        return generator.mutate(data, rng)[:max_size]

    largest = max((len(f) for f in generator.files), default=4096)
    argv = [sys.argv[0], f"-max_total_time={int(seconds)}", "-timeout=120",
            "-rss_limit_mb=8192", f"-max_len={min(1 << 20, max(1 << 18, 2 * largest))}",
            f"-artifact_prefix={crashes}/{name}-", "-print_final_stats=1", *extra, str(corpus)]
    atheris.Setup(argv, one_input, custom_mutator=mutate)
    atheris.Fuzz()
    return 0


def _random_campaign(name: str, seconds: float, root: Path) -> int:
    """Without atheris: structured mutations of the corpus for ``seconds`` (not coverage-guided;
    a crash ends the process, and its input is in fuzz-out/crashes/)."""
    import targets

    ws = targets.Workspace(root)
    _warm_up(ws, [name])
    targets.cap_address_space()
    generator = targets.Generator(targets.TARGETS[name])
    crashes = OUT / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    offset, count, start, bad = random.randrange(1 << 40), 0, time.monotonic(), 0
    while time.monotonic() - start < seconds:
        data = generator.case(offset + count)
        (crashes / f"{name}-current").write_bytes(data)  # left behind if this input crashes
        for f in targets.check(targets.TARGETS[name], data, ws):
            if targets.known(f) is None:
                bad += 1
                (crashes / f"{name}-gen-{offset + count}").write_bytes(data)
                print(f"FAIL {f}", flush=True)
            else:
                print(f"KNOWN {f}", flush=True)
        count += 1
    (crashes / f"{name}-current").unlink(missing_ok=True)
    print(f"EXECUTIONS {count} SECONDS {int(time.monotonic() - start)}", flush=True)
    return 1 if bad else 0


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    import targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for mode in ("replay", "cli"):
        p = sub.add_parser(mode)
        p.add_argument("--generated", type=int, default=CI_GENERATED if mode == "replay" else 0)
        p.add_argument("--report", help="write the results as JSON to this file")
        p.add_argument("targets", nargs="*")
    p = sub.add_parser("fuzz")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("targets", nargs="*")
    p = sub.add_parser("campaign-one")
    p.add_argument("target")
    p.add_argument("--seconds", type=float, default=300)
    p = sub.add_parser("worker")
    p.add_argument("--mode", required=True)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--generated", type=int, default=0)
    p.add_argument("--status-fd", required=True)
    p.add_argument("targets", nargs="*")
    p = sub.add_parser("repro")
    p.add_argument("target")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("minimize")
    p.add_argument("target")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    names = getattr(args, "targets", None) or list(targets.TARGETS)
    unknown = [n for n in (names if isinstance(names, list) else []) if n not in targets.TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; "
                     f"targets: {', '.join(targets.TARGETS)}")
    if args.command == "worker":
        return worker(args)
    if args.command == "campaign-one":
        return campaign_one(args.target, args.seconds, extra)
    if args.command == "fuzz":
        return campaign(names, args.seconds, extra)
    if args.command == "repro":
        return _repro(args.target, args.files)
    if args.command == "minimize":
        import minimize

        return minimize.main(args.target, Path(args.file), Path(args.out))
    results = supervise(args.command, names, args.generated)
    if args.report:
        Path(args.report).write_text(json.dumps(
            {"results": results, "stale": stale(results, targets)}, indent=1))
    lines = summary(results, f"{args.command}: corpus" + (
        f" + {args.generated} generated inputs per target" if args.command == "replay" else ""))
    print("\n".join(lines))
    return 1 if any(line.startswith(("FAIL", "STALE")) for line in lines) else 0


def _repro(name: str, files: list[str]) -> int:
    import targets

    root = Path(tempfile.mkdtemp(prefix="msakit-fuzz-"))
    try:
        ws = targets.Workspace(root)
        bad = 0
        for f in files:
            failures = targets.check(targets.TARGETS[name], Path(f).read_bytes(), ws)
            print(f"{f}: " + ("; ".join(failures) if failures else "keeps the contract"))
            bad += bool(failures)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
