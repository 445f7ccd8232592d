"""Which clients train in each round, drawn round by round from one seeded stream, so every
algorithm sees the same clients for a seed and a run of millions of rounds costs nothing
before round 0."""
import numpy as np

from utils.seeding import derive_seed


class ClientSchedule:
    """`schedule[r]`: the sorted ids of the clients that train in round `r`.

    With `random_join_ratio` the number joining is drawn uniformly between
    `join_ratio * num_clients` and `num_clients`, as HtFLlib's `-rjr` does. Rounds are
    drawn in order from one stream; asking for an earlier round than the last one asked
    (a resumed run starts at its round) draws the stream again from the start.
    """

    def __init__(self, num_clients: int, join_ratio: float, random_join_ratio: bool, seed: int):
        self.num_clients = num_clients
        self.random_join_ratio = random_join_ratio
        self.least = max(1, int(round(join_ratio * num_clients)))
        self.seed = seed
        self.rewind()

    def rewind(self) -> None:
        self.rng = np.random.default_rng(derive_seed(self.seed, "client-sampling"))
        self.next_round = 0
        self.last = None

    def draw(self) -> np.ndarray:
        count = (int(self.rng.integers(self.least, self.num_clients + 1)) if self.random_join_ratio
                 else self.least)
        ids = self.rng.choice(self.num_clients, size=count, replace=False)
        return np.sort(ids)

    def __getitem__(self, round_idx: int) -> np.ndarray:
        if round_idx < 0:
            raise IndexError("rounds start at 0")
        if round_idx == self.next_round - 1:
            return self.last
        if round_idx < self.next_round:
            self.rewind()
        while self.next_round <= round_idx:
            self.last = self.draw()
            self.next_round += 1
        return self.last


def draw_client_schedule(num_clients: int, join_ratio: float, random_join_ratio: bool,
                         rounds: int, seed: int) -> list[np.ndarray]:
    """The first `rounds` rounds of `ClientSchedule`, as a list."""
    schedule = ClientSchedule(num_clients, join_ratio, random_join_ratio, seed)
    return [schedule[r] for r in range(rounds)]
