"""Results on disk: one h5 file per repetition, with HtFLlib's keys and more.

Keys kept from HtFLlib: `rs_test_acc`, `rs_test_auc`, `rs_train_loss` (one entry per
evaluation). Added: the rounds those evaluations happened after, unweighted client
mean accuracy, per-round wall time, per-round traffic, per-phase seconds, and the full
run configuration as JSON in the `config` attribute.
"""
import glob
import json
import os

import h5py
import numpy as np

from utils.files import atomic_write


def result_name(dataset: str, algorithm: str, goal: str, index: int) -> str:
    return f"{dataset}_{algorithm}_{goal}_{index}"


def write_results(path: str, series: dict, config: dict) -> None:
    """Write `series` (name -> list of numbers, or name -> dict of lists) atomically: a
    failed write (a full disk) leaves the previous file and no temporary one, and ends in a
    one-line UserError."""
    def write(file):
        with h5py.File(file, "w") as f:
            for key, values in series.items():
                if isinstance(values, dict):
                    group = f.create_group(key)
                    for sub, sub_values in values.items():
                        group.create_dataset(sub, data=np.asarray(sub_values, dtype=np.float64))
                else:
                    f.create_dataset(key, data=np.asarray(values, dtype=np.float64))
            f.attrs["config"] = json.dumps(config, sort_keys=True, default=str)

    atomic_write(path, write)


def results_config(args, run_index: int, variant: dict = None) -> dict:
    """What a results file records as its configuration: the flags, the repetition and the
    run's variant of its algorithm (labels, read by the report)."""
    return dict(vars(args), run_index=run_index, run_seed=args.seed + run_index, variant=dict(variant or {}))


def write_json(path: str, content: dict) -> None:
    """`content` as JSON at `path`, atomically, or a one-line UserError."""
    atomic_write(path, lambda f: f.write(json.dumps(content, indent=2, sort_keys=True, default=str).encode()))


def read_results(path: str) -> tuple[dict, dict]:
    series = {}
    with h5py.File(path, "r") as f:
        for key, item in f.items():
            if isinstance(item, h5py.Group):
                series[key] = {sub: item[sub][()] for sub in item}
            else:
                series[key] = item[()]
        config = json.loads(f.attrs.get("config", "{}"))
    return series, config


def best_accuracies(out_dir: str, dataset: str, algorithm: str, goal: str, times: int) -> list[float]:
    values = []
    for index in range(times):
        path = os.path.join(out_dir, result_name(dataset, algorithm, goal, index) + ".h5")
        if os.path.exists(path):
            series, _ = read_results(path)
            values.append(float(np.max(series["rs_test_acc"])))
    return values


def summarize_repetitions(out_dir: str, dataset: str, algorithm: str, goal: str, times: int) -> str:
    """HtFLlib's closing summary: mean and std of the best accuracy over repetitions."""
    best = best_accuracies(out_dir, dataset, algorithm, goal, times)
    if not best:
        return "no results found"
    if len(best) == 1:
        return f"best accuracy of the 1 run: {best[0]:.4f}"  # a std of one run says nothing
    return (f"best accuracy over {len(best)} run(s): mean {np.mean(best):.4f}, "
            f"std {np.std(best):.4f} ({', '.join(f'{b:.4f}' for b in best)})")


def list_results(out_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(out_dir, "*.h5")))
