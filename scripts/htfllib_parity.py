#!/usr/bin/env python
"""Every baseline run twice on the same files: once in HtFLlib's own code, once in this library.

    python scripts/htfllib_parity.py --htfllib /path/to/HtFLlib                 # 9 baselines, 10 rounds
    python scripts/htfllib_parity.py --htfllib /path/to/HtFLlib --algorithms FedGH --rounds 5
    python scripts/htfllib_parity.py --htfllib /path/to/HtFLlib --dry_run       # commands and edits only

What it does, in a work folder (`--work`, default a new temporary folder that is kept):

1. writes one PFLlib-format dataset with this library's generator (MNIST5k, 20 clients,
   Dirichlet 0.1) into `<work>/data/<name>`;
2. copies the HtFLlib checkout named by `--htfllib` to `<work>/HtFLlib` (the checkout itself is
   only read), links the dataset at `<work>/HtFLlib/dataset/<name>` where HtFLlib's
   `utils/data_utils.py` reads it (`../dataset/<name>/` from its `system/`), and applies a few
   small, named text edits to the copy (`HTFLLIB_EDITS`: CPU threads, seeding, this library's
   CPU model family built from HtFLlib's own FedAvgCNN and ResNets, and what it needs to import
   offline); each edit fails loudly when its anchor text is missing;
3. checks that both libraries read the same arrays (a SHA-256 over every client's x and y, as
   each library's own loader returns them);
4. runs every algorithm in both libraries with the same flags (`-lbs 10 -lr 0.01 -ls 1 -gr R
   -nc 20 -jr 1 -fd 512 -dev cpu` plus the algorithm's flags from HtFLlib's `system/total.sh`),
   `--jobs` at a time, each with its log in `<work>/logs/`; a failed run is reported with its
   log and does not stop the others;
5. reads both result files (`rs_test_acc`) and writes a markdown table (best accuracy over the
   evaluations each library makes), the curves as CSV and, with matplotlib, as a PNG.

Round counts: HtFLlib's `-gr R` trains R+1 rounds and evaluates before each of them, so its
last round is never evaluated; this library trains R rounds and evaluates before each and
after the last. Both therefore make R+1 evaluations, evaluation k coming after k rounds of
training; HtFLlib trains one more round that no evaluation sees.
"""
import argparse
import concurrent.futures
import csv
import hashlib
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")

DEFAULT_ALGORITHMS = ("FedProto", "FD", "LG-FedAvg", "FML", "FedKD", "FedGen", "FedGH", "FedTGP", "Local")
DATASET_NAME = "MNIST5k-parity"
MODEL_FAMILY = "HtFE-cpu"
NUM_CLASSES = 10
GOAL = "parity"

#: the flags every run gets on both sides, before -gr and the algorithm's own flags
COMMON_FLAGS = ("-lbs", "10", "-lr", "0.01", "-ls", "1", "-nc", "20", "-jr", "1", "-fd", "512", "-dev", "cpu")

#: each algorithm's flags as HtFLlib's system/total.sh gives them (checked against the checkout's
#: total.sh at run time: where that file says otherwise, it wins and the script says so)
TOTAL_SH_FLAGS: Dict[str, Tuple[str, ...]] = {
    "Local": (),
    "FedProto": ("-lam", "10"),
    "FedGen": ("-nd", "32", "-glr", "0.1", "-hd", "512", "-se", "100"),
    "FD": ("-lam", "1"),
    "FML": ("-al", "0.5", "-bt", "0.5"),
    "FedKD": ("-mlr", "0.01", "-Ts", "0.95", "-Te", "0.98"),
    "LG-FedAvg": (),
    "FedGH": ("-slr", "0.01", "-se", "1"),
    "FedTGP": ("-lam", "10", "-se", "100", "-mart", "100"),
}

#: total.sh's flags that set the run rather than the algorithm: replaced by COMMON_FLAGS and ours
TOTAL_SH_RUN_FLAGS = frozenset({"-t", "-ab", "-lr", "-jr", "-lbs", "-ls", "-nc", "-ncl", "-data", "-m", "-fd",
                                "-did", "-algo", "-gr", "-dev", "-go"})

