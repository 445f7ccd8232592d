"""FedGH client (Yi et al., ACM MM 2023).

Trains its whole model with CE, uploads the mean feature of each class it holds,
and replaces its head with the global head the server sends.
"""
from flcore.prototypes import ClassMeanClient


class clientGH(ClassMeanClient):
    shared_vector = "features"

    def receive_global(self, payload) -> dict:
        self.model.head.load_state_dict(payload)
        self._train_loss = None  # a new head changes the training loss
        return {}
