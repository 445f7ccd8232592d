"""Checkpoint files of one run: written atomically, the last few kept, the newest readable one found.

Layout under the run's folder (`--out/<dataset>_<algo>_<goal>_<index>/`):

    checkpoints/round_000012.pt   state after 12 rounds (torch.save of plain containers)
    checkpoints/finished.json     written once the run's results are final

A checkpoint is first written to a temporary file in the same folder, flushed to disk,
then renamed over its final name, so a kill at any moment leaves either the old set of
checkpoints or the new one, never a half-written file under a checkpoint's name.
"""
import glob
import json
import os
import re
import time
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

FORMAT_VERSION = 1
PATTERN = re.compile(r"^round_(\d+)\.pt$")
FINISHED = "finished.json"
TEMPORARY_SUFFIX = ".partial"


def atomic_write(path: str, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, sync it, then rename it to `path`."""
    tmp = f"{path}.{os.getpid()}{TEMPORARY_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CheckpointSchedule:
    """When a run writes its next checkpoint.

    Every `every_rounds` rounds when that is set (0: never). Otherwise by the clock: once
    `minutes` have passed since the last checkpoint ended (or the run started), and never
    sooner than `1 / max_overhead` times the last write's duration, so that writing stays
    under `max_overhead` of the run's time whatever a checkpoint costs on the family.
    """

    def __init__(self, every_rounds: Optional[int], minutes: float, max_overhead: float = 0.05,
                 clock: Callable[[], float] = time.monotonic):
        if every_rounds is not None and every_rounds < 0:
            raise ValueError("every_rounds must be None, 0 or positive")
        if minutes <= 0 or not 0 < max_overhead <= 1:
            raise ValueError("minutes and max_overhead must be positive")
        self.every_rounds = every_rounds
        self.interval = 60.0 * minutes
        self.max_overhead = max_overhead
        self.clock = clock
        self.last_end = clock()
        self.last_seconds = 0.0

    def due(self, rounds_done: int) -> bool:
        if self.every_rounds is not None:
            return bool(self.every_rounds) and rounds_done % self.every_rounds == 0
        waited = self.clock() - self.last_end
        return waited >= max(self.interval, self.last_seconds / self.max_overhead)

    def written(self, seconds: float) -> None:
        """A checkpoint was just written and took `seconds`."""
        self.last_end = self.clock()
        self.last_seconds = seconds

    def describe(self) -> str:
        if self.every_rounds == 0:
            return "no checkpoints"
        if self.every_rounds:
            return f"a checkpoint every {self.every_rounds} round(s)"
        return (f"a checkpoint every {self.interval / 60:g} min (and under {self.max_overhead:.0%} "
                f"of the run's time)")


class CheckpointStore:
    def __init__(self, run_dir: str, keep: int = 1):
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.folder = os.path.join(run_dir, "checkpoints")
        self.keep = keep

    # ---- what is there ----------------------------------------------------------------
    def rounds(self) -> list[int]:
        """Rounds with a checkpoint file, oldest first."""
        if not os.path.isdir(self.folder):
            return []
        found = (PATTERN.match(name) for name in os.listdir(self.folder))
        return sorted(int(match.group(1)) for match in found if match)

    def path(self, rounds_done: int) -> str:
        return os.path.join(self.folder, f"round_{rounds_done:06d}.pt")

    def finished(self) -> Optional[dict]:
        """What `mark_finished` wrote, or None while the run is not finished."""
        try:
            with open(os.path.join(self.folder, FINISHED)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # ---- writing ----------------------------------------------------------------------
    def save(self, rounds_done: int, state: dict) -> str:
        os.makedirs(self.folder, exist_ok=True)
        path = self.path(rounds_done)
        atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, "rounds_done": rounds_done, **state}, f))
        self.prune()
        return path

    def prune(self) -> None:
        self.remove_rounds(keep_newest=self.keep)

    def mark_finished(self, info: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        atomic_write(os.path.join(self.folder, FINISHED),
                     lambda f: f.write(json.dumps(info, indent=2, sort_keys=True).encode()))

    def remove_rounds(self, keep_newest: int = 0) -> None:
        """Remove the checkpoint files, all of them or all but the newest `keep_newest`."""
        rounds = self.rounds()
        for rounds_done in rounds[:max(0, len(rounds) - keep_newest)]:
            os.remove(self.path(rounds_done))

    def clear(self) -> None:
        """Remove every checkpoint and the finished mark (a fresh run in the same folder)."""
        self.remove_rounds()
        finished = os.path.join(self.folder, FINISHED)
        if os.path.exists(finished):
            os.remove(finished)
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Temporary files of writes that a kill interrupted."""
        for path in glob.glob(os.path.join(glob.escape(self.folder), f"*{TEMPORARY_SUFFIX}")):
            os.remove(path)

    # ---- reading ----------------------------------------------------------------------
    def load(self, rounds_done: int, map_location=None) -> dict:
        state = torch.load(self.path(rounds_done), map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION \
                or state.get("rounds_done") != rounds_done:
            raise ValueError("not a checkpoint of this format")
        return state

    def load_latest(self, map_location=None) -> Optional[dict]:
        """The newest checkpoint that loads; a damaged one is reported and the previous one
        tried. None when there is no checkpoint (or none loads)."""
        self.remove_leftovers()
        rounds = self.rounds()
        for position in range(len(rounds) - 1, -1, -1):
            try:
                return self.load(rounds[position], map_location)
            except Exception as error:  # a damaged file can fail in many ways inside torch.load
                reason = " ".join(str(error).split())[:200] or type(error).__name__
                fallback = (f"falling back to {os.path.basename(self.path(rounds[position - 1]))}"
                            if position else "no older checkpoint to fall back to")
                tqdm.write(f"checkpoint {self.path(rounds[position])} is damaged ({reason}): {fallback}")
        return None