#: points by which this library may trail HtFLlib before the table flags it
SHORTFALL_POINTS = 1.5


# --- edits to the copy of HtFLlib -------------------------------------------------------------

class EditError(RuntimeError):
    """An edit's anchor text is missing from (or repeated in) the file it edits."""


@dataclass(frozen=True)
class Edit:
    """Replace `anchor` (found exactly `count` times) in `path` (relative to the HtFLlib root)."""
    name: str
    path: str
    anchor: str
    replacement: str
    why: str
    count: int = 1

    def apply(self, text: str) -> str:
        found = text.count(self.anchor)
        if found != self.count:
            raise EditError(f"edit {self.name!r}: the anchor text was found {found} time(s) in {self.path}, "
                            f"expected {self.count}; HtFLlib's code differs from the version this edit was "
                            f"written for (e959261). Anchor:\n{self.anchor}")
        return text.replace(self.anchor, self.replacement)

    def describe(self) -> str:
        return (f"[{self.name}] {self.path}: {self.why}\n"
                + indent("- ", self.anchor) + "\n" + indent("+ ", self.replacement))


def indent(prefix: str, text: str) -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").split("\n"))


def htfllib_edits(seed: int = 0, threads: int = 1) -> List[Edit]:
    """The edits applied to HtFLlib's copy, in order."""
    family = (
        '        elif args.model_family == "HtFE-cpu":  # parity edit: this library\'s CPU family\n'
        "            args.models = [\n"
        "                'FedAvgCNN(in_features=3, num_classes=args.num_classes, dim=1600)', # for 32x32 img\n"
        "                'resnet4(num_classes=args.num_classes)', \n"
        "                'resnet8(num_classes=args.num_classes)', \n"
        "            ]\n\n"
        '        elif args.model_family == "HtFE-img-3":\n')
    return [
        Edit("threads", "system/main.py", 'warnings.simplefilter("ignore")\n',
             'warnings.simplefilter("ignore")\n'
             f"torch.set_num_threads({threads})  # parity edit: the machine's cores are shared\n",
             f"torch uses {threads} CPU thread(s), as this library's runs (--threads {threads})"),
        Edit("seed", "system/main.py", "torch.manual_seed(0)\n",
             f"torch.manual_seed({seed})  # parity edit: seed torch, NumPy and random alike\n"
             f"np.random.seed({seed})\n"
             f"import random as _parity_random; _parity_random.seed({seed})\n",
             f"seed torch's start, NumPy (client order) and random (upload order) with --seed {seed}; "
             "HtFLlib's clients still reset torch's seed to 0 when each is created, as in its code"),
        Edit("family", "system/main.py", '        elif args.model_family == "HtFE-img-3":\n', family,
             f"add this library's CPU family {MODEL_FAMILY}: HtFLlib's own FedAvgCNN (dim 1600 for 32x32), "
             "resnet4 and resnet8, whose last layer BaseHeadSplit replaces by AdaptiveAvgPool1d(fd) and a "
             "Linear(fd, classes) head, as for its HtFE-img-N families"),
        Edit("fedl2g-import", "system/main.py",
             "from flcore.servers.serverl2g_feat import FedL2G as FedL2G_feat\n"
             "from flcore.servers.serverl2g_logit import FedL2G as FedL2G_logit\n",
             "try:  # parity edit: FedL2G needs the package `higher`, which no baseline here uses\n"
             "    from flcore.servers.serverl2g_feat import FedL2G as FedL2G_feat\n"
             "    from flcore.servers.serverl2g_logit import FedL2G as FedL2G_logit\n"
             "except ImportError as _parity_error:\n"
             "    print('parity edit: FedL2G not imported:', _parity_error)\n",
             "main.py imports FedL2G at start, which needs `higher`; import it only where it is installed"),
        Edit("calmsize", "system/utils/mem_utils.py", "from calmsize import size as calmsize\n",
             "try:  # parity edit: `calmsize` only formats the memory report at the end\n"
             "    from calmsize import size as calmsize\n"
             "except ImportError:\n"
             "    calmsize = float\n",
             "the memory report's formatter `calmsize` is optional"),
        Edit("torch-load", "system/flcore/clients/clientbase.py",
             'torch.load(os.path.join(item_path, role + "_" + item_name + ".pt"))',
             'torch.load(os.path.join(item_path, role + "_" + item_name + ".pt"), weights_only=False)',
             "HtFLlib keeps whole models and dicts in .pt files between steps; torch >= 2.6 loads only "
             "tensors unless told weights_only=False"),
    ]


