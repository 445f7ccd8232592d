"""FedGH client (Yi et al., ACM MM 2023).

Trains its whole model with CE, uploads the mean feature of each class it holds,
and replaces its head with the global head the server sends.
"""
from flcore.clients.clientclassmean import ClassMeanClient
from flcore.clients.interface import server_call


class clientGH(ClassMeanClient):
    shared_vector = "features"
    pulls_to_global = False  # the server sends a head, not prototypes

    @server_call
    def receive_global(self, payload) -> dict:
        self.model.head.load_state_dict(payload)
        self._train_loss = None  # a new head changes the training loss
        return {}
