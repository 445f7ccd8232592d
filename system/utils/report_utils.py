"""Paper-style tables and curves from a folder (or several) of result files.

A run is one `{dataset}_{algorithm}_{goal}_{index}.h5` written by `utils.result_utils`.
Runs are grouped into settings (the table's columns) and algorithms (its rows):

- the setting of a run is its `-go` tag when the user set one (anything but the default
  `test`), prefixed with the dataset when one tag covers several datasets; otherwise it is
  "{dataset} {partition}" with the partition ("dir", "pat" or "iid") read from the
  dataset's config.json under the run's `--data_root` (left out when that file is not
  there or the dataset's name already ends with it, as "MNIST5k-pat");
- the row of a run is its algorithm, followed by the labels of its variant (what the
  results file records as setting it apart from other runs of the algorithm: FedKTL's
  generator, random generator weights, `-mu 0`) and by its model family when that is not
  the family most runs use: "FedKTL (faces, random init)", "FedLoGe (ResNet8)";
- runs with the same setting and algorithm are repetitions; a cell is the mean ± std
  (population std, as HtFLlib's summary) over repetitions of each run's best accuracy,
  in percent with two decimals, or the one run's value when there is one, followed by
  how many runs it summarises and how many rounds they trained: "81.23 ± 0.40 (n=3, 20
  rounds)". Any series of fractions where higher is better can be reported
  (`--metric rs_test_auc`, `rs_client_mean_acc`).

The rounds a run trained are the rounds it timed (`round_seconds`, one per round trained,
kept across --resume); files without them (HtFLlib's own) count the rounds of their last
evaluation (`eval_rounds`, or one evaluation per `eval_gap` rounds plus one before the
first). Runs stopped early (auto-break) trained fewer rounds than they were given. Cells
whose runs trained different numbers of rounds, and rows (an algorithm across settings) or
columns (a setting across algorithms) whose cells share no number of rounds, get a warning
under the table (and on stderr from report.py): best accuracies of runs of different
lengths are not comparable. Runs that diverged (`diverged_after_round`) or
cannot be read are left out, and listed under the table.

When FedKTL runs with and without the transfer term or with random generator weights are
among the runs, `ablation.md` sets them side by side: per setting and generator, what the
pre-trained weights add over random ones and what the transfer term adds over none.

Files without a `config` attribute (HtFLlib's own) are read by their names.
"""
import csv
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from utils.errors import UserError
from utils.result_utils import list_results, read_results

DEFAULT_GOAL = "test"
# The order of the FedKTL paper's tables; FedKTL variants come last, unknown names before them.
PAPER_ORDER = ("Local", "LG-FedAvg", "FedGen", "FedGH", "FML", "FedKD", "FD", "FedDistill",
               "FedProto", "FedTGP")
MISSING = "–"


@dataclass
class Run:
    path: str
    dataset: str
    algorithm: str
    goal: str
    model_family: str = ""
    partition: str = ""
    best: float = float("nan")  # best value of the metric, as stored (a fraction)
    rounds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rounds_trained: int = 0  # rounds of training the run did (fewer than asked when stopped early)
    floats_up: float = float("nan")  # mean per round
    floats_down: float = float("nan")
    setting: str = ""
    variant: dict = field(default_factory=dict)  # labels, e.g. {"generator": "faces"}
    base: str = ""  # the row without the variant's labels (algorithm and unusual family)


# ---- reading ----------------------------------------------------------------------------
def find_result_files(dirs: list[str]) -> list[str]:
    missing = [d for d in dirs if not os.path.isdir(d)]
    if missing:
        raise UserError(f"results folder not found: {', '.join(missing)}")
    files = [path for d in dirs for path in list_results(d)]
    if not files:
        raise UserError(f"no result files (*.h5) in {', '.join(dirs)}")
    return files


def names_from_file(path: str) -> dict:
    """dataset, algorithm and goal from `{dataset}_{algorithm}_{goal}_{index}.h5`."""
    stem = os.path.splitext(os.path.basename(path))[0]
    parts = stem.rsplit("_", 1)[0].split("_", 2)
    parts += [DEFAULT_GOAL] * (3 - len(parts))
    return {"dataset": parts[0], "algorithm": parts[1], "goal": parts[2]}


def dataset_partition(config: dict) -> str:
    """"dir", "pat" or "iid" from the dataset's config.json; "" when it cannot be read."""
    if not config.get("data_root") or not config.get("dataset"):
        return ""
    try:
        with open(os.path.join(config["data_root"], config["dataset"], "config.json")) as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return ""
    if not doc.get("non_iid"):
        return "iid"
    return str(doc.get("partition") or "")


