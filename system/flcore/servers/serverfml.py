"""FML: Federated Mutual Learning (Shen et al. 2020).

Every client keeps its private model and trains a copy of one small shared model beside
it by deep mutual learning (see clientfml). Each round the server sends the shared model
to the selected clients, they send their trained copies back, and the server averages
them weighted by training samples (FedAvg). Traffic per round: the shared model's floats
down and up per selected client.
"""

from flcore.clients.clientfml import clientFML
from flcore.mutual_learning import build_shared_model
from flcore.servers.serverbase import Server
from flcore.weighted_average import average_uploads
from utils.errors import UserError
from utils.payload import state_to_payload
from utils.seeding import derive_seed


class FML(Server):
    client_class = clientFML
    # HtFLlib's scripts: -al 0.5 -bt 0.5.

    def setup(self):
        for flag, value in (("-al", self.args.alpha), ("-bt", self.args.beta)):
            if not 0 <= value <= 1:
                raise UserError(f"FML: {flag} weighs cross-entropy against KL, so it must be in [0, 1]; "
                                f"got {value}")
        model = build_shared_model(self.num_classes, self.args.feature_dim, self.data.image_shape,
                                   derive_seed(self.seed, "shared-model"))
        self.shared = state_to_payload(model)

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids, {"shared": self.shared})
        with self.timer.phase("aggregation"):
            self.shared = average_uploads(replies, "shared")
