"""GPT-FL client: plain FedAvg. It trains the global model of its architecture's group
with cross-entropy and uploads the full state dict."""
from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from utils.payload import state_to_payload


class clientGPTFL(Client):
    @server_call(payload=("model",))
    def load_global(self, payload) -> dict:
        """Replace the whole model with the group's global one (BatchNorm statistics included)."""
        self.model.load_state_dict(payload["model"])
        self._train_loss = None  # the cached training loss was for the old weights
        return {}

    def upload(self) -> dict:
        return {"model": state_to_payload(self.model)}
