#!/usr/bin/env python
"""Run a list of main.py command lines as a resumable sweep, one log per line.

    python system/sweep.py LINES.txt [--jobs 2] [--report DIR] [--dry_run]
    bash run_me.sh cpu --print | python system/sweep.py --jobs 2 --report results/cpu_suite/report

Input: one `python system/main.py ARGS...` per line (from the file, or stdin when no file or
`-` is given); blank lines and `#` comments are ignored, anything else is refused before any
run starts (one `error:` line, exit status 2).

Each line is run as `python system/main.py ARGS --resume`, at most --jobs at a time:
  * a line whose runs (repetitions -pv .. -t-1) are all finished (their finished mark,
    <out>/<name>/checkpoints/finished.json, written with the line's flags, and <out>/<name>.h5
    are there) is skipped and no process is started;
  * otherwise main.py's --resume continues each unfinished run from its newest checkpoint,
    starts it afresh when it has none, and leaves its finished repetitions alone;
  * its output goes to one log beside its results, <out>/<dataset>_<algorithm>_<goal>.log,
    appended to on every attempt after a `====` header naming the command and the time
    (`_reps<first>-<last>` is added when two lines share an --out and a result name);
  * the terminal gets one line per event: start, done (time, best accuracy), skipped,
    FAILED (exit status, the log's last error line, the log's path).
At the end: a summary, then with --report DIR, system/report.py over the --out folders of the
lines. Exit status 0 when every line finished, 1 when one failed (or the report did), 2 for
a usage mistake, 130 when interrupted.

Ctrl-C (or SIGTERM/SIGHUP) stops the runs (SIGINT, then SIGKILL after a grace period or a
second Ctrl-C); run the same command again to resume.
"""
import argparse
import contextlib
import glob
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

SYSTEM_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SYSTEM_DIR)
for path in (SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

MAIN = os.path.join(SYSTEM_DIR, "main.py")
#: seconds between looks at the running children
POLL_SECONDS = 0.2
#: seconds a run gets to end after SIGINT (its own KeyboardInterrupt handling) before SIGKILL
STOP_GRACE_SECONDS = 20.0
#: tokens a shell would interpret: the runner starts main.py directly, so it refuses them
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")"}
SHELL_SYNTAX = re.compile(r"^\d*[<>]|[$`]|^~")


class UsageError(Exception):
    """A mistake in the sweep's input or flags: one `error:` line, exit status 2."""


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop as for Ctrl-C."""


# ---- reading the lines ---------------------------------------------------------------------
@dataclass
class Run:
    """One repetition of a line: its result name, results file and run folder."""
    index: int
    name: str
    results: str
    folder: str


@dataclass
class Line:
    number: int          # 1-based position in the sweep, the k of [k/N]
    where: str           # file:line, for messages
    argv: list           # main.py's arguments as written
    args: object         # parsed, with the algorithm's defaults filled in
    runs: list
    log: str = ""
    label: str = ""
    outcome: str = ""    # done / skipped / failed / interrupted
    detail: str = ""
    best: list = field(default_factory=list)


def read_entries(text: str, source: str) -> list:
    """[(where, text)] of the lines to run: blank lines and # comments left out."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            entries.append((f"{source}:{number}", stripped))
    return entries


def is_main(token: str) -> bool:
    """`system/main.py` as written in run_me.sh, or any path to this repository's main.py."""
    if os.path.normpath(token) == os.path.join("system", "main.py"):
        return True
    return os.path.exists(token) and os.path.realpath(token) == os.path.realpath(MAIN)


def split_line(text: str, where: str) -> list:
    """main.py's arguments from `python system/main.py ARGS...`; UsageError otherwise."""
    expected = "expected `python system/main.py ARGS...`"
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as error:
        raise UsageError(f"{where}: {error} ({expected})") from None
    if len(tokens) < 2 or not re.fullmatch(r"python[0-9.]*", os.path.basename(tokens[0])) \
            or not is_main(tokens[1]):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise UsageError(f"{where}: {expected}, got {shown!r}")
    for token in tokens[2:]:
        if token in SHELL_OPERATORS or SHELL_SYNTAX.search(token):
            raise UsageError(f"{where}: {token!r} is shell syntax, which the runner does not interpret: "
                             f"write the arguments as main.py should get them")
    return tokens[2:]


