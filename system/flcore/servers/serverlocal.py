"""Local: the reference every federated method must beat. Clients never exchange anything."""
import time

from flcore.clients.clientlocal import clientLocal
from flcore.servers.serverbase import Server


class Local(Server):
    client_class = clientLocal

    def train_round(self, round_idx, client_ids):
        start = time.perf_counter()
        replies = self.executor.broadcast(client_ids, "train")
        compute = self.collect_timings(replies)
        self.timer.add("communication", time.perf_counter() - start - compute)
