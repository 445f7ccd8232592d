"""The run's progress bar: rounds done, the latest evaluation, and how far the current call to
the clients has got, so a long round (HtFE8 on a CPU takes minutes) is not silent.

The bar is tqdm's with `disable=None`: shown on a terminal, absent when output goes to a file,
so logs of scripted sweeps hold only the per-evaluation lines.
"""
from tqdm.auto import tqdm

#: server calls shown by a friendlier name within the round
CALL_NAMES = {"train": "training", "evaluate": "evaluating", "collect_prototypes": "prototypes"}


class RunProgress:
    def __init__(self, name: str, total_rounds: int, rounds_done: int):
        self.bar = tqdm(total=total_rounds, initial=rounds_done, desc=name, unit="round", dynamic_ncols=True,
                        disable=None)
        self.latest = ""  # the latest evaluation, e.g. "acc 0.8123 after 3"
        self.call = ""    # the call to the clients under way, e.g. "training 5/20 clients"

    @property
    def shown(self) -> bool:
        return not self.bar.disable

    def evaluated(self, rounds_done: int, accuracy: float) -> None:
        self.latest = f"acc {accuracy:.4f} after {rounds_done}"
        self.call = ""
        self._show()

    def clients_done(self, method: str, done: int, total: int) -> None:
        """Called by the executor as clients answer a call (in-process: one by one; Ray: a block at a time)."""
        self.call = f"{CALL_NAMES.get(method, method)} {done}/{total} clients" if done < total else ""
        self._show()

    def round_done(self) -> None:
        self.call = ""
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        if self.shown:
            self.bar.set_postfix_str(", ".join(part for part in (self.latest, self.call) if part))

    def close(self) -> None:
        self.bar.close()