def run_from_file(path: str, metric: str) -> Run:
    """One run's summary; raises OSError/KeyError/ValueError when the file cannot serve."""
    series, config = read_results(path)
    if "diverged_after_round" in series:
        raise ValueError(f"training diverged after round {int(series['diverged_after_round'][0])}: not a result")
    if metric not in series or len(series[metric]) == 0:
        raise KeyError(f"no {metric!r} series")
    values = np.asarray(series[metric], dtype=np.float64)
    rounds = np.asarray(series.get("eval_rounds", np.arange(len(values)) * config.get("eval_gap", 1)),
                        dtype=np.float64)
    if len(rounds) != len(values):
        raise ValueError(f"{len(rounds)} eval_rounds for {len(values)} {metric!r} values")
    names = names_from_file(path)
    return Run(path=path,
               dataset=str(config.get("dataset", names["dataset"])),
               algorithm=str(config.get("algorithm", names["algorithm"])),
               goal=str(config.get("goal", names["goal"])),
               model_family=str(config.get("model_family", "")),
               partition=dataset_partition(config),
               best=float(np.nanmax(values)), rounds=rounds, values=values,
               rounds_trained=rounds_trained(series, rounds),
               floats_up=mean_or_nan(series.get("floats_up")),
               floats_down=mean_or_nan(series.get("floats_down")),
               variant={str(k): str(v) for k, v in (config.get("variant") or {}).items()})


def rounds_trained(series: dict, eval_rounds: np.ndarray) -> int:
    """Rounds of training a run did: one `round_seconds` entry per round (this library's
    files), else the rounds of its last evaluation (the final evaluation follows the last
    round; HtFLlib evaluates before each round and after the last)."""
    timed = series.get("round_seconds")
    if timed is not None and len(timed):
        return int(len(timed))
    return int(np.max(eval_rounds)) if len(eval_rounds) else 0


def mean_or_nan(values) -> float:
    return float(np.mean(values)) if values is not None and len(values) else float("nan")


def load_runs(dirs: list[str], metric: str, warn=print, skipped: list = None) -> list[Run]:
    """Every readable run in `dirs`; unreadable files (and diverged runs) are skipped with a
    warning naming them, and appended to `skipped` as (path, reason) when it is a list."""
    runs = []
    for path in find_result_files(dirs):
        try:
            runs.append(run_from_file(path, metric))
        except (OSError, KeyError, ValueError) as exc:
            reason = " ".join(str(exc).split())
            warn(f"warning: skipping {path}: {reason}")
            if skipped is not None:
                skipped.append((path, reason))
    if not runs:
        raise UserError(f"no readable result files in {', '.join(dirs)}")
    assign_settings(runs)
    return runs


# ---- grouping ---------------------------------------------------------------------------
def assign_settings(runs: list[Run]) -> None:
    """Fill each run's `setting` label by the rule in this module's docstring, and label the
    rows of runs on another family than most runs use ("FedLoGe (ResNet8)")."""
    datasets_per_goal = defaultdict(set)
    for run in runs:
        datasets_per_goal[run.goal].add(run.dataset)
    usual_family = Counter(run.model_family for run in runs).most_common(1)[0][0]
    for run in runs:
        if run.goal != DEFAULT_GOAL:
            shared = len(datasets_per_goal[run.goal]) > 1
            run.setting = f"{run.dataset} {run.goal}" if shared else run.goal
        else:
            # A folder already named after its partition ("MNIST5k-pat") needs no suffix.
            partition = "" if run.dataset.lower().endswith(run.partition.lower()) else run.partition
            run.setting = " ".join(p for p in (run.dataset, partition) if p)
        family = [run.model_family] if run.model_family != usual_family else []
        run.base = with_labels(run.algorithm, family)
        run.algorithm = with_labels(run.algorithm, [*run.variant.values(), *family])


def with_labels(name: str, labels: list[str]) -> str:
    return f"{name} ({', '.join(labels)})" if labels else name


def order_algorithms(names) -> list[str]:
    names = set(names)
    known = [n for n in PAPER_ORDER if n in names]
    ktl = sorted(n for n in names if n.startswith("FedKTL"))
    others = sorted(names - set(known) - set(ktl))
    return known + others + ktl


def group_runs(runs: list[Run]) -> dict:
    """{(setting, algorithm): [runs]}"""
    groups = defaultdict(list)
    for run in runs:
        groups[(run.setting, run.algorithm)].append(run)
    return dict(groups)