def parse_main_args(argv: list, where: str):
    """main.py's own parsing of `argv` with the algorithm's defaults; its one-line complaint
    (cli prints `error: ...` and exits 2) becomes a UsageError naming the line."""
    from cli import apply_algorithm_defaults, parse_args
    from utils.errors import UserError

    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            args = parse_args(argv)
            apply_algorithm_defaults(args)
    except SystemExit as end:
        if not end.code:  # -h or --list_algorithms: prints, runs nothing
            raise UsageError(f"{where}: the line prints information and runs nothing (-h, --list_algorithms)") \
                from None
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        message = lines[-1] if lines else f"main.py's flags refused it (exit {end.code})"
        raise UsageError(f"{where}: {message.removeprefix('error: ')}") from None
    except UserError as error:
        raise UsageError(f"{where}: {error}") from None
    return args


def runs_of(args) -> list:
    """The repetitions a line produces, named as main.py names them."""
    from utils.result_utils import result_name

    runs = []
    for index in range(args.prev, args.times):
        name = result_name(args.dataset, args.algorithm, args.goal, index)
        runs.append(Run(index, name, os.path.join(args.out, name + ".h5"), os.path.join(args.out, name)))
    return runs


def stem_of(args) -> str:
    """The result name without the repetition index: the log's name."""
    return f"{args.dataset}_{args.algorithm}_{args.goal}"


def build_lines(entries: list) -> list:
    """Lines with their runs and logs; refuses lines that would write the same result file (the
    second would overwrite or refuse the first) and gives lines sharing a log name (same
    --out, disjoint repetitions) one log each."""
    lines = []
    for number, (where, text) in enumerate(entries, 1):
        argv = split_line(text, where)
        args = parse_main_args(argv, where)
        line = Line(number, where, argv, args, runs_of(args))
        line.label = f"{stem_of(args)} ({args.out})"
        lines.append(line)
    writers = {}
    for line in lines:
        for run in line.runs:
            key = os.path.realpath(run.results)
            if key in writers:
                raise UsageError(f"{line.where}: writes {run.results}, as {writers[key].where} does: give one of "
                                 f"them its own --out or -go")
            writers[key] = line
    by_log = {}
    for line in lines:
        by_log.setdefault(os.path.realpath(os.path.join(line.args.out, stem_of(line.args))), []).append(line)
    for sharing in by_log.values():
        for line in sharing:
            suffix = "" if len(sharing) == 1 else f"_reps{line.args.prev}-{line.args.times - 1}"
            line.log = os.path.join(line.args.out, stem_of(line.args) + suffix + ".log")
    return lines


# ---- what is on disk -----------------------------------------------------------------------
def same_flags(saved: dict, args) -> bool:
    """Whether a finished mark was written with this line's flags, compared as main.py's
    --resume compares them, except for flags main.py fills in from the data (-nb left unset):
    a line that differs is run, and main.py refuses it in one line, naming the flags."""
    from utils.resume import comparable_config

    current = comparable_config(args)
    for key in current:  # what the saved flags hold beyond these (other algorithms' options) is not compared
        if current[key] is None:
            continue
        if json.loads(json.dumps(current[key], default=str)) != saved.get(key):
            return False
    return True


def finished_mark(run: Run) -> Optional[dict]:
    from utils.checkpoints import CheckpointStore

    return CheckpointStore(run.folder).finished()


def run_is_finished(run: Run, args) -> bool:
    mark = finished_mark(run)
    return bool(mark) and os.path.exists(run.results) and same_flags(mark.get("config", {}), args)


def resume_state(line: Line) -> str:
    """What --resume will find, for the start message: '' when every run starts afresh."""
    from utils.checkpoints import CheckpointStore

    parts = []
    for run in line.runs:
        mark = finished_mark(run)
        if mark and not same_flags(mark.get("config", {}), line.args):
            parts.append(f"rep {run.index} finished with other flags: main.py will refuse it")
        elif mark:
            parts.append(f"rep {run.index} finished")
        else:
            rounds = CheckpointStore(run.folder).rounds()
            if rounds:
                parts.append(f"rep {run.index} after round {rounds[-1]}")
    return ", ".join(parts)


def best_accuracies(line: Line) -> list:
    """Each finished run's best test accuracy: its finished mark, else its results file."""
    values = []
    for run in line.runs:
        mark = finished_mark(run) or {}
        if "best_test_acc" in mark:
            values.append(float(mark["best_test_acc"]))
        elif os.path.exists(run.results):
            try:
                from utils.result_utils import read_results

                values.append(float(max(read_results(run.results)[0]["rs_test_acc"])))
            except (OSError, KeyError, ValueError):
                pass
    return values


def describe_best(values: list) -> str:
    return f"best acc {', '.join(f'{v:.4f}' for v in values)}" if values else "no accuracy recorded"


