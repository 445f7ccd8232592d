"""The client round shared by FedProto, FD, FedGH and FedTGP (the per-class functions
it uses are in flcore/prototypes.py)."""
import time

import torch
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from flcore.prototypes import class_sums, class_table, present_means, pull_to_class_rows
from utils.payload import to_payload


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
    #: whether the server sends per-class vectors to pull towards (FedGH sends a head instead)
    pulls_to_global = True

    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.lamda = args.lamda if self.pulls_to_global else None  # -lam: only where it is read
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
    @server_call(payload=("means", "classes"))
    def receive_global(self, payload) -> dict:
        """Keep the server's per-class vectors {"means", "classes"} for training (and prediction)."""
        table, present = class_table(payload["means"], payload["classes"], self.num_classes)
        self.global_table, self.global_present = self.to_device(table), self.to_device(present)
        return {}
