"""How the server reaches its clients: by method name, with payloads, through an executor.

The server never touches a client object. It asks the executor to call a named
client method with a payload and gets plain replies back, in the order of the ids
it asked for. The in-process executor below runs clients one after another; a
distributed executor implements the same two calls.
"""
from utils.payload import Traffic


class InProcessExecutor:
    """Clients live in this process and run one after another."""

    def __init__(self, clients: list):
        self._clients = {client.id: client for client in clients}
        self.traffic = Traffic()

    @property
    def client_ids(self) -> list[int]:
        return sorted(self._clients)

    def broadcast(self, client_ids, method: str, payload=None, count: bool = True, guarded: bool = False) -> list:
        """Call `method(payload)` on each client with the same payload.

        `count=False` is for bookkeeping calls (evaluation, checkpoints) that a real
        deployment would answer with a few numbers and that the papers do not count.
        `guarded=True` goes through the client's `guarded`, which undoes and reports a
        call whose losses or reply are not finite.
        """
        client_ids = list(client_ids)
        if count:
            self.traffic.add_down(payload, copies=len(client_ids))
        if guarded:
            replies = [self._clients[cid].guarded(method, payload) for cid in client_ids]
        else:
            replies = [getattr(self._clients[cid], method)(payload) for cid in client_ids]
        if count:
            for reply in replies:
                self.traffic.add_up(reply)
        return replies

    def scatter(self, method: str, payloads: dict, count: bool = True) -> list:
        """Call `method(payloads[cid])` on each client in `payloads`, in id order."""
        client_ids = sorted(payloads)
        if count:
            for cid in client_ids:
                self.traffic.add_down(payloads[cid])
        replies = [getattr(self._clients[cid], method)(payloads[cid]) for cid in client_ids]
        if count:
            for reply in replies:
                self.traffic.add_up(reply)
        return replies

    def take_traffic(self) -> Traffic:
        done, self.traffic = self.traffic, Traffic()
        return done

    def close(self) -> None:
        self._clients.clear()
