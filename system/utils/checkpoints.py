"""Checkpoint files of one run: written atomically, the last few kept, the newest readable one found.

Layout under the run's folder (`--out/<dataset>_<algo>_<goal>_<index>/`):

    checkpoints/round_000012.pt   state after 12 rounds (torch.save of plain containers)
    checkpoints/finished.json     written once the run's results are final

A checkpoint is first written to a temporary file in the same folder, flushed to disk,
then renamed over its final name, so a kill at any moment leaves either the old set of
checkpoints or the new one, never a half-written file under a checkpoint's name.

Nothing a user could still want is deleted: a checkpoint that cannot be read is moved to
`checkpoints/unreadable/`, and the checkpoints of an unfinished run that a fresh run
replaces go to `replaced-<time>/` beside them. Only older checkpoints of the run going on
(beyond `--ckpt_keep`) and the temporary files of interrupted writes are removed.
"""
import glob
import json
import os
import re
import time
from typing import Callable, Optional

import torch

from utils.files import TEMPORARY_SUFFIX, atomic_write

FORMAT_VERSION = 1
PATTERN = re.compile(r"^round_(\d+)\.pt$")
FINISHED = "finished.json"
UNREADABLE = "unreadable"


def load_failure(error: BaseException) -> str:
    """Why a checkpoint did not load, briefly: the error's type and first sentence (torch's
    own messages go on to advise loading with weights_only=False, which is not the fix here)."""
    text = " ".join(str(error).split())
    first = text.split(". ")[0].rstrip(".")[:120]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class UnreadableCheckpoints(Exception):
    """Checkpoint files are there but none of them loads; they are left as they are."""


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
        path = self.path(rounds_done)
        atomic_write(path, lambda f: torch.save({"format": FORMAT_VERSION, "rounds_done": rounds_done, **state}, f))
        self.prune()
        return path

    def prune(self) -> None:
        self.remove_rounds(keep_newest=self.keep)

    def mark_finished(self, info: dict) -> None:
        atomic_write(os.path.join(self.folder, FINISHED),
                     lambda f: f.write(json.dumps(info, sort_keys=True, separators=(",", ":")).encode()))

    def remove_rounds(self, keep_newest: int = 0) -> None:
        """Remove the checkpoint files, all of them or all but the newest `keep_newest`."""
        rounds = self.rounds()
        for rounds_done in rounds[:max(0, len(rounds) - keep_newest)]:
            os.remove(self.path(rounds_done))

    def set_aside(self, rounds_done_list, where: str) -> str:
        """Move the checkpoints of `rounds_done_list` into `where` (made if needed); returns it."""
        os.makedirs(where, exist_ok=True)
        for rounds_done in rounds_done_list:
            os.replace(self.path(rounds_done), os.path.join(where, os.path.basename(self.path(rounds_done))))
        return where

    def set_aside_unreadable(self, rounds_done_list) -> str:
        return self.set_aside(rounds_done_list, os.path.join(self.folder, UNREADABLE))

    def replace_with_fresh(self):
        """Make way for a fresh run: the checkpoints of an earlier unfinished run are moved to
        `replaced-<time>/` beside this folder (returned; None when there were none), the
        finished mark and interrupted writes are removed."""
        moved = None
        rounds = self.rounds()
        if rounds:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            moved = os.path.join(os.path.dirname(self.folder), f"replaced-{stamp}")
            suffix = 1
            while os.path.exists(moved):
                suffix += 1
                moved = os.path.join(os.path.dirname(self.folder), f"replaced-{stamp}-{suffix}")
            self.set_aside(rounds, moved)
        finished = os.path.join(self.folder, FINISHED)
        if os.path.exists(finished):
            os.remove(finished)
        self.remove_leftovers()
        return moved

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

    def load_latest(self, map_location=None) -> tuple[Optional[dict], list]:
        """(the newest checkpoint that loads, the newer ones that did not: [(rounds, reason)]).
        (None, []) when there is no checkpoint; `UnreadableCheckpoints` when there are some
        and none loads. Changes no file."""
        rounds = self.rounds()
        damaged = []
        for rounds_done in reversed(rounds):
            try:
                return self.load(rounds_done, map_location), damaged
            except Exception as error:  # a damaged file can fail in many ways inside torch.load
                damaged.append((rounds_done, load_failure(error)))
        if damaged:
            raise UnreadableCheckpoints(damaged)
        return None, []
