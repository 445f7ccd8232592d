"""Client sampling drawn up front, so every algorithm sees the same clients for a seed."""
import numpy as np

from utils.seeding import derive_seed


def draw_client_schedule(num_clients: int, join_ratio: float, random_join_ratio: bool,
                         rounds: int, seed: int) -> list[np.ndarray]:
    """For each round, the sorted ids of the clients that train in it.

    With `random_join_ratio` the number joining is drawn uniformly between
    `join_ratio * num_clients` and `num_clients`, as HtFLlib's `-rjr` does.
    """
    rng = np.random.default_rng(derive_seed(seed, "client-sampling"))
    least = max(1, int(round(join_ratio * num_clients)))
    schedule = []
    for _ in range(rounds):
        count = int(rng.integers(least, num_clients + 1)) if random_join_ratio else least
        ids = rng.choice(num_clients, size=count, replace=False)
        schedule.append(np.sort(ids))
    return schedule
