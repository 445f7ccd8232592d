"""FedGen: data-free knowledge distillation with a feature generator (Zhu et al., ICML 2021),
in HtFLlib's form for heterogeneous models: only the heads (Linear(feature_dim, C)) are shared.

Each round the selected clients train (CE plus a regulariser on generated features, see
clientgen.py) and upload their heads. The server then
1. trains the generator G(z, y) -> feature for `-se` steps with Adam (`-glr`) so that the
   ensemble of the uploaded heads, each weighted per class by its share of that class's
   samples, classifies G's features as their labels, plus the paper's diversity loss;
2. averages the heads weighted by the clients' sample counts;
3. sends G's parameters and the averaged head to every client.
Per-class sample counts go up once, at setup: they never change. Clients add the
regulariser from round 1 on, once a trained generator exists (as the official code).

`--fedgen_htfllib` computes what HtFLlib's code does instead: its server trains a fresh
copy of the initial generator each round and never saves it, so its clients regularise
from round 0 on with the initial, untrained generator (noise uniform in [0, 1)); the
server's training is then skipped here, as it changes nothing.

A generator learning rate that is too large (HtFLlib's `-glr 0.1`) makes the trained
generator's features blow up. The server measures their scale on a fixed probe batch after
each training (`generator_feature_growth`). Clients rescale the features to their own by
default; where they take them as they are (`--fedgen_feature_scale generator`), the server
says so in one line when one round grew the scale past `DIVERGED_GROWTH`.
"""
import math


import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from flcore.clients.clientgen import FeatureGenerator, clientGen, rescales_generated, sample_labels
from flcore.servers.serverbase import Server
from flcore.weighted_average import weighted_average
from utils.errors import UserError
from utils.payload import state_to_payload
from utils.seeding import derive_seed, torch_generator


# ---- pure functions ----------------------------------------------------------------------
def label_weights(label_counts: torch.Tensor) -> torch.Tensor:
    """[K clients, C] counts -> [K, C] weights: client k's share of class c's samples
    (a class no one holds gets weight 0 everywhere)."""
    counts = label_counts.double()
    return (counts / counts.sum(dim=0, keepdim=True).clamp_min(1)).float()