def apply_edits(root: str, edits: Sequence[Edit], dry_run: bool = False) -> None:
    """Apply `edits` to the files under `root` (every anchor is checked before any file is written)."""
    texts = {}
    for edit in edits:
        path = os.path.join(root, edit.path)
        if path not in texts:
            with open(path, encoding="utf-8") as f:
                texts[path] = f.read()
        texts[path] = edit.apply(texts[path])
    if not dry_run:
        for path, text in texts.items():
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)


# --- flags and commands ------------------------------------------------------------------------

def parse_total_sh(text: str) -> Dict[str, Tuple[str, ...]]:
    """{algorithm: its own flags} from HtFLlib's total.sh (the tokens after `-algo NAME` up to `>`)."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") or " -algo " not in line:
            continue
        tokens = shlex.split(line.split(">", 1)[0])
        at = tokens.index("-algo")
        name = tokens[at + 1]
        own, rest, i = [], tokens[at + 2:], 0  # total.sh gives the algorithm's own flags after -algo NAME
        while i < len(rest):
            takes_value = i + 1 < len(rest) and not re.fullmatch(r"-[A-Za-z]\w*", rest[i + 1])
            item = rest[i:i + 2] if takes_value else rest[i:i + 1]
            if item[0] not in TOTAL_SH_RUN_FLAGS:
                own += item
            i += len(item)
        found.setdefault(name, tuple(own))
    return found


def algorithm_flags(algorithms: Sequence[str], total_sh: Optional[str] = None) -> Tuple[Dict[str, tuple], List[str]]:
    """Each algorithm's flags (total.sh's where it gives them, else the built-in table) and notes."""
    parsed = parse_total_sh(total_sh) if total_sh is not None else {}
    flags, notes = {}, []
    for name in algorithms:
        if name in parsed:
            flags[name] = parsed[name]
            if name in TOTAL_SH_FLAGS and parsed[name] != TOTAL_SH_FLAGS[name]:
                notes.append(f"{name}: total.sh gives {' '.join(parsed[name]) or 'no flags'}, not the built-in "
                             f"{' '.join(TOTAL_SH_FLAGS[name]) or 'no flags'}: using total.sh's")
        elif name in TOTAL_SH_FLAGS:
            flags[name] = TOTAL_SH_FLAGS[name]
            if total_sh is not None:
                notes.append(f"{name}: not in total.sh; using the built-in flags "
                             f"{' '.join(TOTAL_SH_FLAGS[name]) or '(none)'}")
        else:
            flags[name] = ()
            notes.append(f"{name}: no flags known (neither total.sh nor the built-in table): HtFLlib's defaults")
    return flags, notes


def shared_flags(algorithm: str, rounds: int, own_flags: Sequence[str], dataset: str = DATASET_NAME) -> List[str]:
    """The flags both libraries get, in the same order."""
    return (["-data", dataset, "-m", MODEL_FAMILY, "-ncl", str(NUM_CLASSES), "-algo", algorithm, "-gr", str(rounds),
             "-go", GOAL] + list(COMMON_FLAGS) + list(own_flags))


def htfllib_command(python: str, algorithm: str, rounds: int, own_flags: Sequence[str],
                    dataset: str = DATASET_NAME) -> List[str]:
    """Run from `<work>/HtFLlib/system` (HtFLlib reads ../dataset and writes ../results)."""
    return [python, "-u", "main.py"] + shared_flags(algorithm, rounds, own_flags, dataset)


def library_command(python: str, algorithm: str, rounds: int, own_flags: Sequence[str], seed: int, threads: int,
                    data_root: str, out: str, dataset: str = DATASET_NAME,
                    extra: Sequence[str] = ()) -> List[str]:
    return ([python, "-u", os.path.join(SYSTEM_DIR, "main.py")] + shared_flags(algorithm, rounds, own_flags, dataset)
            + ["--seed", str(seed), "--threads", str(threads), "--data_root", data_root, "--out", out] + list(extra))


def result_file(folder: str, algorithm: str, dataset: str = DATASET_NAME) -> str:
    """`<dataset>_<algo>_<goal>_0.h5`, the name both libraries give their first repetition's results."""
    return os.path.join(folder, f"{dataset}_{algorithm}_{GOAL}_0.h5")


