"""Per-class knowledge sharing, common to FedProto, FD, FedGH, FedTGP and FedKTL.

In these methods a client uploads, per class it holds, the mean of what its model
computes on that class's training data (features: "prototypes"; or logits), as
{"means", "classes"} (and "counts" where the server weights by samples), and the
server sends back something built from those means (per-class vectors, or a head)
to every client. This module holds the pure functions they share: per-class sums and
means (the one implementation, for clients and servers), their combination over
clients, the distance-to-prototype classifier and the pull-to-global-vector
regulariser. It imports no client or server: the shared round is
`flcore.clients.clientclassmean.ClassMeanClient` and
`flcore.servers.serverclassmean.ClassMeanServer`.
"""
import torch

from flcore.losses import pairwise_sq_dists


# ---- pure functions ---------------------------------------------------------------------
def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int, into: tuple | None = None):
    """Per-class sums of the rows of `values` [N, D] and per-class row counts: ([C, D], [C] int64).

    With `into` = (sums, counts) from an earlier call, the rows are added to those running
    totals in place (row by row, in order) and they are returned; without it, new totals
    start from zero. Summing batch by batch into one running total and adding up each
    batch's own totals round differently in floating point: callers keep the order they use.
    """
    if into is None:
        sums = values.new_zeros(num_classes, values.shape[1]).index_add_(0, labels, values)
        return sums, torch.bincount(labels, minlength=num_classes)
    sums, counts = into
    sums.index_add_(0, labels, values)
    counts += torch.bincount(labels, minlength=num_classes)
    return sums, counts


def present_means(sums: torch.Tensor, counts: torch.Tensor):
    """(means [K, D], classes [K], counts [K]) for the K classes with a positive count, in class order."""
    classes = torch.nonzero(counts > 0).flatten()
    kept = counts[classes]
    return sums[classes] / kept.unsqueeze(1).to(sums.dtype), classes, kept


def class_means(values: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Mean row per class present in `labels`: (means [K, D], classes [K], counts [K])."""
    return present_means(*class_sums(values, labels, num_classes))


def average_per_class(means: list, classes: list, num_classes: int, weights: list | None = None):
    """Combine clients' per-class means: for each class, the average over the clients
    that hold it, weighted by `weights` (e.g. sample counts) or uniformly when None.

    means[i] is [K_i, D] for the classes classes[i] [K_i]. Returns (means [K, D],
    classes [K]) for the K classes some client holds.
    """
    dim = means[0].shape[1]
    sums = torch.zeros(num_classes, dim, dtype=torch.float64)
    totals = torch.zeros(num_classes, dtype=torch.float64)
    for i, (client_means, client_classes) in enumerate(zip(means, classes)):
        w = (torch.ones(len(client_classes), dtype=torch.float64) if weights is None
             else weights[i].to(torch.float64))
        sums.index_add_(0, client_classes, client_means.to(torch.float64) * w.unsqueeze(1))
        totals.index_add_(0, client_classes, w)
    averaged, present, _ = present_means(sums, totals)
    return averaged.to(means[0].dtype), present


def class_table(means: torch.Tensor, classes: torch.Tensor, num_classes: int):
    """Scatter per-class rows into a [C, D] table (zeros for absent classes) and a [C] presence mask."""
    table = means.new_zeros(num_classes, means.shape[1])
    table[classes] = means
    present = torch.zeros(num_classes, dtype=torch.bool, device=means.device)
    present[classes] = True
    return table, present


def class_mean_table(values: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """`class_means` as a full table: (means [C, D] with zero rows for absent classes,
    [C] presence mask)."""
    means, classes, _ = class_means(values, labels, num_classes)
    return class_table(means, classes, num_classes)


def pull_to_class_rows(values: torch.Tensor, labels: torch.Tensor, table: torch.Tensor,
                       present: torch.Tensor) -> torch.Tensor:
    """FedProto's regulariser: MSE between each row and its class's global row.

    Rows whose class has no global row add zero error but still count in the mean,
    as in the original (there the target of such rows is the row itself).
    """
    mask = present[labels].unsqueeze(1).to(values.dtype)
    return ((values - table[labels]).pow(2) * mask).sum() / values.numel()


def nearest_prototype_scores(features: torch.Tensor, table: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Class scores = minus the squared distance to the class's global prototype, so argmax
    is the nearest prototype. Classes without one get the lowest finite score: never
    predicted while another class exists, and AUC stays defined."""
    scores = -pairwise_sq_dists(features, table)
    return scores.masked_fill(~present.unsqueeze(0), torch.finfo(scores.dtype).min)


def shuffled_batches(num_rows: int, batch_size: int, generator: torch.Generator):
    """Index tensors of one shuffled epoch; the last batch may be smaller (nothing is dropped)."""
    order = torch.randperm(num_rows, generator=generator)
    return [order[start:start + batch_size] for start in range(0, num_rows, batch_size)]


def stack_uploads(replies: list[dict]):
    """All uploaded per-class means as one training set: (vectors [sum K_i, D], labels)."""
    return torch.cat([r["means"] for r in replies]), torch.cat([r["classes"] for r in replies])