# ---- numbers and formatting -------------------------------------------------------------
def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(np.mean(values)), float(np.std(values))


def format_cell(values) -> str:
    """Best accuracies (fractions) of the repetitions -> "mean ± std" in percent; one run's
    value alone ("81.23"), since the std of one run says nothing."""
    percent = np.asarray(values, dtype=np.float64).reshape(-1) * 100.0
    if len(percent) == 1:
        return f"{percent[0]:.2f}"
    mean, std = mean_std(percent)
    return f"{mean:.2f} ± {std:.2f}"


def plural_rounds(count: int) -> str:
    return f"{count} round" if count == 1 else f"{count} rounds"


def format_rounds(lengths) -> str:
    """Rounds trained by a group of runs: "20 rounds", "1 round", or "1–3 rounds" when they differ."""
    lengths = sorted(set(int(n) for n in lengths))
    if len(lengths) == 1:
        return plural_rounds(lengths[0])
    return f"{lengths[0]}–{lengths[-1]} rounds"


def list_rounds(lengths) -> str:
    """The distinct lengths in words: "1 and 3 rounds", "1, 2 and 3 rounds"."""
    lengths = [str(n) for n in sorted(set(int(n) for n in lengths))]
    words = lengths[0] if len(lengths) == 1 else ", ".join(lengths[:-1]) + " and " + lengths[-1]
    return f"{words} round" if lengths == ["1"] else f"{words} rounds"


def format_group(group: list[Run]) -> str:
    """A table cell: the best values' mean ± std (or one run's value), then how many runs and
    how many rounds they trained: "81.23 ± 0.40 (n=3, 20 rounds)"."""
    return (f"{format_cell([r.best for r in group])} "
            f"(n={len(group)}, {format_rounds(r.rounds_trained for r in group)})")


def csv_rounds(group: list[Run]) -> str:
    """The `rounds` column: the rounds every run trained ("20"), or the distinct numbers
    separated by ";" ("1;3") when they differ."""
    return ";".join(str(n) for n in sorted({r.rounds_trained for r in group}))


def format_millions(floats: float) -> str:
    if not np.isfinite(floats):
        return MISSING
    millions = floats / 1e6
    if millions == 0 or millions >= 0.01:
        return f"{millions:.2f}"
    return f"{millions:.2g}"


def accuracy_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per algorithm, one column per setting."""
    groups = group_runs(runs)
    settings = sorted({run.setting for run in runs})
    rows = []
    for algorithm in order_algorithms(run.algorithm for run in runs):
        cells = [format_group(groups[(s, algorithm)]) if (s, algorithm) in groups else MISSING
                 for s in settings]
        rows.append([algorithm] + cells)
    return ["Algorithm"] + settings, rows


def accuracy_records(runs: list[Run]) -> list[dict]:
    """One record per (setting, algorithm): repetitions, rounds trained (see `csv_rounds`),
    mean and std in percent (std 0.00 for one run)."""
    groups = group_runs(runs)
    records = []
    for setting in sorted({run.setting for run in runs}):
        for algorithm in order_algorithms(run.algorithm for run in runs):
            if (setting, algorithm) in groups:
                group = groups[(setting, algorithm)]
                mean, std = mean_std([r.best * 100.0 for r in group])
                records.append({"setting": setting, "algorithm": algorithm, "runs": len(group),
                                "rounds": csv_rounds(group), "mean": f"{mean:.2f}", "std": f"{std:.2f}"})
    return records


def lengths_by_signature(cells: list[tuple[str, list[Run]]]) -> dict:
    """{format_rounds of a cell: names of the cells with those lengths}, in order of first
    appearance; `cells` are (name, runs)."""
    by_length = {}
    for name, group in cells:
        by_length.setdefault(format_rounds(r.rounds_trained for r in group), []).append(name)
    return by_length


def no_common_length(cells: list[tuple[str, list[Run]]]) -> bool:
    """Whether no number of rounds is trained by a run of every cell: the cells' best values
    compare runs of different lengths. (Cells that share a length but also hold other lengths
    are warned about on their own.)"""
    lengths = [{r.rounds_trained for r in group} for _, group in cells]
    return len(lengths) > 1 and not set.intersection(*lengths)


def describe_lengths(by_length: dict, joiner: str) -> str:
    return "; ".join(f"{length} {joiner} {', '.join(names)}" for length, names in by_length.items())


def length_warnings(runs: list[Run]) -> list[str]:
    """Warning lines for cells whose runs trained different numbers of rounds, and for rows
    (an algorithm across settings) and columns (a setting across algorithms) whose cells
    share no number of rounds: their best accuracies are not comparable as they stand."""
    groups = group_runs(runs)
    settings = sorted({run.setting for run in runs})
    algorithms = order_algorithms(run.algorithm for run in runs)
    warnings = []
    for setting in settings:
        for algorithm in algorithms:
            lengths = {r.rounds_trained for r in groups.get((setting, algorithm), [])}
            if len(lengths) > 1:
                warnings.append(f"warning: {algorithm} on {setting} mixes runs of {list_rounds(lengths)}")
    for algorithm in algorithms:
        cells = [(s, groups[(s, algorithm)]) for s in settings if (s, algorithm) in groups]
        if no_common_length(cells):
            warnings.append(f"warning: row {algorithm} mixes lengths across settings: "
                            f"{describe_lengths(lengths_by_signature(cells), 'on')}")
    for setting in settings:
        cells = [(a, groups[(setting, a)]) for a in algorithms if (setting, a) in groups]
        if no_common_length(cells):
            warnings.append(f"warning: column {setting} compares runs of different lengths: "
                            f"{describe_lengths(lengths_by_signature(cells), 'for')}")
    return warnings


def communication_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Per algorithm and setting: mean million floats per round, "up / down"."""
    groups = group_runs(runs)
    settings = sorted({run.setting for run in runs})
    rows = []
    for algorithm in order_algorithms(run.algorithm for run in runs):
        cells = []
        for setting in settings:
            group = groups.get((setting, algorithm))
            if group is None:
                cells.append(MISSING)
            else:
                up = np.mean([r.floats_up for r in group])
                down = np.mean([r.floats_down for r in group])
                cells.append(f"{format_millions(up)} / {format_millions(down)}")
        rows.append([algorithm] + cells)
    return ["Algorithm"] + [f"{s} (M floats up / down per round)" for s in settings], rows


