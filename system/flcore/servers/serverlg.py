"""LG-FedAvg (Liang et al. 2020, "Think locally, act globally") for heterogeneous models.

Clients keep their own feature extractors and share only the classifier head
Linear(feature_dim, C), which every model family here has. Each round the selected
clients train with cross-entropy and upload their heads; the server averages them
weighted by training samples and sends the average to every client, which loads it
before it is next evaluated or trained. Traffic per round: (feature_dim * C + C) floats
up per selected client and down per client.
"""

import torch
import torch.nn as nn

from flcore.clients.clientlg import clientLG
from flcore.servers.serverbase import Server
from flcore.weighted_average import average_uploads
from utils.payload import state_to_payload
from utils.seeding import derive_seed


class LGFedAvg(Server):
    SHARES_HEADS = True
    client_class = clientLG

    def setup(self):
        # One common starting head, as FedAvg starts every client from one global model.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "lg-head"))
            head = nn.Linear(self.args.feature_dim, self.num_classes)
        self.head = state_to_payload(head)
        self.broadcast(self.all_client_ids, self.client_class.load_head, {"head": self.head})

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
        with self.timer.phase("aggregation"):
            self.head = average_uploads(replies, "head")
        with self.timer.phase("communication"):
            self.broadcast(self.all_client_ids, self.client_class.load_head, {"head": self.head})
