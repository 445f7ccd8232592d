"""FedLoGe (Xiao et al., ICLR 2024): joint local and generic federated learning under
long-tailed data.

Every client trains one shared backbone through a frozen sparse ETF classifier (SSE-C),
a shared global head and a personal head on the backbone's detached features. The
server averages the backbone (BatchNorm buffers included) and the global head, weighted
by training samples; personal heads never leave their clients. Heads are realigned post
hoc (see `flcore.loge_realignment`) whenever the models are evaluated.

Reported per evaluation, besides the standard series (whose `rs_test_acc` is the
personalised realigned accuracy over all clients' test samples):
- `rs_generic_acc` / `rs_generic_realigned_acc`: the global model (backbone + global head,
  before / after realignment) on the union of the clients' test sets, as balanced
  accuracy (mean per-class recall), the estimate of the balanced global test set's;
- `rs_personal_acc` / `rs_personal_realigned_acc`: mean over clients of the personal
  head's accuracy, alone / realigned with the global head.

FedLoGe averages one backbone, so all clients must share one architecture.
Traffic per round: backbone and global head up per selected client and down per client.
"""

import numpy as np
import torch
from torch import nn

from flcore.clients.clientloge import clientLoGe
from flcore.loge_realignment import balanced_accuracy
from flcore.servers.serverbase import Server
from flcore.sse_c import build_sse_c
from flcore.weighted_average import average_uploads
from trainmodel.families import resolve_family
from trainmodel.models import build_model
from utils.errors import UserError
from utils.payload import state_to_payload
from utils.seeding import derive_seed, torch_generator


def require_one_architecture(family: str, algorithm: str) -> str:
    """The family's only model name, or a one-line error for a heterogeneous family."""
    models = resolve_family(family)
    if len(set(models)) != 1:
        raise UserError(f"{algorithm} averages one backbone, so all clients need the same architecture, "
                        f"but -m {family} mixes {len(set(models))} ({', '.join(dict.fromkeys(models))}): "
                        f"pass a single model, e.g. -m FedAvgCNN or -m ResNet18")
    return models[0]


def has_normalisation(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm) for m in model.modules())


class FedLoGe(Server):
    SHARES_HEADS = True
    client_class = clientLoGe

    @classmethod
    def check_args(cls, args):
        super().check_args(args)
        require_one_architecture(args.model_family, args.algorithm)

    def setup(self):
        self.architecture = require_one_architecture(self.args.model_family, self.args.algorithm)
        channels, size = self.data.image_shape[0], self.data.image_shape[-1]
        # The starting global model: one seeded initialisation for every client (FedAvg's start).
        model = build_model(self.architecture, num_classes=self.num_classes, feature_dim=self.args.feature_dim,
                            image_size=size, in_channels=channels, seed=derive_seed(self.seed, "loge-global"))
        if not has_normalisation(model):
            print(f"note: {self.architecture} has no normalisation layer; under SSE-C's small columns (norm "
                  "0.1) its features grow round after round and FedLoGe's heads can diverge at -lr 0.03: a "
                  "BatchNorm backbone (e.g. -m ResNet8) or a smaller -lr is safer")
        self.backbone, self.head = state_to_payload(model.base), state_to_payload(model.head)
        with self.timer.phase("sse_c"):
            sse_c = build_sse_c(self.num_classes, self.args.feature_dim,
                                torch_generator(derive_seed(self.seed, "sse-c")),
                                steps=self.args.sse_c_steps, sparsity=self.args.sse_c_sparsity)
        self.broadcast(self.all_client_ids, self.client_class.setup,
                       {"sse_c": sse_c, "backbone": self.backbone, "head": self.head})

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
        with self.timer.phase("aggregation"):
            self.backbone = average_uploads(replies, "backbone")
            self.head = average_uploads(replies, "head")
        with self.timer.phase("communication"):
            self.broadcast(self.all_client_ids, self.client_class.load_global, {"backbone": self.backbone, "head": self.head})

    def record_evaluation(self, replies):
        return summarize_loge_evaluation(replies)


def summarize_loge_evaluation(replies: list[dict]) -> dict:
    """FedLoGe's four accuracies from client evaluation replies (see the module docstring)."""
    total = sum(reply["class_total"] for reply in replies)
    tested = [reply for reply in replies if reply["test_num"] > 0]
    return {
        "rs_generic_acc": balanced_accuracy(sum(r["generic_class_correct"] for r in replies), total),
        "rs_generic_realigned_acc": balanced_accuracy(sum(r["generic_realigned_class_correct"] for r in replies),
                                                      total),
        "rs_personal_acc": float(np.mean([r["personal_correct"] / r["test_num"] for r in tested]))
        if tested else float("nan"),
        "rs_personal_realigned_acc": float(np.mean([r["test_correct"] / r["test_num"] for r in tested]))
        if tested else float("nan"),
    }