def last_error_line(log: str, offset: int) -> str:
    """The last line of this attempt's output that reads as an error (main.py's `error:` line,
    an exception's last line), else its last line."""
    try:
        with open(log, errors="replace") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().splitlines() if line.strip() and not line.startswith("====")]
    except OSError:
        return ""
    pattern = re.compile(r"^(error:|[\w.]*(Error|Exception|Interrupt)\b|interrupted:|Killed)")
    chosen = next((line for line in reversed(lines) if pattern.search(line)), lines[-1] if lines else "")
    return chosen if len(chosen) <= 240 else chosen[:237] + "..."


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def command_of(line: Line) -> list:
    """The process a line starts: this interpreter, this repository's main.py, --resume added."""
    main = os.path.relpath(MAIN) if not os.path.relpath(MAIN).startswith("..") else MAIN
    return [sys.executable, main, *line.argv, *([] if line.args.resume else ["--resume"])]


# ---- running -------------------------------------------------------------------------------
class Sweep:
    def __init__(self, lines: list, jobs: int, say):
        self.lines, self.jobs, self.say = lines, jobs, say
        self.total = len(lines)
        self.running = {}  # Popen -> (line, started, log offset)
        self.progress = None  # the sweep's one bar, on a terminal

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def tag(self, line: Line) -> str:
        return f"[{line.number}/{self.total}]"

    def run(self) -> None:
        pending = deque(self.lines)
        while pending or self.running:
            while pending and len(self.running) < self.jobs:
                line = pending.popleft()
                if all(run_is_finished(run, line.args) for run in line.runs):
                    line.outcome, line.best = "skipped", best_accuracies(line)
                    self.say(f"{self.tag(line)} skip {line.label}: finished ({describe_best(line.best)})")
                    self.advance()
                else:
                    self.start(line)
            time.sleep(POLL_SECONDS)
            for process in [p for p in self.running if p.poll() is not None]:
                self.finish(process)
                self.advance()

    def start(self, line: Line) -> None:
        command = command_of(line)
        state = resume_state(line)
        try:
            os.makedirs(line.args.out, exist_ok=True)
            with open(line.log, "a") as log:
                offset = log.tell()
                log.write(f"==== {stamp()} start: {shlex.join(command)}\n")
                log.flush()
                # Own session: Ctrl-C reaches the sweep alone, which stops its runs in order.
                # Unbuffered: the log follows the run (tail -f) instead of filling at its end.
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except OSError as error:
            line.outcome, line.detail = "failed", f"cannot start: {error}"
            self.say(f"{self.tag(line)} FAILED {line.label}: {line.detail}")
            self.advance()
            return
        self.running[process] = (line, time.time(), offset)
        self.say(f"{self.tag(line)} start {line.label}" + (f", resuming ({state})" if state else ""))

    def footer(self, line: Line, text: str) -> None:
        try:
            with open(line.log, "a") as log:
                log.write(f"==== {stamp()} {text}\n")
        except OSError:
            pass

    def finish(self, process, stopped: bool = False) -> None:
        line, started, offset = self.running.pop(process)
        took = duration(time.time() - started)
        code = process.returncode
        status = f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        if stopped:
            line.outcome = "interrupted"
            self.footer(line, f"stopped by the sweep after {took} ({status}, pid {process.pid})")
            self.say(f"{self.tag(line)} stopped {line.label} after {took}; log: {line.log}")
        elif code == 0:
            line.outcome, line.best = "done", best_accuracies(line)
            self.footer(line, f"done after {took} (exit 0, pid {process.pid})")
            self.say(f"{self.tag(line)} done {line.label} in {took} ({describe_best(line.best)})")
        else:
            line.outcome, line.detail = "failed", last_error_line(line.log, offset)
            self.footer(line, f"FAILED after {took} ({status}, pid {process.pid})")
            self.say(f"{self.tag(line)} FAILED ({status}) {line.label} after {took}"
                     + (f": {line.detail}" if line.detail else "") + f"; log: {line.log}")

    def stop(self) -> None:
        """SIGINT to every run (main.py ends with a note on where its results are), SIGKILL to
        those still there after STOP_GRACE_SECONDS or a second Ctrl-C."""
        if not self.running:
            return
        self.say(f"stopping {len(self.running)} run(s) (Ctrl-C again to kill them at once)")
        self.signal_all(signal.SIGINT)
        deadline = time.time() + STOP_GRACE_SECONDS
        try:
            while any(p.poll() is None for p in self.running) and time.time() < deadline:
                time.sleep(POLL_SECONDS)
        except (KeyboardInterrupt, Stop):
            pass
        self.signal_all(signal.SIGKILL)
        for process in list(self.running):
            process.wait()
            self.finish(process, stopped=process.returncode != 0)  # one that just finished counts as done

    def signal_all(self, which) -> None:
        for process in self.running:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, which)  # the run and anything it started (Ray workers)
                except (ProcessLookupError, PermissionError):
                    pass


