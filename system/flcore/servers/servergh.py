"""FedGH (Yi et al., ACM MM 2023): a global prediction head trained on the server.

Each round the selected clients upload one prototype per class they hold; the server
trains its head, nn.Linear(feature_dim, num_classes), with CE on the (prototype,
class) pairs and sends the head to every client, which replaces its own with it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clientgh import clientGH
from flcore.prototypes import shuffled_batches, stack_uploads
from flcore.servers.serverclassmean import ClassMeanServer
from utils.payload import state_to_payload
from utils.seeding import derive_seed


def train_global_head(head: nn.Linear, vectors: torch.Tensor, labels: torch.Tensor, lr: float,
                      epochs: int, batch_size: int, generator: torch.Generator) -> None:
    """SGD on CE(head(prototype), class) over shuffled batches of the uploaded pairs."""
    optimizer = torch.optim.SGD(head.parameters(), lr=lr)
    for _ in range(epochs):
        for index in shuffled_batches(len(labels), batch_size, generator):
            index = index.to(vectors.device)
            loss = F.cross_entropy(head(vectors[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


class FedGH(ClassMeanServer):
    SHARES_HEADS = True
    client_class = clientGH

    def setup(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "gh-head"))
            self.head = nn.Linear(self.args.feature_dim, self.num_classes).to(self.device)
        # Every client starts from the same head (HtFLlib sends client 0's before round 0).
        self.broadcast(self.all_client_ids, self.client_class.receive_global, state_to_payload(self.head))

    def aggregate(self, replies):
        vectors, labels = stack_uploads(replies)
        args = self.args
        train_global_head(self.head, vectors.to(self.device), labels.to(self.device),
                          args.server_learning_rate, args.server_epochs, args.server_batch_size, self.rng)
        return state_to_payload(self.head)