def read_accuracy(path: str) -> List[float]:
    """`rs_test_acc` of a result file (HtFLlib's or this library's), as fractions."""
    import h5py

    with h5py.File(path, "r") as f:
        if "rs_test_acc" not in f:
            raise KeyError(f"{path} holds no rs_test_acc (keys: {', '.join(f.keys())})")
        return [float(v) for v in f["rs_test_acc"][()]]


# --- the table and the curves ------------------------------------------------------------------

@dataclass
class Outcome:
    algorithm: str
    htfllib: Optional[List[float]] = None   # accuracy per evaluation, fractions
    library: Optional[List[float]] = None
    failures: List[str] = field(default_factory=list)  # "side: why (log path)"


def best_percent(curve: Optional[List[float]]) -> Optional[float]:
    finite = [v for v in curve or [] if math.isfinite(v)]
    return 100.0 * max(finite) if finite else None


def note_for(outcome: Outcome, rounds: int) -> str:
    notes = list(outcome.failures)
    hb, lb = best_percent(outcome.htfllib), best_percent(outcome.library)
    if hb is not None and lb is not None and hb - lb > SHORTFALL_POINTS:
        notes.append(f"this library {hb - lb:.2f} points below")
    for side, curve in (("HtFLlib", outcome.htfllib), ("library", outcome.library)):
        if curve is not None and len(curve) != rounds + 1:
            notes.append(f"{side}: {len(curve)} evaluations, expected {rounds + 1}")
        if curve is not None and best_percent(curve) is not None:
            at = max(range(len(curve)), key=lambda k: curve[k] if math.isfinite(curve[k]) else -1.0)
            notes.append(f"{side} best at eval {at}")
    return "; ".join(notes)


def format_percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def format_table(outcomes: Sequence[Outcome], rounds: int) -> str:
    """The markdown table: algorithm | HtFLlib best % | this library best % | difference | note."""
    lines = ["| algorithm | HtFLlib best % | this library best % | difference | note |",
             "|---|---:|---:|---:|---|"]
    for outcome in outcomes:
        hb, lb = best_percent(outcome.htfllib), best_percent(outcome.library)
        diff = "—" if hb is None or lb is None else f"{lb - hb:+.2f}"
        note = note_for(outcome, rounds).replace("|", "\\|")
        lines.append(f"| {outcome.algorithm} | {format_percent(hb)} | {format_percent(lb)} | {diff} | {note} |")
    return "\n".join(lines)


def curve_rows(outcomes: Sequence[Outcome]) -> Tuple[List[str], List[List[str]]]:
    """CSV header and rows: one row per evaluation, two columns (HtFLlib, library) per algorithm, in %."""
    header = ["evaluation"]
    columns = []
    for outcome in outcomes:
        for side, curve in (("HtFLlib", outcome.htfllib), ("library", outcome.library)):
            header.append(f"{outcome.algorithm} {side}")
            columns.append(curve or [])
    length = max((len(c) for c in columns), default=0)
    rows = [[str(k)] + [f"{100.0 * c[k]:.2f}" if k < len(c) else "" for c in columns] for k in range(length)]
    return header, rows


