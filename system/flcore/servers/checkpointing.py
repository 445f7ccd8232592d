"""A run's checkpoints, as the round loop uses them: writing one, resuming from one, starting
afresh, and marking the run finished. The files themselves are `utils.checkpoints`; what a
checkpoint of a server and its clients holds is decided here, once for every algorithm."""
import time

import numpy as np
from tqdm.auto import tqdm

from utils.errors import UserError
from utils.recording import plain_series, series_from_plain
from utils.resume import comparable_config
from utils.seeding import global_rng_states, set_global_rng_states


def save_checkpoint(server, rounds_done: int) -> None:
    """Every client's and the server's changing state, the series and the random streams."""
    start = time.perf_counter()
    client_states = server.broadcast(server.all_client_ids, server.client_class.checkpoint_state, count=False)
    server.checkpoints.save(rounds_done, {
        "config": comparable_config(server.args),
        "data": server.data_signature,
        "server": server.checkpoint_state(),
        "clients": dict(zip(server.all_client_ids, client_states)),
        "series": plain_series(server.series),
        "rng": global_rng_states(),
    })
    seconds = time.perf_counter() - start
    server.series["checkpoint_seconds"].append(seconds)
    server.checkpoint_schedule.written(seconds)


def resume(server, state: dict) -> int:
    """Put the run back as `state` (an accepted checkpoint) left it; returns its rounds done."""
    try:
        server.scatter(server.client_class.restore_checkpoint_state, state["clients"], count=False)
        server.restore_checkpoint_state(state["server"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise UserError(f"the checkpoint in {server.checkpoints.folder} does not fit this run ({reason}): "
                        f"resume with the flags, data and library version that wrote it, or drop --resume "
                        f"to start afresh") from None
    server.series = series_from_plain(state["series"])
    set_global_rng_states(state["rng"])
    rounds_done = state["rounds_done"]
    tqdm.write(f"[{server.name}] resuming after round {rounds_done} of {server.global_rounds} from "
               f"{server.checkpoints.path(rounds_done)}")
    return rounds_done


def start_afresh(server) -> int:
    """Move an earlier run's checkpoints aside (never delete them); returns 0 rounds done."""
    moved = server.checkpoints.replace_with_fresh()
    if moved:
        tqdm.write(f"[{server.name}] the checkpoints of an earlier run are moved to {moved} "
                   f"(pass --resume to continue that run instead)")
    return 0


def set_aside_damaged(server, damaged: list) -> None:
    """Move checkpoints newer than the one resumed from, which did not load, out of the way."""
    if damaged:
        where = server.checkpoints.set_aside_unreadable([rounds for rounds, _ in damaged])
        for rounds, reason in damaged:
            tqdm.write(f"checkpoint after round {rounds} cannot be read ({reason}): moved to {where}")
    server.checkpoints.remove_leftovers()


def mark_finished(server, rounds_done: int, keep_final: bool) -> None:
    """The finished mark, then the round checkpoints removed (unless kept): a finished run needs
    none to resume (the mark says it is done), and keeping HtFE8-sized ones for every run of a
    sweep would fill the disk. The series and flags let `--resume` refuse other flags and rebuild a
    deleted h5; the results file is named relative to --out, so a copied folder stays whole."""
    server.checkpoints.mark_finished({"rounds_done": rounds_done, "results": server.name + ".h5",
                                      "best_test_acc": float(np.max(server.series["rs_test_acc"])),
                                      "config": comparable_config(server.args), "data": server.data_signature,
                                      "series": plain_series(server.series)})
    server.checkpoints.remove_rounds(keep_newest=server.checkpoints.keep if keep_final else 0)