def stack_heads(heads: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear heads' state dicts -> weights [K, C, D] and biases [K, C]."""
    return torch.stack([h["weight"] for h in heads]), torch.stack([h["bias"] for h in heads])


def ensemble_logits(features: torch.Tensor, labels: torch.Tensor, head_weights: torch.Tensor,
                    head_biases: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k, y_i] * head_k(features_i): each head speaks for a sample in
    proportion to how much of that sample's class it was trained on."""
    per_head = torch.einsum("nd,kcd->knc", features, head_weights) + head_biases.unsqueeze(1)
    return (weights[:, labels].unsqueeze(2) * per_head).sum(dim=0)


def diversity_loss(noise: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """exp(-mean_{i,j} d1(G_i, G_j) * d2(z_i, z_j)), d1 = mean |.|, d2 = mean (.)^2:
    small when samples from distant noise are far apart (FedGen's official definition)."""
    feature_distance = (features.unsqueeze(0) - features.unsqueeze(1)).abs().mean(dim=2)
    noise_distance = (noise.unsqueeze(0) - noise.unsqueeze(1)).pow(2).mean(dim=2)
    return torch.exp(-(feature_distance * noise_distance).mean())


def generator_loss(generator: nn.Module, noise: torch.Tensor, labels: torch.Tensor,
                   head_weights: torch.Tensor, head_biases: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """The server's objective: the weighted head ensemble must recognise G's features."""
    features = generator(noise, labels)
    logits = ensemble_logits(features, labels, head_weights, head_biases, weights)
    return F.cross_entropy(logits, labels) + diversity_loss(noise, features)


# ---- the server --------------------------------------------------------------------------
class FedGen(Server):
    SHARES_HEADS = True
    client_class = clientGen
    # -glr: the official FedGen's generator learning rate (3e-4). HtFLlib's 0.1 never reached its
    # clients (its trained generator is dropped each round); here, where it does, 0.1 blows the
    # generated features up 153x in one round, which clients taking them unscaled follow.
    #: growth of the generated features' scale within one round's generator training taken as
    #: divergence (saved per round as `generator_feature_growth`). On MNIST5k at the default -glr
    #: it is 3.7x in round 0 and under 1.4x per round after; at -glr 0.1 it is 153x in round 0.
    DIVERGED_GROWTH = 20.0
    PROBE_SIZE = 256

    def setup(self):
        args = self.args
        if args.batch_size < 2:
            raise UserError("FedGen's generator uses BatchNorm on batches of -lbs labels: -lbs must be at least 2")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "fedgen-init"))
            self.generator = FeatureGenerator(args.noise_dim, self.num_classes, args.hidden_dim,
                                              args.feature_dim).to(self.device)
            initial_head = nn.Linear(args.feature_dim, self.num_classes)
        # Every client starts from the same head, as HtFLlib's first broadcast makes them.
        self.head = state_to_payload(initial_head)
        self.htfllib = bool(getattr(args, "fedgen_htfllib", False))
        setup = {"head": self.head, "generator": state_to_payload(self.generator) if self.htfllib else None}
        replies = self.broadcast(self.all_client_ids, self.client_class.setup, setup)
        self.label_counts = torch.stack([r["label_counts"] for r in replies])  # [clients, C]
        self.broadcast(self.all_client_ids, self.client_class.set_label_distribution,
                       {"label_counts": self.label_counts.sum(dim=0)})
        probe_rng = torch_generator(derive_seed(self.seed, "fedgen-probe"))
        self.probe_labels = torch.arange(self.PROBE_SIZE) % self.num_classes
        self.probe_noise = torch.randn(self.PROBE_SIZE, args.noise_dim, generator=probe_rng)
        self.initial_scale = self.last_scale = self.feature_scale()
        self.divergence_reported = False

    @torch.no_grad()
    def feature_scale(self) -> float:
        """Mean norm of the generator's features on the fixed probe batch."""
        features = self.generator(self.probe_noise.to(self.device), self.probe_labels.to(self.device))
        return float(features.norm(dim=1).mean())

    def check_generator(self, round_idx: int) -> None:
        scale = self.feature_scale()
        growth, self.last_scale = scale / self.last_scale, scale
        self.series["generator_feature_growth"].append(growth)
        if (self.divergence_reported or rescales_generated(self.args)
                or (math.isfinite(growth) and growth <= self.DIVERGED_GROWTH)):
            return
        self.divergence_reported = True
        tqdm.write(f"[{self.name}] warning: round {round_idx}: FedGen's generated features grew {growth:.3g}x in "
                   f"one round "
                   f"(-glr {self.args.generator_learning_rate:g} is too large for a generator the clients use): "
                   f"use the default -glr 3e-4, the default --fedgen_feature_scale batch, or --fedgen_htfllib "
                   f"for HtFLlib's computation (where -glr has no effect)")

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
        heads = [r["head"] for r in replies]
        if not self.htfllib:  # HtFLlib's trained generator never reaches anyone: nothing to train
            with self.timer.phase("generator_training"):
                self.train_generator(heads, self.label_counts[[r["client_id"] for r in replies]])
            self.check_generator(round_idx)
        with self.timer.phase("aggregation"):
            self.head = weighted_average(heads, [r["num_samples"] for r in replies])
        # Every client, selected or not, gets the new head and generator (as HtFLlib sends them).
        with self.timer.phase("communication"):
            self.broadcast(self.all_client_ids, self.client_class.receive,
                           {"generator": state_to_payload(self.generator), "head": self.head})

    def train_generator(self, heads: list[dict], uploader_counts: torch.Tensor) -> None:
        """`-se` Adam steps on batches of `-lbs` labels drawn from the uploaders' label counts
        (a fresh optimiser each round, as the original)."""
        args = self.args
        head_weights, head_biases = (t.to(self.device) for t in stack_heads(heads))
        weights = label_weights(uploader_counts).to(self.device)
        pooled_counts = uploader_counts.sum(dim=0)
        optimizer = torch.optim.Adam(self.generator.parameters(), lr=args.generator_learning_rate)
        self.generator.train()
        for _ in range(args.server_epochs):
            labels = sample_labels(pooled_counts, args.batch_size, self.rng)
            noise = torch.randn(args.batch_size, args.noise_dim, generator=self.rng)
            loss = generator_loss(self.generator, noise.to(self.device), labels.to(self.device),
                                  head_weights, head_biases, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
