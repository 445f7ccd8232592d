"""Seeded ways of dealing a labelled pool of samples out to federated clients.

Every function is pure: it takes the labels and a `numpy.random.Generator` and
returns, per client, an int64 array of indices into the pool. Each sample goes to
exactly one client. The names `iid`, `pat` and `dir` are the values of PFLlib's
partition argument.
"""
from typing import Optional

import numpy as np

TRAIN_RATIO = 0.75


def apportion(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Split `total` into len(weights) integers, each >= `minimum`, summing to `total`.

    What is left above the minimums is shared in proportion to `weights`, rounded by
    largest remainder so that nothing is lost to rounding.
    """
    weights = np.asarray(weights, dtype=np.float64)
    spare = int(total) - minimum * len(weights)
    if spare < 0:
        raise ValueError(f"cannot give {len(weights)} parts at least {minimum} each "
                         f"out of {total}")
    weight_sum = weights.sum()
    if not np.isfinite(weight_sum) or weight_sum <= 0:
        weights, weight_sum = np.ones(len(weights)), float(len(weights))
    shares = weights / weight_sum * spare
    counts = np.floor(shares).astype(np.int64)
    leftover = spare - int(counts.sum())
    by_remainder = np.argsort(-(shares - counts), kind="stable")
    counts[by_remainder[:leftover]] += 1
    return counts + minimum


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator,
        balance: bool = True) -> list:
    """Uniformly random split; equal sizes when `balance`, random sizes otherwise."""
    labels = _as_labels(labels)
    _check_clients(num_clients, len(labels))
    order = rng.permutation(len(labels))
    if balance:
        sizes = apportion(len(labels), np.ones(num_clients))
    else:
        sizes = apportion(len(labels), rng.uniform(0.1, 1.0, num_clients), minimum=1)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def pathological(labels: np.ndarray, num_clients: int, class_per_client: int,
                 rng: np.random.Generator, balance: bool = False) -> list:
    """Each client holds exactly `class_per_client` of the classes present.

    Classes are dealt round-robin over a shuffled class order, so every class is held
    by either floor or ceil of num_clients * class_per_client / num_classes clients.
    A class's samples are split among its holders evenly when `balance`, otherwise in
    random proportions; every holder gets at least one sample of each of its classes.
    """
    labels = _as_labels(labels)
    _check_clients(num_clients, len(labels))
    classes = np.unique(labels)
    if not 1 <= class_per_client <= len(classes):
        raise ValueError(f"class_per_client must be between 1 and the {len(classes)} classes "
                         f"present, got {class_per_client}")
    if num_clients * class_per_client < len(classes):
        raise ValueError(f"{num_clients} clients x {class_per_client} classes each cannot cover "
                         f"all {len(classes)} classes: raise class_per_client or num_clients")

    class_order = rng.permutation(classes)
    holders = {int(c): [] for c in classes}
    for client in range(num_clients):
        for slot in range(client * class_per_client, (client + 1) * class_per_client):
            holders[int(class_order[slot % len(classes)])].append(client)

    parts = [[] for _ in range(num_clients)]
    for cls, clients in holders.items():
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < len(clients):
            raise ValueError(f"class {cls} has {len(members)} samples but {len(clients)} clients "
                             f"hold it: lower class_per_client or num_clients")
        if balance:
            weights = np.ones(len(clients))
        else:
            weights = rng.uniform(0.1, 1.0, len(clients))
        sizes = apportion(len(members), weights, minimum=1)
        for client, chunk in zip(clients, np.split(members, np.cumsum(sizes)[:-1])):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float,
              rng: np.random.Generator, least_samples: int = 10) -> list:
    """Per class, client shares ~ Dir(alpha); then every client is topped up to
    `least_samples` by moving samples away from the largest clients.

    The top-up is deterministic and ends after at most
    num_clients * (num_classes + 2) moves, so it terminates for any number of clients
    (redrawing until every client has enough can run forever when there are many).
    """
    labels = _as_labels(labels)
    _check_clients(num_clients, len(labels))
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if least_samples < 0:
        raise ValueError(f"least_samples must be >= 0, got {least_samples}")
    if num_clients * least_samples > len(labels):
        raise ValueError(f"least_samples={least_samples} for {num_clients} clients needs "
                         f"{num_clients * least_samples} samples but there are {len(labels)}: "
                         f"use least_samples <= {len(labels) // num_clients} or fewer clients")

    classes = np.unique(labels)
    members = [rng.permutation(np.flatnonzero(labels == cls)) for cls in classes]
    counts = np.stack([apportion(len(m), rng.dirichlet(np.full(num_clients, float(alpha))))
                       for m in members])
    _top_up(counts, least_samples)

    parts = [[] for _ in range(num_clients)]
    for class_members, class_counts in zip(members, counts):
        for client, chunk in enumerate(np.split(class_members, np.cumsum(class_counts)[:-1])):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(chunks)) for chunks in parts]


def _top_up(counts: np.ndarray, least: int) -> None:
    """Move samples in place (counts is classes x clients) until every client has
    `least`. Each move fills the starving client, empties one (class, donor) cell, or
    brings the donor down to `least` (after which it never gives again), hence the
    bound on the number of moves. Feasibility (total >= clients * least) is checked by
    the caller, so the largest client always has more than `least` to give."""
    totals = counts.sum(axis=0)
    for client in np.argsort(totals, kind="stable"):
        while totals[client] < least:
            donor = int(np.argmax(totals))
            cls = int(np.argmax(counts[:, donor]))
            moved = min(least - totals[client], counts[cls, donor], totals[donor] - least)
            counts[cls, donor] -= moved
            counts[cls, client] += moved
            totals[donor] -= moved
            totals[client] += moved


# PFLlib's names for the partitions.
pat = pathological
dir = dirichlet  # noqa: A001 - the CLI value, kept as the public name


def partition_indices(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
              niid: bool, balance: bool, partition: Optional[str], alpha: float = 0.1,
              class_per_client: int = 2, least_samples: int = 10) -> list:
    """Dispatch on PFLlib's (niid, balance, partition) arguments."""
    if not niid:
        return iid(labels, num_clients, rng, balance=balance)
    if partition == "pat":
        return pathological(labels, num_clients, class_per_client, rng, balance=balance)
    if partition == "dir":
        return dirichlet(labels, num_clients, alpha, rng, least_samples=least_samples)
    raise ValueError(f"non-IID partition must be 'pat' or 'dir', got {partition!r}")


def split_train_test(indices: np.ndarray, rng: np.random.Generator,
                     train_ratio: float = TRAIN_RATIO) -> tuple:
    """Shuffle one client's indices and cut them: the first floor(train_ratio * n)
    are train, the rest test (the sizes PFLlib gets from sklearn's train_test_split)."""
    if not 0 < train_ratio < 1:
        raise ValueError(f"train_ratio must be between 0 and 1, got {train_ratio}")
    shuffled = rng.permutation(np.asarray(indices, dtype=np.int64))
    num_train = int(np.floor(train_ratio * len(shuffled)))
    return shuffled[:num_train], shuffled[num_train:]


def _as_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} "
                         f"with shape {labels.shape}")
    return labels


def _check_clients(num_clients: int, num_samples: int) -> None:
    if num_clients < 1:
        raise ValueError(f"num_clients must be at least 1, got {num_clients}")
    if num_clients > num_samples:
        raise ValueError(f"cannot give {num_clients} clients a sample each out of "
                         f"{num_samples} samples: use fewer clients")


def long_tail(labels, imbalance_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of an exponentially long-tailed subset of the pool (as CIFAR-10/100-LT):
    class c (in class order) keeps n_max * imbalance_factor ** (c / (C - 1)) samples,
    n_max being the largest class's size, drawn at random; at least one per class."""
    labels = _as_labels(labels)
    if not 0 < imbalance_factor <= 1:
        raise ValueError(f"--imbalance_factor must be in (0, 1] (smallest / largest class size), "
                         f"got {imbalance_factor}")
    classes = np.unique(labels)
    largest = max(int(np.sum(labels == c)) for c in classes)
    steps = max(len(classes) - 1, 1)
    kept = []
    for rank, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        target = max(1, int(largest * imbalance_factor ** (rank / steps)))
        kept.append(rng.permutation(members)[:min(target, len(members))])
    return np.sort(np.concatenate(kept))
