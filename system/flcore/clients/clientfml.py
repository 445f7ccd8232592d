"""FML client: deep mutual learning between the private model and the shared global model.

    private loss = alpha * CE(private) + (1 - alpha) * KL(p_global || p_private)
    global loss  = beta  * CE(global)  + (1 - beta)  * KL(p_private || p_global)

Both models train on every batch, each through its own loss; evaluation uses the
private model (the base client's default).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.mutual_learning import GRAD_CLIP, build_shared_model, kl_to_target
from utils.payload import state_to_payload
from utils.seeding import derive_seed


def mutual_learning_losses(logits, shared_logits, labels, alpha: float, beta: float):
    """(private model's loss, shared model's loss) of FML's eqs. for one batch."""
    private = alpha * F.cross_entropy(logits, labels) + (1 - alpha) * kl_to_target(logits, shared_logits)
    shared = beta * F.cross_entropy(shared_logits, labels) + (1 - beta) * kl_to_target(shared_logits, logits)
    return private, shared


class clientFML(Client):
    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.alpha, self.beta = args.alpha, args.beta
        # Its weights come from the server with every round; only the architecture is built here.
        self.shared = build_shared_model(self.num_classes, args.feature_dim, tuple(self.train_x.shape[1:]),
                                         derive_seed(seed, "fml-shared", client_id)).to(self.device)
        self.shared_optimizer = torch.optim.SGD(self.shared.parameters(), lr=self.learning_rate)

    def train(self, payload=None):
        self.shared.load_state_dict(payload["shared"])
        self.shared.train()
        return super().train(payload)

    def train_step(self, x, y):
        private_loss, shared_loss = mutual_learning_losses(self.model(x), self.shared(x), y,
                                                           self.alpha, self.beta)
        self.optimizer.zero_grad(set_to_none=True)
        self.shared_optimizer.zero_grad(set_to_none=True)
        (private_loss + shared_loss).backward()  # the losses share no parameters
        nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        nn.utils.clip_grad_norm_(self.shared.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.shared_optimizer.step()
        return private_loss + shared_loss

    def upload(self):
        return {"shared": state_to_payload(self.shared)}
