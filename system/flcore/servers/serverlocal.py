"""Local: the reference every federated method must beat. Clients never exchange anything."""

from flcore.clients.clientlocal import clientLocal
from flcore.servers.serverbase import Server


class Local(Server):
    client_class = clientLocal

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