# ---- FedKTL's ablation ------------------------------------------------------------------
NO_TRANSFER = {"transfer": "-mu 0"}
RANDOM_WEIGHTS = {"weights": "random init"}


ABLATION_COLUMNS = ("pre-trained", "random init", "no transfer (-mu 0)", "Local")


def ablation_groups(runs: list[Run]):
    """(setting, algorithm, generator, {column in ABLATION_COLUMNS: runs}) per row of the
    ablation: a setting, algorithm and generator G of a run with pre-trained G; None when no
    run is an ablation's (random G or `-mu 0`)."""
    ablated = [run for run in runs if RANDOM_WEIGHTS.items() <= run.variant.items() or run.variant == NO_TRANSFER]
    if not ablated:
        return None

    def of(setting, base, variant):
        return [r for r in runs if (r.setting, r.base, r.variant) == (setting, base, variant)]

    rows = []
    for setting, base in sorted({(run.setting, run.base) for run in ablated}):
        generators = sorted({r.variant["generator"] for r in runs if (r.setting, r.base) == (setting, base)
                             and "generator" in r.variant})
        for generator in generators:
            groups = (of(setting, base, {"generator": generator}),
                      of(setting, base, {"generator": generator, **RANDOM_WEIGHTS}),
                      of(setting, base, NO_TRANSFER), of(setting, "Local", {}))
            rows.append((setting, base, generator, dict(zip(ABLATION_COLUMNS, groups))))
    return rows


def ablation_table(runs: list[Run]):
    """Header and rows setting the ablation's runs side by side, or None when there are none.

    One row per setting, algorithm and generator G of a run with pre-trained G: best accuracy
    with pre-trained G, with randomly initialised G ("random init"), without the transfer term
    (`-mu 0`, where the generator plays no part) and Local's, each with its runs and rounds as
    in table.md, then the differences in points of the means: what pre-training adds
    (pre-trained - random init), what the transfer adds (pre-trained - no transfer) and where
    the method stands against Local."""
    groups = ablation_groups(runs)
    if groups is None:
        return None

    def cell(group):
        return format_group(group) if group else MISSING

    def gain(a, b):
        return f"{(np.mean([r.best for r in a]) - np.mean([r.best for r in b])) * 100.0:+.2f}" if a and b else MISSING

    rows = []
    for setting, base, generator, cells in groups:
        pretrained, random, none, local = (cells[name] for name in ABLATION_COLUMNS)
        rows.append([setting, base, generator, cell(pretrained), cell(random), cell(none), cell(local),
                     gain(pretrained, random), gain(pretrained, none), gain(pretrained, local)])
    header = ["Setting", "Algorithm", "Generator", *ABLATION_COLUMNS,
              "pre-training adds", "transfer adds", "over Local"]
    return header, rows