def format_curves(outcomes: Sequence[Outcome]) -> str:
    """Accuracy per evaluation (%), both libraries side by side, as a markdown table."""
    header, rows = curve_rows(outcomes)
    lines = ["| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(cell or "—" for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: str, outcomes: Sequence[Outcome]) -> None:
    header, rows = curve_rows(outcomes)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_png(path: str, outcomes: Sequence[Outcome], rounds: int) -> Optional[str]:
    """The curves, one panel per algorithm; None when written, else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"no PNG: matplotlib is not installed ({exc})"
    columns = min(3, max(1, len(outcomes)))
    rows = max(1, math.ceil(len(outcomes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, outcome in zip(axes.flat, outcomes):
        for side, curve, style in (("HtFLlib", outcome.htfllib, "o-"), ("this library", outcome.library, "s--")):
            if curve:
                ax.plot(range(len(curve)), [100.0 * v for v in curve], style, label=side, markersize=3)
        ax.set_title(outcome.algorithm)
        ax.set_xlabel(f"evaluation (after k rounds; -gr {rounds})")
        ax.set_ylabel("test accuracy %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(outcomes):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


ROUND_NOTE = ("Round counts: HtFLlib's `-gr {r}` trains {r1} rounds and evaluates before each, so its last round is "
              "never evaluated; this library trains {r} rounds and evaluates before each and after the last. Both "
              "make {r1} evaluations; evaluation k follows k rounds of training in both. Best = the highest "
              "`rs_test_acc` over those evaluations (accuracy over all clients' test samples pooled).")


# --- data ---------------------------------------------------------------------------------------

def dataset_command(python: str, data_root: str, seed: int, dataset: str = DATASET_NAME) -> List[str]:
    return [python, os.path.join(REPO_ROOT, "dataset", "generate_MNIST5k.py"), "noniid", "-", "dir",
            "--num_clients", "20", "--alpha", "0.1", "--seed", str(seed), "--out", os.path.join(data_root, dataset)]


def digest_arrays(pairs) -> str:
    """SHA-256 over (x, y) pairs of arrays, x as float32 and y as int64 bytes, in order."""
    import numpy as np

    digest = hashlib.sha256()
    for x, y in pairs:
        digest.update(np.ascontiguousarray(np.asarray(x, dtype=np.float32)).tobytes())
        digest.update(np.ascontiguousarray(np.asarray(y, dtype=np.int64)).tobytes())
    return digest.hexdigest()


#: run in HtFLlib's system/ folder: its own reader, the digest of every client's train then test arrays
HTFLLIB_DIGEST_CODE = """
import hashlib, sys
import numpy as np, torch
from utils.data_utils import read_client_data
digest = hashlib.sha256()
for idx in range({clients}):
    for is_train in (True, False):
        items = read_client_data({dataset!r}, idx, is_train=is_train)
        x = torch.stack([item[0] for item in items]).numpy()
        y = torch.stack([item[1] for item in items]).numpy()
        digest.update(np.ascontiguousarray(x.astype(np.float32)).tobytes())
        digest.update(np.ascontiguousarray(y.astype(np.int64)).tobytes())
print(digest.hexdigest())
"""


def htfllib_digest(python: str, system_dir: str, dataset: str, clients: int, env: dict) -> str:
    done = subprocess.run([python, "-c", HTFLLIB_DIGEST_CODE.format(clients=clients, dataset=dataset)],
                          cwd=system_dir, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"HtFLlib could not read {dataset}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


def library_digest(data_root: str, dataset: str, clients: int) -> str:
    if SYSTEM_DIR not in sys.path:
        sys.path.insert(0, SYSTEM_DIR)
    from utils.data_utils import load_federated_dataset

    data = load_federated_dataset(dataset, clients, None, data_root)
    pairs = []
    for client in data.clients:
        pairs += [(client.train_x.numpy(), client.train_y.numpy()), (client.test_x.numpy(), client.test_y.numpy())]
    return digest_arrays(pairs)


# --- running ------------------------------------------------------------------------------------

@dataclass
class Job:
    algorithm: str
    side: str          # "HtFLlib" or "library"
    command: List[str]
    cwd: str
    log: str
    results: str       # the h5 it writes


def run_job(job: Job, env: dict, timeout: Optional[float], lock: threading.Lock) -> Tuple[Job, int, float]:
    started = time.time()
    with open(job.log, "w") as log:
        log.write(f"# cwd: {job.cwd}\n# {shlex.join(job.command)}\n")
        log.flush()
        try:
            done = subprocess.run(job.command, cwd=job.cwd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout or None)
            code = done.returncode
        except subprocess.TimeoutExpired:
            log.write(f"\n# killed after {timeout} s (--timeout)\n")
            code = -9
    seconds = time.time() - started
    with lock:
        state = "done" if code == 0 else f"FAILED (exit {code}), log {job.log}"
        print(f"  {job.side:7s} {job.algorithm:10s} {state} in {seconds:.0f} s", flush=True)
    return job, code, seconds


def run_jobs(jobs: Sequence[Job], workers: int, env: dict, timeout: Optional[float]) -> Dict[Tuple[str, str], tuple]:
    lock = threading.Lock()
    finished = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_job, job, env, timeout, lock) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            job, code, seconds = future.result()
            finished[(job.algorithm, job.side)] = (code, seconds)
    return finished


#: a line per evaluation in each library's log: HtFLlib's serverbase.evaluate, this library's report
LOG_ACCURACY = {"HtFLlib": re.compile(r"^Averaged Test Accuracy: ([-+0-9.eE]+|nan)\s*$", re.M),
                "library": re.compile(r"after \d+ round\(s\): test acc ([-+0-9.eE]+|nan)", re.M)}


def accuracy_from_log(text: str, side: str) -> List[float]:
    """The accuracies a run printed, in order: the curve of a run that ended before writing its h5."""
    return [float(v) for v in LOG_ACCURACY[side].findall(text)]


def last_error(text: str) -> str:
    """The last line of a log that names an error (a traceback's last line), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line) or line.startswith("error:"):
            return line
    return lines[-1] if lines else "(empty log)"


def collect(jobs: Sequence[Job], finished: Dict[Tuple[str, str], tuple], algorithms: Sequence[str]) -> List[Outcome]:
    """Each algorithm's curves from the result files; for a run that failed or wrote none, the
    accuracies its log printed before it ended, with the error it ended on."""
    outcomes = {name: Outcome(name) for name in algorithms}
    for job in jobs:
        outcome = outcomes[job.algorithm]
        attribute = "htfllib" if job.side == "HtFLlib" else "library"
        code = finished.get((job.algorithm, job.side), (None, 0))[0]
        problem = None
        if code not in (0, None):
            problem = f"exit {code}"
        else:
            try:
                if not os.path.isfile(job.results):
                    raise OSError(f"no {os.path.basename(job.results)}")
                setattr(outcome, attribute, read_accuracy(job.results))
                continue
            except (OSError, KeyError) as exc:
                problem = f"no results: {exc}"
        try:
            with open(job.log, errors="replace") as f:
                text = f.read()
        except OSError:
            text = ""
        curve = accuracy_from_log(text, job.side)
        why = f"{job.side} failed ({problem}; {last_error(text)})".replace(job.results, os.path.basename(job.results))
        if curve:
            setattr(outcome, attribute, curve)
            why += f" after {len(curve)} evaluation(s), curve read from its log"
        outcome.failures.append(f"{why}; log {job.log}")
    return [outcomes[name] for name in algorithms]


def library_state() -> Tuple[str, str]:
    """This library's commit and `git status --short system/flcore` (read-only git calls)."""
    def git(*args):
        done = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else f"(git failed: {done.stderr.strip()})"

    return git("log", "-1", "--format=%h"), git("status", "--short", "system/flcore")


def describe_state(when: str, commit: str, status: str) -> str:
    return (f"This library {when}: commit `{commit}`; `git status --short system/flcore`: "
            + (f"\n```\n{status}\n```" if status else "clean"))


def copy_htfllib(source: str, target: str) -> None:
    """Copy the checkout, leaving out its git data and any earlier results or temp folders."""
    def ignore(folder, names):
        skip = {".git"}
        if os.path.abspath(folder) == os.path.abspath(source):
            skip |= {"results"}
        if os.path.abspath(folder) == os.path.abspath(os.path.join(source, "system")):
            skip |= {"temp"}
        return [name for name in names if name in skip]

    shutil.copytree(source, target, ignore=ignore, symlinks=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--htfllib", required=True,
                   help="a checkout (or exported copy) of HtFLlib; it is copied, never modified")
    p.add_argument("--algorithms", nargs="+", default=list(DEFAULT_ALGORITHMS),
                   help=f"algorithms to compare (default: {' '.join(DEFAULT_ALGORITHMS)})")
    p.add_argument("--rounds", type=int, default=10, help="-gr for both libraries (default 10)")
    p.add_argument("--seed", type=int, default=0, help="this library's --seed, and HtFLlib's NumPy/random/torch "
                                                       "start seed through an edit (default 0)")
    p.add_argument("--data_seed", type=int, default=1,
                   help="seed of the dataset's partition (default 1, the generator's default)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run, both libraries (default 1)")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary folder, kept)")
    p.add_argument("--out", default=None,
                   help="markdown report to write (default <work>/parity.md); the curves go beside it as "
                        ".csv and .png")
    p.add_argument("--python", default=sys.executable, help="Python for both libraries (default: this one)")
    p.add_argument("--timeout", type=float, default=0, help="seconds after which a run is killed (default: none)")
    p.add_argument("--library_flags", default="",
                   help="extra flags for this library's runs only, e.g. '--stored_order' (default: none)")
    p.add_argument("--flags", default="",
                   help="extra flags for both libraries' runs, after each algorithm's total.sh flags (the later "
                        "of two values wins on both sides), e.g. '-se 100' (default: none)")
    p.add_argument("--report_only", action="store_true",
                   help="run nothing: rebuild the report from the results already in --work")
    p.add_argument("--dry_run", action="store_true", help="print the commands and edits, run nothing")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    source = os.path.abspath(args.htfllib)
    for needed in ("system/main.py", "system/total.sh"):
        if not os.path.isfile(os.path.join(source, needed)):
            print(f"error: --htfllib {args.htfllib}: no {needed}; name HtFLlib's root folder", file=sys.stderr)
            return 2
    if args.rounds < 1 or args.jobs < 1 or args.threads < 1:
        print("error: --rounds, --jobs and --threads must be at least 1", file=sys.stderr)
        return 2
    edits = htfllib_edits(args.seed, args.threads)
    try:
        apply_edits(source, edits, dry_run=True)  # every anchor checked against the checkout before anything runs
    except EditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run and args.work is None:
        work = "<work>"
    else:
        work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="htfllib_parity_"))
    data_root = os.path.join(work, "data")
    htfl_root = os.path.join(work, "HtFLlib")
    htfl_system = os.path.join(htfl_root, "system")
    lib_out = os.path.join(work, "library_results")
    logs = os.path.join(work, "logs")
    report = os.path.abspath(args.out) if args.out else os.path.join(work, "parity.md")
    extra = shlex.split(args.library_flags)

    with open(os.path.join(source, "system", "total.sh")) as f:
        flags, notes = algorithm_flags(args.algorithms, f.read())
    flags = {name: list(own) + shlex.split(args.flags) for name, own in flags.items()}
    commit, status = library_state()

    print(f"work folder: {work}")
    print(f"this library: {REPO_ROOT} at commit {commit}; git status --short system/flcore: "
          f"{status or '(clean)'}")
    print("\nedits to HtFLlib's copy:")
    for edit in edits:
        print(edit.describe())
    print("(every anchor found in " + source + ")")
    for note in notes:
        print("note:", note)

    jobs = []
    for name in args.algorithms:
        jobs.append(Job(name, "HtFLlib", htfllib_command(args.python, name, args.rounds, flags[name]), htfl_system,
                        os.path.join(logs, f"HtFLlib_{name}.log"),
                        result_file(os.path.join(htfl_root, "results"), name)))
        jobs.append(Job(name, "library", library_command(args.python, name, args.rounds, flags[name], args.seed,
                                                         args.threads, data_root, lib_out, extra=extra),
                        REPO_ROOT, os.path.join(logs, f"library_{name}.log"), result_file(lib_out, name)))
    print("\ndataset:", shlex.join(dataset_command(args.python, data_root, args.data_seed)))
    print(f"link: {os.path.join(htfl_root, 'dataset', DATASET_NAME)} -> {os.path.join(data_root, DATASET_NAME)}")
    print("\ncommands (environment OMP_NUM_THREADS=MKL_NUM_THREADS=" f"{args.threads}):")
    for job in jobs:
        print(f"  [{job.side}] (cd {job.cwd} && {shlex.join(job.command)})")
    print("\n" + ROUND_NOTE.format(r=args.rounds, r1=args.rounds + 1))
    if args.dry_run:
        return 0

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1")
    digests = ("(not checked: --report_only)", "")
    if not args.report_only:
        os.makedirs(logs, exist_ok=True)
        if not os.path.isfile(os.path.join(data_root, DATASET_NAME, "config.json")):
            subprocess.run(dataset_command(args.python, data_root, args.data_seed), check=True, env=env)
        if os.path.exists(htfl_root):
            print(f"\n{htfl_root} exists: using it as it is (delete it for a fresh copy)")
        else:
            copy_htfllib(source, htfl_root)
            apply_edits(htfl_root, edits)
            print(f"\ncopied {source} to {htfl_root} and applied {len(edits)} edits")
        link = os.path.join(htfl_root, "dataset", DATASET_NAME)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.path.join(data_root, DATASET_NAME), link)
        theirs = htfllib_digest(args.python, htfl_system, DATASET_NAME, 20, env)
        ours = library_digest(data_root, DATASET_NAME, 20)
        print(f"\ndata SHA-256 as HtFLlib reads it:      {theirs}\ndata SHA-256 as this library reads it: {ours}")
        if theirs != ours:
            print("error: the two libraries read different arrays from the same files", file=sys.stderr)
            return 1
        digests = (theirs, "same on both sides")
        print(f"\nrunning {len(jobs)} runs, {args.jobs} at a time; logs in {logs}")
        started = time.time()
        finished = run_jobs(jobs, args.jobs, env, args.timeout)
        print(f"all runs ended in {time.time() - started:.0f} s")
    else:
        finished = {}
    outcomes = collect(jobs, finished, args.algorithms)
    end_commit, end_status = library_state() if not args.report_only else (commit, status)

    table = format_table(outcomes, args.rounds)
    curves = format_curves(outcomes)
    csv_path = os.path.splitext(report)[0] + "_curves.csv"
    png_path = os.path.splitext(report)[0] + "_curves.png"
    os.makedirs(os.path.dirname(report) or ".", exist_ok=True)
    write_csv(csv_path, outcomes)
    png_problem = write_png(png_path, outcomes, args.rounds)
    command = shlex.join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "scripts/htfllib_parity.py"]
                         + (list(argv) if argv is not None else sys.argv[1:]))
    text = "\n\n".join([
        "# HtFLlib parity",
        f"Command: `python {command}`",
        describe_state("when the report was rebuilt (--report_only; the runs are older)" if args.report_only
                       else "when the runs began", commit, status)
        + ("" if (commit, status) == (end_commit, end_status) else
           "\n\n" + describe_state("when they ended (the tree changed while they ran)", end_commit, end_status)),
        f"Data: {DATASET_NAME} (`{shlex.join(dataset_command('python', '<work>/data', args.data_seed)[1:])}`), "
        f"SHA-256 of all arrays: `{digests[0]}` {digests[1]}.",
        "Flags on both sides: `" + " ".join(shared_flags("<algo>", args.rounds, ["<algorithm flags>"])) + "`"
        + (f"; this library also gets `--seed {args.seed} --threads {args.threads} --data_root <work>/data --out "
           f"<work>/library_results{(' ' + shlex.join(extra)) if extra else ''}`"),
        "Algorithm flags: " + ", ".join(f"{n} `{' '.join(flags[n]) or '(none)'}`" for n in args.algorithms),
        "Edits applied to HtFLlib's copy (`<work>/HtFLlib`):\n\n```\n"
        + "\n".join(edit.describe() for edit in edits) + "\n```",
        ROUND_NOTE.format(r=args.rounds, r1=args.rounds + 1),
        table,
        "Accuracy (%) per evaluation:\n\n" + curves,
        f"Curves: `{csv_path}`" + (f", `{png_path}`" if png_problem is None else f" ({png_problem})"),
    ]) + "\n"
    with open(report, "w") as f:
        f.write(text)
    print("\n" + table + "\n\n" + curves)
    print(f"\nreport: {report}\ncurves: {csv_path}" + (f", {png_path}" if png_problem is None else ""))
    failed = [o.algorithm for o in outcomes if o.failures]
    if failed:
        print(f"runs that failed or wrote no results: {', '.join(failed)} (logs in {logs})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
