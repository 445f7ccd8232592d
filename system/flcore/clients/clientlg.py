"""LG-FedAvg client: trains its whole model with cross-entropy, shares only the head."""
from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from utils.payload import state_to_payload


class clientLG(Client):
    @server_call(payload=("head",))
    def load_head(self, payload) -> dict:
        """Replace the head with the server's averaged one; the feature extractor stays local."""
        self.model.head.load_state_dict(payload["head"])
        self._train_loss = None  # the cached training loss was for the old head
        return {}

    def upload(self) -> dict:
        return {"head": state_to_payload(self.model.head)}
