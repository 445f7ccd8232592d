"""FedKD client: a private teacher (mentor) and the shared small mentee learn from each other.

Adaptive mutual distillation (Wu et al. 2022), with the task losses L_t = CE(teacher),
L_s = CE(mentee) and a learned map W_h from the mentee's features to the teacher's:
    teacher: L_t + [KL(p_s || p_t) + MSE(H_t, W_h H_s)] / (L_t + L_s)
    mentee:  L_s + [KL(p_t || p_s) + MSE(H_t, W_h H_s)] / (L_t + L_s)
with softmax at temperature 1, as in the paper. The paper's hidden loss also matches
transformer attention maps; the mentee here is a CNN, so only the features before the
heads are matched.
The mentee's update over the round (new - received weights) goes up SVD-compressed;
the server's compressed aggregate comes back and moves the mentee to the new global one.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from flcore.mutual_learning import GRAD_CLIP, build_shared_model, kl_to_target
from flcore.svd_compression import compress_state, decompress_state
from utils.payload import state_to_payload
from utils.seeding import derive_seed

# Keeps the adaptive weight finite if both task losses round to zero.
MIN_TASK_LOSS = 1e-6


def adaptive_distillation_losses(logits, features, mentee_logits, mapped_mentee_features, labels):
    """(teacher loss, mentee loss) for one batch; each model gets gradients from its own only."""
    task = F.cross_entropy(logits, labels)
    mentee_task = F.cross_entropy(mentee_logits, labels)
    # Distill harder when both models predict well; a weight, so no gradient flows through it.
    weight = 1.0 / (task + mentee_task).detach().clamp_min(MIN_TASK_LOSS)
    teacher = task + weight * (kl_to_target(logits, mentee_logits)
                               + F.mse_loss(features, mapped_mentee_features.detach()))
    mentee = mentee_task + weight * (kl_to_target(mentee_logits, logits)
                                     + F.mse_loss(mapped_mentee_features, features.detach()))
    return teacher, mentee


class clientKD(Client):
    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        feature_dim = args.feature_dim
        # The mentee's weights come from the server at setup; only the architecture is built here.
        self.mentee = build_shared_model(self.num_classes, feature_dim, tuple(self.train_x.shape[1:]),
                                         derive_seed(seed, "fedkd-mentee", client_id)).to(self.device)
        self.mentee_optimizer = torch.optim.SGD(self.mentee.parameters(), lr=args.mentee_learning_rate)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "fedkd-hidden-map", client_id))
            self.hidden_map = nn.Linear(feature_dim, feature_dim, bias=False).to(self.device)  # W_h
        self.hidden_map_optimizer = torch.optim.SGD(self.hidden_map.parameters(), lr=self.learning_rate)
        self.global_mentee = None  # CPU state dict: the last global mentee, which updates are relative to
        self.energy = None

    @server_call(payload=("mentee",))
    def setup(self, payload):
        self.global_mentee = {name: value.clone() for name, value in payload["mentee"].items()}
        self.mentee.load_state_dict(self.global_mentee)
        return {}

    def train(self, payload=None):
        self.energy = payload["energy"]
        self.mentee.train()
        self.hidden_map.train()
        return super().train(payload)

    def train_step(self, x, y):
        features = self.model.base(x)
        mentee_features = self.mentee.base(x)
        teacher_loss, mentee_loss = adaptive_distillation_losses(
            self.model.head(features), features, self.mentee.head(mentee_features),
            self.hidden_map(mentee_features), y)
        optimizers = (self.optimizer, self.mentee_optimizer, self.hidden_map_optimizer)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        (teacher_loss + mentee_loss).backward()  # the two losses share no trainable parameters
        for module in (self.model, self.mentee, self.hidden_map):
            nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP)
        for optimizer in optimizers:
            optimizer.step()
        return teacher_loss + mentee_loss

    def upload(self):
        start = time.perf_counter()
        trained = state_to_payload(self.mentee)
        update = {name: trained[name] - self.global_mentee[name] for name in trained}
        compressed = compress_state(update, self.energy)
        return {"update": compressed, "timings": {"compression": time.perf_counter() - start}}

    @server_call(payload=("update",))
    def apply_mentee_update(self, payload) -> dict:
        """The mentee becomes the new global one: last global + the server's aggregated update."""
        shapes = {name: value.shape for name, value in self.global_mentee.items()}
        update = decompress_state(payload["update"], shapes)
        self.global_mentee = {name: value + update[name] for name, value in self.global_mentee.items()}
        self.mentee.load_state_dict(self.global_mentee)
        return {}