def ablation_warnings(runs: list[Run]) -> list[str]:
    """Warning lines for ablation rows whose cells trained different numbers of rounds (a
    cell of several lengths, or cells that share none)."""
    warnings = []
    for setting, base, generator, cells in ablation_groups(runs) or []:
        present = [(name, group) for name, group in cells.items() if group]
        mixed = [name for name, group in present if len({r.rounds_trained for r in group}) > 1]
        if mixed or no_common_length(present):
            warnings.append(f"warning: {base} ({generator}) on {setting} compares runs of different lengths: "
                            f"{describe_lengths(lengths_by_signature(present), 'for')}")
    return warnings


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_curve(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds, mean and std over the runs that evaluated at each round (runs stopped by
    auto-break simply drop out of later rounds)."""
    by_round = defaultdict(list)
    for run in runs:
        for r, v in zip(run.rounds, run.values):
            by_round[float(r)].append(float(v))
    rounds = np.array(sorted(by_round))
    means = np.array([np.mean(by_round[r]) for r in rounds])
    stds = np.array([np.std(by_round[r]) for r in rounds])
    return rounds, means, stds


def file_label(setting: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", setting).strip("_") or "setting"


# ---- writing ----------------------------------------------------------------------------
def write_csv(path: str, records: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["setting", "algorithm", "runs", "rounds", "mean", "std"])
        writer.writeheader()
        writer.writerows(records)


def plot_curves(path: str, setting: str, runs: list[Run], metric: str) -> None:
    """Accuracy (percent) against rounds, one line per algorithm, mean ± std shaded."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise UserError(f"plots need matplotlib: pip install matplotlib ({exc})") from exc
    groups = group_runs(runs)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algorithm in order_algorithms(run.algorithm for run in runs):
        group = groups.get((setting, algorithm))
        if not group:
            continue
        rounds, means, stds = mean_curve(group)
        line, = ax.plot(rounds, means * 100.0, label=f"{algorithm} (n={len(group)})")
        if len(group) > 1:
            ax.fill_between(rounds, (means - stds) * 100.0, (means + stds) * 100.0,
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(setting)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def notes_below(warnings: list[str], skipped=()) -> str:
    """Lines under a table: its warnings, then the files left out, each a markdown list item."""
    lines = list(warnings) + [f"left out {path}: {reason}" for path, reason in skipped]
    return "\n" + "".join(f"- {line}\n" for line in lines) if lines else ""


def write_report(runs: list[Run], out_dir: str, metric: str, skipped=(), warn=None) -> list[str]:
    """table.md, table.csv, ablation.md (when there are ablation runs), comm.md and one
    curves_<setting>.png per setting; returns the paths. `skipped`: (path, reason) of the
    files `load_runs` left out, listed under the table; `warn` is called with each warning
    line written under a table (runs of different lengths side by side)."""
    warn = warn or (lambda line: None)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    header, rows = accuracy_table(runs)
    warnings = length_warnings(runs)
    for line in warnings:
        warn(line)
    path = os.path.join(out_dir, "table.md")
    with open(path, "w") as f:
        f.write(f"Best {metric} (%): mean ± std over repetitions, or the value of a single run; "
                f"n: runs (repetitions), rounds: rounds of training per run\n\n"
                + markdown_table(header, rows) + notes_below(warnings, skipped))
    written.append(path)
    path = os.path.join(out_dir, "table.csv")
    write_csv(path, accuracy_records(runs))
    written.append(path)
    ablation = ablation_table(runs)
    if ablation is not None:
        warnings = ablation_warnings(runs)
        for line in warnings:
            warn(line)
        path = os.path.join(out_dir, "ablation.md")
        with open(path, "w") as f:
            f.write(f"What the generator adds: best {metric} (%), mean ± std over repetitions or the value "
                    f"of a single run (n: runs, rounds: rounds of training per run); the last three columns "
                    f"are differences of the means, in points\n\n" + markdown_table(*ablation)
                    + notes_below(warnings))
        written.append(path)
    header, rows = communication_table(runs)
    path = os.path.join(out_dir, "comm.md")
    with open(path, "w") as f:
        f.write("Mean traffic per round, all clients, in million floats (up / down)\n\n"
                + markdown_table(header, rows))
    written.append(path)
    used = set()
    for setting in sorted({run.setting for run in runs}):
        name = f"curves_{file_label(setting)}"
        while name in used:  # two labels that differ only in punctuation
            name += "_"
        used.add(name)
        path = os.path.join(out_dir, name + ".png")
        plot_curves(path, setting, runs, metric)
        written.append(path)
    return written
