"""FedTGP (Zhang et al., AAAI 2024): trainable global prototypes.

Clients train as in FedProto and upload one prototype per class they hold. The
server keeps a small network that outputs one global prototype per class and trains
it with Adaptive-margin-enhanced Contrastive Learning (ACL): each uploaded
prototype should be nearer to its class's global prototype than to any other by a
margin, where the margin is the largest class-wise gap between the clients'
prototype cluster centers, capped by -mart. Every client receives all C prototypes.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clienttgp import clientTGP
from flcore.losses import pairwise_sq_dists
from flcore.prototypes import average_per_class, shuffled_batches, stack_uploads
from flcore.servers.serverclassmean import ClassMeanServer
from utils.payload import to_payload
from utils.seeding import derive_seed


class TrainableGlobalPrototypes(nn.Module):
    """Embedding(C, D) -> Linear(D, H) -> ReLU -> Linear(H, D): row c is class c's prototype."""

    def __init__(self, num_classes: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, feature_dim)
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, feature_dim))

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding.weight)


def adaptive_margin(centers: torch.Tensor, threshold: float) -> float:
    """min(max over classes of the distance from a class's cluster center to the nearest
    other center, threshold); the threshold when fewer than two classes were uploaded."""
    if len(centers) < 2:
        return float(threshold)
    distances = torch.cdist(centers.double(), centers.double())
    distances.fill_diagonal_(float("inf"))
    return min(float(distances.min(dim=1).values.max()), float(threshold))


def acl_loss(vectors: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor,
             margin: float) -> torch.Tensor:
    """CE over minus the Euclidean distances to all global prototypes, with the margin
    added to the distance to the true class's prototype."""
    # The clamp keeps sqrt's gradient finite when a prototype meets a vector exactly.
    distances = pairwise_sq_dists(vectors, prototypes).clamp_min(1e-12).sqrt()
    distances = distances + margin * F.one_hot(labels, prototypes.shape[0]).to(distances.dtype)
    return F.cross_entropy(-distances, labels)


def train_prototypes(model: TrainableGlobalPrototypes, vectors: torch.Tensor, labels: torch.Tensor,
                     margin: float, lr: float, epochs: int, batch_size: int,
                     generator: torch.Generator) -> None:
    """SGD on the ACL loss over shuffled batches of the uploaded (prototype, class) pairs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for index in shuffled_batches(len(labels), batch_size, generator):
            index = index.to(vectors.device)
            loss = acl_loss(vectors[index], labels[index], model(), margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class FedTGP(ClassMeanServer):
    client_class = clientTGP

    def setup(self):
        dim = self.args.feature_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "tgp-init"))
            self.prototype_model = TrainableGlobalPrototypes(self.num_classes, dim, dim).to(self.device)

    def aggregate(self, replies):
        centers, _ = average_per_class([r["means"] for r in replies], [r["classes"] for r in replies],
                                       self.num_classes)
        margin = adaptive_margin(centers, self.args.margin_threthold)
        self.series["tgp_margin"].append(margin)
        vectors, labels = stack_uploads(replies)
        args = self.args
        train_prototypes(self.prototype_model, vectors.to(self.device), labels.to(self.device), margin,
                         args.server_learning_rate, args.server_epochs, args.server_batch_size, self.rng)
        self.prototype_model.eval()
        with torch.no_grad():
            prototypes = self.prototype_model()
        return {"means": to_payload(prototypes), "classes": torch.arange(self.num_classes)}
