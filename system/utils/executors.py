"""How the server reaches its clients: by method name, with payloads, through an executor.

The server never touches a client object. It asks the executor to call a named
client method with a payload and gets plain replies back, in the order of the ids
it asked for. Two executors implement the same calls:
- `InProcessExecutor` (here): clients live in this process and run one after another;
- `RayExecutor` (`utils/ray_executor.py`): clients live in Ray actors, each holding a
  fixed set of them, and actors run in parallel.
The server picks one (`Server.make_executor`) and gives it a client builder
(`flcore.clients.factory.ClientFactory`): executors know nothing of models or algorithms.
"""
from utils.memory import process_memory
from utils.payload import Traffic
from utils.state import park_state, unpark_state

EXECUTORS = ("inprocess", "ray")


def build_clients(args, build_client, data, client_ids) -> list:
    """The clients `client_ids`, each `build_client(args, cid, client_data)` with its data
    (`data.clients[cid]` or `data[cid]`), built one after another in id order."""
    clients = []
    for cid in client_ids:
        client_data = data[cid] if isinstance(data, dict) else data.clients[cid]
        clients.append(build_client(args, cid, client_data))
    return clients


class Executor:
    """Counts traffic around the two calls; subclasses run them (`_broadcast`, `_scatter`)."""

    def __init__(self):
        self.traffic = Traffic()
        #: `progress(method, done, total)` as clients answer a call, or None (see `utils.progress`)
        self.progress = None

    def report_progress(self, method: str, done: int, total: int) -> None:
        if self.progress is not None and total > 1:
            self.progress(method, done, total)

    def broadcast(self, client_ids, method: str, payload=None, count: bool = True, guarded: bool = False) -> list:
        """Call `method(payload)` on each client with the same payload; replies in the order of `client_ids`.

        `count=False` is for bookkeeping calls (evaluation, checkpoints) that a real
        deployment would answer with a few numbers and that the papers do not count.
        `guarded=True` goes through the client's `guarded`, which undoes and reports a
        call whose losses or reply are not finite.
        """
        client_ids = [int(cid) for cid in client_ids]
        if count:
            self.traffic.add_down(payload, copies=len(client_ids))
        replies = self._broadcast(client_ids, method, payload, guarded)
        if count:
            for reply in replies:
                self.traffic.add_up(reply)
        return replies

    def scatter(self, method: str, payloads: dict, count: bool = True) -> list:
        """Call `method(payloads[cid])` on each client in `payloads`; replies in id order."""
        payloads = {int(cid): payload for cid, payload in sorted(payloads.items())}
        if count:
            for payload in payloads.values():
                self.traffic.add_down(payload)
        replies = self._scatter(method, payloads)
        if count:
            for reply in replies:
                self.traffic.add_up(reply)
        return replies

    def take_traffic(self) -> Traffic:
        done, self.traffic = self.traffic, Traffic()
        return done

    def _broadcast(self, client_ids: list, method: str, payload, guarded: bool) -> list:
        raise NotImplementedError

    def _scatter(self, method: str, payloads: dict) -> list:
        raise NotImplementedError

    def memory(self) -> dict:
        """Peak host and GPU memory so far, in MiB, over every process holding clients."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the clients (and any worker processes)."""


class InProcessExecutor(Executor):
    """Clients live in this process and run one after another.

    With `offload`, a client's models, optimiser states and tensors are moved to host
    memory after each call and back to its accelerator before the next, so only the
    client being called occupies the GPU (a no-op for clients on the CPU).
    """

    def __init__(self, clients: list, offload: bool = False):
        super().__init__()
        self._clients = {client.id: client for client in clients}
        self.offload = offload
        self._parked = {}
        if offload:
            for client in clients:
                self._park(client)

    @property
    def client_ids(self) -> list[int]:
        return sorted(self._clients)

    def _park(self, client) -> None:
        if client.device.type != "cpu":
            self._parked[client.id] = park_state(client, client.device)

    def _call(self, cid: int, method: str, payload, guarded: bool):
        client = self._clients[cid]
        if cid in self._parked:
            unpark_state(client, self._parked.pop(cid), client.device)
        try:
            return client.guarded(method, payload) if guarded else getattr(client, method)(payload)
        finally:
            if self.offload:
                self._park(client)

    def _broadcast(self, client_ids, method, payload, guarded):
        return self._each(method, [(cid, payload) for cid in client_ids], guarded)

    def _scatter(self, method, payloads):
        return self._each(method, list(payloads.items()), False)

    def _each(self, method, calls, guarded) -> list:
        replies = []
        for cid, payload in calls:
            replies.append(self._call(cid, method, payload, guarded))
            self.report_progress(method, len(replies), len(calls))
        return replies

    def memory(self) -> dict:
        return process_memory()

    def close(self) -> None:
        self._clients.clear()
        self._parked.clear()
