"""Per-class knowledge sharing, common to FedProto, FD, FedGH and FedTGP.

In all four methods a client uploads, per class it holds, the mean of what its model
computes on that class's training data (features: "prototypes"; or logits), and the
server sends back something built from those means (per-class vectors, or a head)
to every client. This module holds what they share:
- pure functions: per-class means, their combination over clients, the
  distance-to-prototype classifier and the pull-to-global-vector regulariser;
- `ClassMeanClient` and `ClassMeanServer`: the shared round.
"""
import time

import torch
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.losses import pairwise_sq_dists
from flcore.servers.serverbase import Server
from utils.payload import to_payload


# ---- pure functions ---------------------------------------------------------------------
def class_sums(values: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Per-class sums of the rows of `values` [N, D] and per-class row counts: ([C, D], [C])."""
    sums = values.new_zeros(num_classes, values.shape[1]).index_add_(0, labels, values)
    return sums, torch.bincount(labels, minlength=num_classes)


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


# ---- clients ----------------------------------------------------------------------------
class ClassMeanClient(Client):
    """Uploads per-class means of its features (or logits) after local training and,
    once the server has sent a per-class table of global vectors, adds
    lamda * pull_to_class_rows(those vectors) to its cross-entropy.

    The means are taken over the training set with the trained model in eval mode
    (the prototype definition of the FedProto paper); the same pass yields the
    training loss that evaluation reports, so it costs no extra pass.
    """
    #: what is averaged and regularised: "features" (base output) or "logits" (head output)
    shared_vector = "features"
    #: also upload per-class sample counts (for count-weighted aggregation)
    send_counts = False

    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.lamda = args.lamda
        self.global_table = None    # [C, D] global vector per class (zeros where absent)
        self.global_present = None  # [C] which classes have one

    def pick(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.shared_vector == "logits" else features

    # ---- training -----------------------------------------------------------------------
    def train_step(self, x, y):
        features = self.model.base(x)
        logits = self.model.head(features)
        loss = self.ce_loss(logits, y)
        if self.global_table is not None:
            loss = loss + self.lamda * pull_to_class_rows(
                self.pick(features, logits), y, self.global_table, self.global_present)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def upload(self) -> dict:
        start = time.perf_counter()
        means, classes, counts = self.training_class_means()
        reply = {"means": to_payload(means), "classes": to_payload(classes)}
        if self.send_counts:
            reply["counts"] = to_payload(counts)
        reply["timings"] = {"prototype_collection": time.perf_counter() - start}
        return reply

    @torch.no_grad()
    def training_class_means(self):
        """Per-class means of the shared vector over the training set; also caches the training CE."""
        self.model.eval()
        sums = counts = None
        loss_sum = 0.0
        for x, y in self.full_batches(self.train_x, self.train_y):
            features = self.model.base(x)
            logits = self.model.head(features)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            batch_sums, batch_counts = class_sums(self.pick(features, logits), y, self.num_classes)
            sums = batch_sums if sums is None else sums + batch_sums
            counts = batch_counts if counts is None else counts + batch_counts
        self._train_loss = (loss_sum, self.train_samples)
        return present_means(sums, counts)

    # ---- what the server sends back -----------------------------------------------------
    def receive_global(self, payload) -> dict:
        """Keep the server's per-class vectors {"means", "classes"} for training (and prediction)."""
        table, present = class_table(payload["means"], payload["classes"], self.num_classes)
        self.global_table, self.global_present = self.to_device(table), self.to_device(present)
        return {}


# ---- servers ----------------------------------------------------------------------------
class ClassMeanServer(Server):
    """One round: selected clients train and upload per-class means; `aggregate` turns
    them into one payload, which every client receives (all clients are evaluated, on
    what the server last sent, as in HtFLlib)."""

    def aggregate(self, replies: list[dict]) -> dict:
        raise NotImplementedError

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
        with self.timer.phase("aggregation"):
            message = self.aggregate(replies)
        start = time.perf_counter()
        self.executor.broadcast(self.all_client_ids, "receive_global", message)
        self.timer.add("communication", time.perf_counter() - start)
