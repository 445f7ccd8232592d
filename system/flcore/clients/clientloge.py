"""FedLoGe client: a backbone trained through the frozen SSE-C, plus two heads on its
detached features, the shared global head g and the client's personal head l_k.

Per batch, one forward pass of the backbone feeds three SGD updates (lr 0.03, momentum 0.5):
backbone on CE(SSE-C(f)), g on CE(g(f.detach())), l_k on CE(l_k(f.detach())). Their
parameters are disjoint and the heads see detached features, so one backward pass of the
summed losses gives each part exactly its own loss's gradient.
"""
import copy

import torch
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from flcore.loge_realignment import mask_absent_classes, realign_global, realign_local
from utils.metrics import classification_stats
from utils.payload import state_to_payload


class clientLoGe(Client):
    # Its three optimisers are made afresh in every round's local_train.
    CHECKPOINT_STATIC = Client.CHECKPOINT_STATIC | {"optimizers"}

    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.momentum = args.loge_momentum
        self.realign_norm = args.loge_realign_norm
        self.personal_head = copy.deepcopy(self.model.head)
        self.sse_c = None  # [feature_dim, K], frozen
        self.present = torch.bincount(self.train_y, minlength=self.num_classes) > 0
        self.rounds_trained = 0

    # ---- messages -------------------------------------------------------------------
    def setup(self, payload):
        self.sse_c = payload["sse_c"].to(self.device)
        self.load_global(payload)
        # Personal heads start from the common global head.
        self.personal_head.load_state_dict(payload["head"])
        self.personal_head.to(self.device)
        return {}

    @server_call(payload=("backbone", "head"))
    def load_global(self, payload):
        self.model.base.load_state_dict(payload["backbone"])
        self.model.head.load_state_dict(payload["head"])
        self._train_loss = None
        return {}

    def upload(self):
        return {"backbone": state_to_payload(self.model.base), "head": state_to_payload(self.model.head)}

    # ---- training -------------------------------------------------------------------
    def make_optimizer(self):
        return None  # three optimisers, made afresh each round in local_train

    def local_train(self):
        learning_rate = self.learning_rate
        if self.args.learning_rate_decay:
            learning_rate *= self.args.learning_rate_decay_gamma ** self.rounds_trained

        def sgd(module):
            return torch.optim.SGD(module.parameters(), lr=learning_rate, momentum=self.momentum)

        self.optimizers = (sgd(self.model.base), sgd(self.model.head), sgd(self.personal_head))
        self.personal_head.train()
        super().local_train()
        self.rounds_trained += 1

    def train_step(self, x, y):
        features = self.model.base(x)
        detached = features.detach()
        backbone_loss = F.cross_entropy(features @ self.sse_c, y)
        global_loss = F.cross_entropy(self.model.head(detached), y)
        personal_loss = F.cross_entropy(self.personal_head(detached), y)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        (backbone_loss + global_loss + personal_loss).backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return backbone_loss + global_loss + personal_loss

    # ---- reading the model ----------------------------------------------------------
    def personal_realigned_logits(self, features: torch.Tensor, personal: torch.Tensor) -> torch.Tensor:
        """l_k(f) plus the locally realigned global head's logits, absent classes masked."""
        local_realigned = features @ realign_local(self.model.head.weight, self.personal_head.weight).T
        return mask_absent_classes(personal + local_realigned, self.present)

    def head_logits(self, features: torch.Tensor) -> dict:
        """Logits of the four heads FedLoGe reports, for features of this client's backbone."""
        global_weight, global_bias = self.model.head.weight, self.model.head.bias
        personal = self.personal_head(features)
        return {
            "generic": self.model.head(features),
            "generic_realigned": features @ realign_global(global_weight, self.realign_norm).T + global_bias,
            "personal": personal,
            "personal_realigned": self.personal_realigned_logits(features, personal),
        }

    def scores(self, x):
        features = self.model.base(x)
        return self.personal_realigned_logits(features, self.personal_head(features))

    def classification_loss(self, x, y):
        """Cross-entropy of the personalised, realigned logits: what rs_test_acc scores."""
        return F.cross_entropy(self.scores(x), y)

    def evaluate(self, payload=None):
        self.model.eval()
        self.personal_head.eval()
        outputs = {}
        with torch.no_grad():
            for x, _ in self.full_batches(self.test_x, self.test_y):
                for name, logits in self.head_logits(self.model.base(x)).items():
                    outputs.setdefault(name, []).append(logits.cpu())
        labels = self.test_y
        logits = {name: torch.cat(parts) for name, parts in outputs.items()}
        if not logits:
            empty = torch.zeros(0, self.num_classes)
            logits = dict.fromkeys(("generic", "generic_realigned", "personal", "personal_realigned"), empty)
        stats = classification_stats(logits["personal_realigned"], labels, self.num_classes)
        loss_sum, count = self.train_loss_stats()
        stats.update(train_loss_sum=loss_sum, train_num=count)
        stats["class_total"] = torch.bincount(labels, minlength=self.num_classes)
        for name in ("generic", "generic_realigned"):
            hits = logits[name].argmax(dim=1) == labels if len(labels) else torch.zeros(0, dtype=torch.bool)
            stats[f"{name}_class_correct"] = torch.bincount(labels[hits], minlength=self.num_classes)
        stats["personal_correct"] = int((logits["personal"].argmax(dim=1) == labels).sum()) if len(labels) else 0
        return stats