def raise_stop(signum, frame):
    raise Stop()


def summary(lines: list) -> list:
    counts = {outcome: [line for line in lines if line.outcome == outcome]
              for outcome in ("done", "skipped", "failed", "interrupted")}
    not_started = [line for line in lines if not line.outcome]
    text = [f"sweep: {len(lines)} line(s): {len(counts['done'])} done, {len(counts['skipped'])} skipped "
            f"(already finished), {len(counts['failed'])} failed"
            + (f", {len(counts['interrupted'])} interrupted" if counts["interrupted"] else "")
            + (f", {len(not_started)} not started" if not_started else "")]
    for line in counts["failed"]:
        text.append(f"  failed: {line.label}: {line.detail or 'see its log'}; log: {line.log}")
    for line in counts["interrupted"]:
        text.append(f"  interrupted: {line.label}; log: {line.log}")
    return text


def write_report(lines: list, folder: str, say) -> bool:
    """system/report.py over the --out folders that hold results (in the lines' order)."""
    import report

    outs = []
    for line in lines:
        if line.args.out not in outs and glob.glob(os.path.join(glob.escape(line.args.out), "*.h5")):
            outs.append(line.args.out)
    if not outs:
        say(f"report: no results to report yet, {folder} not written")
        return False
    say(f"report: python system/report.py {shlex.join(outs)} --out {shlex.quote(folder)}")
    return report.main([*outs, "--out", folder]) == 0


# ---- command line --------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{' '.join(message.split())}; {self.prog} -h explains the flags")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python system/sweep.py", description=__doc__.split("\n\n")[0],
                    epilog="\n\n".join(__doc__.split("\n\n")[2:]),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lines", nargs="?", default="-",
                        help="file of `python system/main.py ARGS...` lines (default -: stdin)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="afterwards, write system/report.py's tables over the lines' --out folders to DIR")
    parser.add_argument("--dry_run", action="store_true",
                        help="print which lines would run and which are finished; run nothing")
    parser.add_argument("--rerun", metavar="COMMAND", default=None,
                        help="how to repeat this sweep, named in the resume hint (run_me.sh passes its own)")
    return parser


def read_input(source: str) -> tuple:
    if source == "-":
        if sys.stdin.isatty():
            raise UsageError("no lines: give a file of main.py lines, or pipe them in")
        return sys.stdin.read(), "stdin"
    try:
        with open(source) as f:
            return f.read(), source
    except OSError as error:
        raise UsageError(f"cannot read {source}: {error.strerror or error}") from None


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
        if args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        text, source = read_input(args.lines)
        lines = build_lines(read_entries(text, source))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rerun = args.rerun or ("the same command again" if args.lines == "-" else
                           shlex.join(["python", os.path.relpath(__file__), *(sys.argv[1:] if argv is None else argv)]))
    if not lines:
        print("sweep: no lines to run")
        return 0
    if args.dry_run:
        return dry_run(lines)

    progress = None
    if sys.stdout.isatty():
        from tqdm.auto import tqdm  # one bar for the whole sweep; the runs' own bars are off in their logs

        progress = tqdm(total=len(lines), desc="sweep", unit="line", dynamic_ncols=True)
        say = progress.write
    else:
        def say(message):
            print(message, flush=True)

    sweep = Sweep(lines, args.jobs, say)
    sweep.progress = progress
    previous = {which: signal.signal(which, raise_stop) for which in (signal.SIGTERM, signal.SIGHUP)}
    interrupted = False
    try:
        sweep.run()
    except (KeyboardInterrupt, Stop):
        interrupted = True
        try:
            sweep.stop()
        except (KeyboardInterrupt, Stop):
            sweep.signal_all(signal.SIGKILL)
    finally:
        for which, handler in previous.items():
            signal.signal(which, handler)
        if progress is not None:
            progress.close()
    for text in summary(lines):
        print(text, flush=True)
    if interrupted:
        print(f"interrupted: to resume, run {rerun}: finished runs are skipped, the others continue from "
              f"their last checkpoint", file=sys.stderr)
        return 130
    failed = any(line.outcome == "failed" for line in lines)
    if args.report and not write_report(lines, args.report, lambda m: print(m, flush=True)):
        failed = True
    return 1 if failed else 0


def dry_run(lines: list) -> int:
    for line in lines:
        tag = f"[{line.number}/{len(lines)}]"
        if all(run_is_finished(run, line.args) for run in line.runs):
            print(f"{tag} would skip {line.label}: finished ({describe_best(best_accuracies(line))})")
        else:
            state = resume_state(line)
            print(f"{tag} would run {line.label}" + (f", resuming ({state})" if state else "")
                  + f": {shlex.join(command_of(line))}; log: {line.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
