"""Seeded ways of dealing a labelled pool of samples out to federated clients.

Every function is pure: it takes the labels and a `numpy.random.Generator` and
returns, per client, an int64 array of indices into the pool. Each sample goes to
exactly one client. The names `iid`, `pat` and `dir` are the values of PFLlib's
partition argument. The `pfllib_*` functions deal the way PFLlib's own generator
(`separate_data`) did, for reproducing numbers reported on datasets it wrote.
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
    _check_dirichlet(alpha, least_samples)
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


# ----------------------------------------------------------------------------- PFLlib's rule
#
# The rule of PFLlib's `separate_data` (dataset/utils/dataset_utils.py) as it stood when
# the FedKTL paper's datasets were written: module-level batch_size = 10,
# train_size = 0.75, least_samples = batch_size / (1 - train_size) = 40. Reimplemented
# here from its documented behaviour, on a seeded numpy Generator instead of numpy's
# global state, so the draws (not the distribution) differ from PFLlib's.

PARTITION_RULES = ("library", "pfllib")
# PFLlib's floor on a client's size: batch_size / (1 - train_size).
PFLLIB_LEAST_SAMPLES = 40
# PFLlib redraws the Dirichlet split forever; we give up after this many attempts.
PFLLIB_MAX_ATTEMPTS = 1000


def pfllib_dirichlet(labels: np.ndarray, num_clients: int, alpha: float,
                     rng: np.random.Generator, least_samples: float = PFLLIB_LEAST_SAMPLES,
                     max_attempts: int = PFLLIB_MAX_ATTEMPTS) -> list:
    """PFLlib's 'dir': whole fresh draws until the smallest client has `least_samples`.

    One attempt: every client starts empty; for each class in label order, its indices
    are shuffled, p ~ Dir(alpha * ones(num_clients)) is drawn, the share of every client
    already holding >= N / num_clients samples (N: all samples) is zeroed, p is
    renormalised and the shuffled indices are cut at floor(cumsum(p) * n_class) (the last
    cut point dropped), piece j going to client j. If the smallest client then holds
    fewer than `least_samples`, everything is thrown away and drawn again.

    Unlike PFLlib, which loops forever, this raises ValueError when the floor cannot be
    met (least_samples * num_clients > N) or is not met within `max_attempts`. An attempt
    where every share left after the cap underflows to 0 (PFLlib would divide by zero)
    counts as a failed attempt. One more deliberate difference: PFLlib's floating-point
    cumsum can end just below 1 before trailing capped clients, so the last client,
    though capped, sometimes gets one sample of a class; here the cumulative share is
    exactly 1 from the last open client on, so a capped client never gets any.
    """
    labels = _as_labels(labels)
    _check_clients(num_clients, len(labels))
    _check_dirichlet(alpha, least_samples)
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    total = len(labels)
    if least_samples * num_clients > total:
        raise ValueError(f"the PFLlib rule needs at least {least_samples:g} samples per client, "
                         f"{least_samples * num_clients:g} for {num_clients} clients, but there "
                         f"are {total}: use at most {int(total // least_samples)} clients or "
                         f"--partition_rule library")

    members = [np.flatnonzero(labels == cls) for cls in np.unique(labels)]
    cap = total / num_clients
    concentration = np.full(num_clients, float(alpha))
    for _ in range(max_attempts):
        parts = _pfllib_dirichlet_attempt(members, num_clients, concentration, cap, rng)
        if parts is not None and min(len(p) for p in parts) >= least_samples:
            return [np.sort(part) for part in parts]
    raise ValueError(f"the PFLlib Dirichlet rule found no split giving every one of "
                     f"{num_clients} clients at least {least_samples:g} samples in "
                     f"{max_attempts} attempts (alpha={alpha}): raise --alpha, use fewer "
                     f"clients or --partition_rule library")


def _pfllib_dirichlet_attempt(members: list, num_clients: int, concentration: np.ndarray,
                              cap: float, rng: np.random.Generator) -> Optional[list]:
    """One pass over the classes of `pfllib_dirichlet`; None if the shares vanish."""
    chunks = [[] for _ in range(num_clients)]
    sizes = np.zeros(num_clients, dtype=np.int64)
    for class_members in members:
        shuffled = rng.permutation(class_members)
        shares = rng.dirichlet(concentration)
        shares = shares * (sizes < cap)
        share_sum = shares.sum()
        if not share_sum > 0:
            return None
        shares = shares / share_sum
        cumulative = np.cumsum(shares)
        # From the last open client on the sum is 1 exactly; in floating point it can fall
        # just short, which would hand a capped last client a sample (see the docstring).
        cumulative[np.flatnonzero(shares > 0)[-1]:] = 1.0
        cuts = (cumulative * len(shuffled)).astype(np.int64)[:-1]
        for client, piece in enumerate(np.split(shuffled, cuts)):
            chunks[client].append(piece)
            sizes[client] += len(piece)
    return [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]


def pfllib_pathological(labels: np.ndarray, num_clients: int, class_per_client: int,
                        rng: np.random.Generator, balance: bool = False,
                        least_samples: float = PFLLIB_LEAST_SAMPLES) -> list:
    """PFLlib's 'pat': classes go, in label order, to the lowest-numbered clients that
    still have room, and each class is cut in contiguous runs of its samples.

    Every client has room for `class_per_client` classes. For each class in label order
    the holders are the first ceil(num_clients / num_classes * class_per_client) clients
    (in client order) with room left; each holder's room drops by one. With s holders
    and n samples, num_per = n / s; the first s - 1 holders get int(num_per) samples
    each when `balance`, otherwise sizes drawn uniformly from the integers
    [int(max(num_per / 10, least_samples / num_classes)), int(num_per)) (numpy's randint
    truncates float bounds that way); the last holder gets the rest. The pieces are
    consecutive runs of the class's indices in pool order: PFLlib does not shuffle
    here (the later train/test split does).

    Where PFLlib is ambiguous or fails, we choose:
    - the classes are the labels present, in sorted order (PFLlib loops over
      range(num_classes) and assumes labels 0..num_classes-1);
    - a class for which no client has room left raises ValueError (PFLlib divides by
      zero; a later variant silently drops the remaining classes' samples), as does a
      client that ends with no samples (PFLlib fails on it later), so every sample is
      dealt exactly once;
    - an unbalanced draw whose bounds are empty (int(low) >= int(num_per), numpy's own
      "low >= high" error) raises ValueError;
    - an unbalanced draw may give a holder 0 samples of a class (when the lower bound
      truncates to 0), so such a client holds fewer than `class_per_client` classes,
      as in PFLlib.
    """
    labels = _as_labels(labels)
    _check_clients(num_clients, len(labels))
    classes = np.unique(labels)
    if not 1 <= class_per_client <= len(classes):
        raise ValueError(f"class_per_client must be between 1 and the {len(classes)} classes "
                         f"present, got {class_per_client}")
    holders_per_class = int(np.ceil(num_clients / len(classes) * class_per_client))
    room = np.full(num_clients, int(class_per_client))
    chunks = [[] for _ in range(num_clients)]
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        holders = np.flatnonzero(room > 0)[:holders_per_class]
        if len(holders) == 0:
            raise ValueError(
                f"the PFLlib pat rule gives each class to the first {holders_per_class} clients "
                f"with room, and no client has room left for class {int(cls)} "
                f"({num_clients} clients x {class_per_client} classes, {len(classes)} classes): "
                f"change --class_per_client or --num_clients, or use --partition_rule library")
        num_per = len(members) / len(holders)
        if balance:
            sizes = [int(num_per)] * (len(holders) - 1)
        elif len(holders) > 1:
            low = int(max(num_per / 10, least_samples / len(classes)))
            high = int(num_per)
            if low >= high:
                raise ValueError(
                    f"the PFLlib pat rule cannot draw sizes for class {int(cls)}: "
                    f"{len(members)} samples over {len(holders)} clients leaves the range "
                    f"[{low}, {high}) empty: use fewer clients, 'balance' or "
                    f"--partition_rule library")
            sizes = rng.integers(low, high, len(holders) - 1).tolist()
        else:
            sizes = []
        sizes.append(len(members) - sum(sizes))
        for client, piece in zip(holders, np.split(members, np.cumsum(sizes)[:-1])):
            chunks[client].append(piece)
            room[client] -= 1
    parts = [np.concatenate(c) if c else np.empty(0, dtype=np.int64) for c in chunks]
    empty = [client for client, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise ValueError(f"the PFLlib rule leaves {len(empty)} of {num_clients} clients "
                         f"(first: client {empty[0]}) with no samples: use fewer clients, "
                         f"change --class_per_client, or use --partition_rule library")
    return [np.sort(part) for part in parts]


def pfllib_iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator,
               balance: bool = True, least_samples: float = PFLLIB_LEAST_SAMPLES) -> list:
    """PFLlib's IID split: its 'pat' rule with every client holding every class, so each
    class is cut into num_clients contiguous runs (equal when `balance`). This differs
    from the library's `iid` (one random permutation cut into client-sized pieces)."""
    labels = _as_labels(labels)
    return pfllib_pathological(labels, num_clients, len(np.unique(labels)), rng,
                               balance=balance, least_samples=least_samples)


def partition_indices(labels: np.ndarray, num_clients: int, rng: np.random.Generator, *,
              niid: bool, balance: bool, partition: Optional[str], alpha: float = 0.1,
              class_per_client: int = 2, least_samples: int = 10,
              rule: str = "library") -> list:
    """Dispatch on PFLlib's (niid, balance, partition) arguments and on `rule`:
    'library' (this library's partitions) or 'pfllib' (PFLlib's `separate_data`)."""
    if rule not in PARTITION_RULES:
        raise ValueError(f"partition rule must be one of {', '.join(PARTITION_RULES)}, "
                         f"got {rule!r}")
    if partition not in ("pat", "dir") and niid:
        raise ValueError(f"non-IID partition must be 'pat' or 'dir', got {partition!r}")
    if rule == "pfllib":
        if not niid:
            return pfllib_iid(labels, num_clients, rng, balance=balance,
                              least_samples=least_samples)
        if partition == "pat":
            return pfllib_pathological(labels, num_clients, class_per_client, rng,
                                       balance=balance, least_samples=least_samples)
        return pfllib_dirichlet(labels, num_clients, alpha, rng, least_samples=least_samples)
    if not niid:
        return iid(labels, num_clients, rng, balance=balance)
    if partition == "pat":
        return pathological(labels, num_clients, class_per_client, rng, balance=balance)
    return dirichlet(labels, num_clients, alpha, rng, least_samples=least_samples)


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


def _check_dirichlet(alpha: float, least_samples: int) -> None:
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if least_samples < 0:
        raise ValueError(f"least_samples must be >= 0, got {least_samples}")


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
