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

from utils.errors import UserError


def result_name(dataset: str, algorithm: str, goal: str, index: int) -> str:
    return f"{dataset}_{algorithm}_{goal}_{index}"


def write_results(path: str, series: dict, config: dict) -> None:
    """Write `series` (name -> list of numbers, or name -> dict of lists) atomically: a
    failed write (a full disk) leaves the previous file and no temporary one, and ends in a
    one-line UserError."""
    folder = os.path.dirname(path) or "."
    tmp = path + ".tmp"
    try:
        os.makedirs(folder, exist_ok=True)
        with h5py.File(tmp, "w") as f:
            for key, values in series.items():
                if isinstance(values, dict):
                    group = f.create_group(key)
                    for sub, sub_values in values.items():
                        group.create_dataset(sub, data=np.asarray(sub_values, dtype=np.float64))
                else:
                    f.create_dataset(key, data=np.asarray(values, dtype=np.float64))
            f.attrs["config"] = json.dumps(config, sort_keys=True, default=str)
        os.replace(tmp, path)
    except OSError as error:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot write {path}: {reason}; free space or fix the folder's permissions, then run "
                        f"the same command with --resume") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, content: dict) -> None:
    """`content` as JSON at `path`, atomically, or a one-line UserError."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}; free space or fix the folder's "
                        f"permissions") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
    return (f"best accuracy over {len(best)} run(s): mean {np.mean(best):.4f}, "
            f"std {np.std(best):.4f} ({', '.join(f'{b:.4f}' for b in best)})")


def list_results(out_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(out_dir, "*.h5")))
