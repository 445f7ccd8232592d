"""Whether a run may continue from what it left on disk, decided before anything is written.

A checkpoint (and a finished run's mark) records the flags that decide what the run
computes and a signature of its dataset. `--resume` continues only a run whose flags and
data are the same; otherwise it is refused in one line and every file stays as it was.
"""
import hashlib
import os
from typing import Optional

import numpy as np

from utils.checkpoints import CheckpointStore, UnreadableCheckpoints
from utils.errors import UserError

#: flags that may differ between a run and its resumption (where and how it runs, not what)
RESUMABLE_WITH_OTHER = frozenset({
    "resume", "ckpt_every", "ckpt_minutes", "ckpt_keep", "ckpt_keep_final", "threads", "device", "device_id",
    "config", "out", "data_root", "times", "prev", "executor", "ray_address", "ray_actors", "ray_cpus_per_actor",
    "ray_gpus_per_actor", "offload", "tensorboard"})

MISSING = object()

#: pixels read per client for the data signature: enough to tell datasets apart, cheap on TinyImagenet
PIXEL_SAMPLES = 4096


def comparable_config(args) -> dict:
    """The flags that decide what a run computes, as saved in its checkpoints: neither where and
    how it runs nor the options of algorithms other than its own (`AlgorithmArgs.options_not_read`)."""
    unread = args.options_not_read() if hasattr(type(args), "options_not_read") else frozenset()
    return {name: value for name, value in sorted(vars(args).items())
            if name not in RESUMABLE_WITH_OTHER and name not in unread}


def check_same_config(saved: dict, current: dict, folder: str) -> None:
    """Refuse to resume a run written with other flags: its continuation would be neither run.

    The flags compared are this run's (`current`): what a saved config holds beyond them (another
    algorithm's options, recorded by earlier versions) changes nothing this run computes, so a
    sweep's finished Local runs stay finished when, say, DeepInversion's defaults change. A flag
    of this run that the saved config lacks (added since) counts as different."""
    differing = [name for name in sorted(current) if saved.get(name, MISSING) != current[name]]
    if differing:
        shown = ", ".join(f"{name} {repr(saved[name]) if name in saved else 'unset'} there, {current[name]!r} now"
                          for name in differing[:3])
        raise UserError(f"the run in {folder} was written with other flags ({shown}): resume with the "
                        f"flags of that run, or drop --resume to start afresh")


def data_signature(data) -> dict:
    """Classes, image shape, every client's split sizes, and a digest of the labels and a
    strided sample of the pixels: what a resumed run must find again."""
    digest = hashlib.sha256()
    train_sizes, test_sizes = [], []
    for client in data.clients:
        for x, y in ((client.train_x, client.train_y), (client.test_x, client.test_y)):
            digest.update(np.ascontiguousarray(y.numpy()).tobytes())
            flat = x.reshape(-1)
            step = max(1, flat.numel() // PIXEL_SAMPLES)
            digest.update(np.ascontiguousarray(flat[::step].numpy()).tobytes())
        train_sizes.append(int(client.train_y.numel()))
        test_sizes.append(int(client.test_y.numel()))
    return {"num_classes": int(data.num_classes), "image_shape": [int(d) for d in data.image_shape],
            "train_sizes": train_sizes, "test_sizes": test_sizes, "digest": digest.hexdigest()}


def check_same_data(saved: Optional[dict], current: dict, folder: str, dataset: str) -> None:
    """Refuse to resume over a dataset that is not the one the run was written with."""
    if saved is None:  # written before signatures were recorded
        return
    for key, what in (("num_classes", "classes"), ("image_shape", "image shape"),
                      ("train_sizes", "clients' training set sizes"), ("test_sizes", "clients' test set sizes"),
                      ("digest", "images or labels")):
        if saved.get(key) != current.get(key):
            detail = (f"{saved.get(key)} there, {current.get(key)} now"
                      if key in ("num_classes", "image_shape") else "they differ")
            raise UserError(f"dataset '{dataset}' is not the one the run in {folder} was written with "
                            f"({what}: {detail}): resume with that dataset, or drop --resume to start afresh")


def load_resume_state(store: CheckpointStore, args, signature: dict) -> tuple[Optional[dict], list]:
    """(the newest readable checkpoint, the newer unreadable ones) after checking its flags
    and data against this run's; (None, []) when there is no checkpoint. Reads only."""
    try:
        state, damaged = store.load_latest(map_location="cpu")
    except UnreadableCheckpoints as error:
        reasons = "; ".join(f"{os.path.basename(store.path(r))}: {why}" for r, why in error.args[0][:2])
        raise UserError(f"none of the checkpoints in {store.folder} can be read ({reasons}); they are left as "
                        f"they are: resume with the library version that wrote them, or drop --resume to start "
                        f"afresh (they are then moved aside, not deleted)") from None
    if state is None:
        return None, []
    check_same_config(state["config"], comparable_config(args), store.folder)
    check_same_data(state.get("data"), signature, store.folder, args.dataset)
    return state, damaged


def check_finished_run(finished: dict, args, signature: dict, folder: str) -> None:
    """Refuse `--resume` of a finished run with other flags or data, as for checkpoints."""
    if "config" in finished:
        check_same_config(finished["config"], comparable_config(args), folder)
    check_same_data(finished.get("data"), signature, folder, args.dataset)
