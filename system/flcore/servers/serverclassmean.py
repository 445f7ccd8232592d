"""The server round shared by FedProto, FD, FedGH and FedTGP (the per-class functions
it uses are in flcore/prototypes.py)."""
import time

from flcore.servers.serverbase import Server


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
        self.broadcast(self.all_client_ids, self.client_class.receive_global, message)
        self.timer.add("communication", time.perf_counter() - start)
