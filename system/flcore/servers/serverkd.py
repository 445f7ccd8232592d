"""FedKD (Wu et al., Nature Communications 2022): communication-efficient FL by mutual distillation.

Every client keeps a private teacher and trains a shared small mentee beside it (see
clientkd). Only the mentee's updates travel, as truncated SVD factors keeping a fraction
T(t) = T_start + (T_end - T_start) * t / rounds of their energy (see svd_compression).
Each round the server decompresses the selected clients' updates, averages them
weighted by training samples, compresses the average at the same energy and sends it to
every client, so all clients keep the same global mentee. The initial mentee goes to
every client once, at setup.
"""

from flcore.clients.clientkd import clientKD
from flcore.mutual_learning import build_shared_model
from flcore.servers.serverbase import Server
from flcore.svd_compression import compress_state, decompress_state
from flcore.weighted_average import weighted_average
from utils.errors import UserError
from utils.payload import state_to_payload
from utils.seeding import derive_seed


def energy_at(round_idx: int, rounds: int, start: float, end: float) -> float:
    """The fraction of singular-value energy kept in round `round_idx` (0-based)."""
    return start + (end - start) * round_idx / rounds


def aggregate_updates(replies: list[dict], shapes: dict, energy: float) -> dict:
    """Decompress each client's mentee update, average them by training samples, compress again."""
    updates = [decompress_state(reply["update"], shapes) for reply in replies]
    average = weighted_average(updates, [reply["num_samples"] for reply in replies])
    return compress_state(average, energy)


class FedKD(Server):
    client_class = clientKD
    # HtFLlib's scripts: -mlr 0.01 -Ts 0.95 -Te 0.98.

    def setup(self):
        args = self.args
        for flag, value in (("-Ts", args.T_start), ("-Te", args.T_end)):
            if not 0 < value <= 1:
                raise UserError(f"FedKD: {flag} is a fraction of energy to keep, in (0, 1]; got {value}")
        mentee = build_shared_model(self.num_classes, args.feature_dim, self.data.image_shape,
                                    derive_seed(self.seed, "shared-model"))
        initial = state_to_payload(mentee)
        self.shapes = {name: value.shape for name, value in initial.items()}
        self.broadcast(self.all_client_ids, self.client_class.setup, {"mentee": initial})

    def train_round(self, round_idx, client_ids):
        energy = energy_at(round_idx, self.global_rounds, self.args.T_start, self.args.T_end)
        replies = self.train_clients(client_ids, {"energy": energy})
        with self.timer.phase("aggregation"):
            update = aggregate_updates(replies, self.shapes, energy)
        with self.timer.phase("communication"):
            self.broadcast(self.all_client_ids, self.client_class.apply_mentee_update, {"update": update})
