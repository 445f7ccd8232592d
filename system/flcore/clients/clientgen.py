"""FedGen client: cross-entropy on its data plus a head regulariser on generated features.

Once the server has trained a generator, each local step adds
    CE(head(G(z, y_G)), y_G),   y_G ~ global label distribution,  z ~ N(0, I),
which teaches the client's head the ensemble's view of every class, including classes the
client never sees. The client sends its head up and receives the generator and the
aggregated head back.

By default (`--fedgen_feature_scale batch`) the generated batch is rescaled to the mean norm
of the client's own features of the real batch it trains on. One generator serves models
whose features differ in scale, and the CE that trains it rewards ever larger features: at
HtFLlib's `-glr 0.1` they grow 153x in one round, and a head trained on them at that scale
is pulled far from its own features. Only the direction the generator gives a class is
kept. `generator` uses its features as they are (the official FedGen, HtFLlib).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from utils.payload import state_to_payload
from utils.seeding import derive_seed


class FeatureGenerator(nn.Module):
    """G(z, y): [noise, one-hot label] -> Linear - BatchNorm - ReLU - Linear -> feature vector.

    BatchNorm always normalises with the batch's statistics (the original never switches
    the generator to eval mode), so it keeps no running statistics and its state is
    exactly its parameters: that is what travels to clients.
    """

    def __init__(self, noise_dim: int, num_classes: int, hidden_dim: int, feature_dim: int):
        super().__init__()
        self.noise_dim = noise_dim
        self.num_classes = num_classes
        self.hidden = nn.Sequential(nn.Linear(noise_dim + num_classes, hidden_dim),
                                    nn.BatchNorm1d(hidden_dim, track_running_stats=False),
                                    nn.ReLU())
        self.out = nn.Linear(hidden_dim, feature_dim)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(labels, self.num_classes).to(noise.dtype)
        return self.out(self.hidden(torch.cat([noise, one_hot], dim=1)))


def rescales_generated(args) -> bool:
    """Whether clients rescale generated features to their own (`--fedgen_feature_scale batch`);
    HtFLlib's computation (`--fedgen_htfllib`) takes them as they are."""
    return (getattr(args, "fedgen_feature_scale", "batch") == "batch"
            and not getattr(args, "fedgen_htfllib", False))


def sample_labels(label_counts: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """`n` labels drawn with probability proportional to `label_counts`."""
    return torch.multinomial(label_counts.double(), n, replacement=True, generator=rng)


class clientGen(Client):
    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.noise_dim = args.noise_dim
        self.hidden_dim = args.hidden_dim
        self.generator = None  # none until the server has trained one
        self.global_label_counts = None
        # HtFLlib's generator draws its noise uniformly in [0, 1); the FedGen paper's is N(0, I).
        self.uniform_noise = bool(getattr(args, "fedgen_htfllib", False))
        self.rescale_generated = rescales_generated(args)
        # Generated batches have their own stream, so data shuffling matches other methods.
        self.generated_rng = torch.Generator().manual_seed(derive_seed(seed, "fedgen-client", client_id))

    # ---- messages from the server -------------------------------------------------------
    def setup(self, payload):
        """Install the common initial head (and, in HtFLlib's form, the server's initial
        generator); report how many samples of each class we hold."""
        self.model.head.load_state_dict(payload["head"])
        if payload.get("generator") is not None:
            self.ensure_generator()
            self.generator.load_state_dict(payload["generator"])
        return {"label_counts": torch.bincount(self.train_y, minlength=self.num_classes)}

    @server_call
    def set_label_distribution(self, payload):
        self.global_label_counts = payload["label_counts"]
        return {}

    @server_call
    def receive(self, payload):
        """The aggregated head replaces ours; the generator arrives after each server round."""
        self.model.head.load_state_dict(payload["head"])
        self.ensure_generator()
        self.generator.load_state_dict(payload["generator"])
        return {}

    def ensure_generator(self) -> None:
        if self.generator is None:
            self.generator = FeatureGenerator(self.noise_dim, self.num_classes, self.hidden_dim,
                                              self.model.feature_dim).to(self.device)

    def restore_checkpoint_state(self, state):
        if state.get("generator") is not None:
            self.ensure_generator()  # a shell for the saved weights
        return super().restore_checkpoint_state(state)

    # ---- training -----------------------------------------------------------------------
    def train_step(self, x, y):
        features = self.model.base(x)
        loss = self.ce_loss(self.model.head(features), y)
        if self.generator is not None:
            scale = features.detach().norm(dim=1).mean() if self.rescale_generated else None
            loss = loss + self.generated_feature_loss(len(y), scale)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def generated_feature_loss(self, n: int, scale: torch.Tensor = None) -> torch.Tensor:
        """CE of our head on `n` generated features of labels from the global distribution;
        with `scale`, the features are first rescaled to that mean norm."""
        labels = sample_labels(self.global_label_counts, n, self.generated_rng)
        noise = (torch.rand if self.uniform_noise else torch.randn)(n, self.noise_dim, generator=self.generated_rng)
        with torch.no_grad():  # the generator is the server's; only the head learns from it
            features = self.generator(self.to_device(noise), self.to_device(labels))
            if scale is not None:
                features = features * (scale / features.norm(dim=1).mean().clamp_min(1e-12))
        return self.ce_loss(self.model.head(features), self.to_device(labels))

    def upload(self):
        return {"head": state_to_payload(self.model.head)}
