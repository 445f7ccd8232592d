"""A run's series: what is recorded per evaluation and per round, as plain functions over
one `defaultdict(list)` (saved to the results h5 and in checkpoints)."""
from collections import defaultdict

#: evaluation summary key -> series name
EVALUATION_SERIES = {"test_acc": "rs_test_acc", "test_auc": "rs_test_auc", "train_loss": "rs_train_loss",
                     "client_mean_acc": "rs_client_mean_acc", "client_std_acc": "rs_client_std_acc"}


def new_series() -> defaultdict:
    series = defaultdict(list)
    series["phase_seconds"] = defaultdict(list)
    return series


def record_evaluation(series, rounds_done: int, summary: dict, extra: dict) -> None:
    """An evaluation after `rounds_done` rounds: the standard metrics and an algorithm's own (`extra`)."""
    for name, value in extra.items():
        series[name].append(value)
    series["eval_rounds"].append(rounds_done)
    for key, name in EVALUATION_SERIES.items():
        series[name].append(summary[key])


def record_round(series, seconds: float, traffic, skipped: int, memory: dict, phases: dict) -> None:
    """One round's time, traffic, skipped clients, peak memory and seconds per phase (a phase
    first seen in a later round gets zeros for the rounds before)."""
    series["round_seconds"].append(seconds)
    series["bytes_up"].append(traffic.bytes_up)
    series["bytes_down"].append(traffic.bytes_down)
    series["floats_up"].append(traffic.floats_up)
    series["floats_down"].append(traffic.floats_down)
    series["skipped_clients"].append(skipped)
    series["peak_host_mib"].append(memory["host_mib"])
    series["peak_gpu_mib"].append(memory["gpu_mib"])
    rounds_so_far = len(series["round_seconds"])
    for name in set(phases) | set(series["phase_seconds"]):
        column = series["phase_seconds"][name]
        column.extend([0.0] * (rounds_so_far - 1 - len(column)))
        column.append(phases.get(name, 0.0))


def plain_series(series) -> dict:
    """Plain dicts and lists, for checkpoints and finished marks."""
    return {name: dict(values) if isinstance(values, dict) else list(values) for name, values in series.items()}


def series_from_plain(plain: dict) -> defaultdict:
    return defaultdict(list, {name: defaultdict(list, values) if isinstance(values, dict) else values
                              for name, values in plain.items()})
