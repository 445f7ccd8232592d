"""FedKTL: knowledge transfer from a server-side pre-trained generator (CVPR 2024).

Each round: clients train and upload class prototypes; the server maps them into the
generator's latent space with a feature transformer trained on
    MMD(F(P), latent samples) + lambda * MSE(F(P), centroid[y]),
takes the per-class centroids as latents, generates one image per class and sends the
(image, latent) pairs to next round's clients. The generator is a backend chosen by
`generator_kind`; this file does not change per backend.
"""
import torch
import torch.nn as nn

from flcore.clients.clientktl import clientKTL
from flcore.etf import simplex_etf
from flcore.generators.images import image_round_due, to_client_images
from flcore.generators.registry import check_generator_flags, load_generator
from flcore.losses import mmd_rbf
from flcore.prototypes import class_mean_table, stack_uploads
from flcore.servers.serverbase import Server
from utils.payload import state_to_payload, to_payload
from utils.seeding import derive_seed

GRAD_CLIP = 100.0


class FeatureTransformer(nn.Module):
    """Linear(C, C) - BatchNorm - ReLU - Linear(C, H): prototype space -> latent space."""

    def __init__(self, in_dim: int, latent_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.BatchNorm1d(in_dim), nn.ReLU(),
                                 nn.Linear(in_dim, latent_dim))

    def forward(self, x):
        return self.mlp(x)


class FedKTL(Server):
    client_class = clientKTL
    generator_kind = "builtin"
    # The pre-trained generator is loaded from -GPath and never trained.
    CHECKPOINT_STATIC = Server.CHECKPOINT_STATIC | {"generator"}
    #: a -GPath to suggest when a backend's weights must be named (none is ever a default)
    GENERATOR_EXAMPLE = None

    @classmethod
    def kind_of_generator(cls, args) -> str:
        """The backend a run uses: the class's, or plain FedKTL's --generator."""
        return getattr(args, "generator", cls.generator_kind)

    @classmethod
    def variant(cls, args) -> dict:
        """The ablation's labels: no transfer (then the generator plays no part), the generator
        plain FedKTL was given, and whether its weights were random."""
        if args.mu == 0:
            return {"transfer": "-mu 0"}
        labels = {"generator": args.generator} if getattr(args, "generator", None) is not None else {}
        if getattr(args, "generator_weights", "pretrained") == "random":
            labels["weights"] = "random init"
        return labels

    @classmethod
    def check_args(cls, args) -> None:
        super().check_args(args)
        check_generator_flags(cls.kind_of_generator(args), args, cls.GENERATOR_EXAMPLE)

    def setup(self):
        args = self.args
        self.generator = load_generator(self.kind_of_generator(args), args, self.device)
        latent_dim = self.generator.latent_dim
        self.image_shape = tuple(self.data.image_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "ktl-init"))
            self.feature_transformer = FeatureTransformer(self.num_classes, latent_dim).to(self.device)
            self.centroids = nn.Embedding(self.num_classes, latent_dim).to(self.device)
            proj = nn.Linear(args.feature_dim, latent_dim)
        etf = simplex_etf(self.num_classes, self.num_classes, self.rng)
        self.broadcast(self.all_client_ids, self.client_class.setup,
                       {"etf": etf, "proj": state_to_payload(proj)})
        self.generated = None  # {"images", "latents"} sent with the next round

    def record_evaluation(self, replies: list[dict]) -> dict:
        """The ArcFace loss clients train with, beside the cross-entropy every method reports."""
        trained = sum(reply["train_num"] for reply in replies)
        arcface = sum(reply["train_arcface_loss_sum"] for reply in replies)
        return {"rs_train_arcface_loss": arcface / trained if trained else float("nan")}

    def train_round(self, round_idx, client_ids):
        if self.args.mu == 0:
            # No transfer term: nothing is generated and clients train on their data alone
            # (ETF classifier and ArcFace), the ablation's control.
            self.train_clients(client_ids, None)
            return
        replies = self.train_clients(client_ids, self.generated)
        protos, labels = stack_uploads(replies)  # the clients' {"means", "classes"}
        protos, labels = protos.to(self.device), labels.to(self.device)
        with self.timer.phase("alignment"):
            latents = self.align(protos, labels)
        with self.timer.phase("generation"):
            images = self.generate(latents)
            self.save_generated(images, round_idx)
        self.generated = {"images": to_payload(images), "latents": to_payload(latents)}

    # ---- alignment ----------------------------------------------------------------------
    @torch.no_grad()
    def reset_centroids(self, protos, labels) -> None:
        """Centroids := class means of F(P); classes nobody uploaded keep their value."""
        self.feature_transformer.eval()
        means, present = class_mean_table(self.feature_transformer(protos), labels, self.num_classes)
        self.centroids.weight[present] = means[present]

    def align(self, protos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        args = self.args
        transformer, centroids = self.feature_transformer, self.centroids
        self.reset_centroids(protos, labels)
        opt_transformer = torch.optim.Adam(transformer.parameters(), lr=args.server_learning_rate)
        opt_centroids = torch.optim.Adam(centroids.parameters(), lr=args.server_learning_rate)
        mse = nn.MSELoss()
        transformer.train()
        for _ in range(args.server_epochs):
            order = torch.randperm(len(protos), generator=self.rng).to(self.device)
            for start in range(0, len(protos), args.server_batch_size):
                index = order[start:start + args.server_batch_size]
                if len(index) < 2:
                    continue  # BatchNorm needs two rows
                mapped = transformer(protos[index])
                targets = self.generator.sample_latents(len(index), self.rng)
                loss = mmd_rbf(mapped, targets) + args.lamda * mse(mapped, centroids(labels[index]))
                opt_transformer.zero_grad(set_to_none=True)
                opt_centroids.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(transformer.parameters(), GRAD_CLIP)
                nn.utils.clip_grad_norm_(centroids.parameters(), GRAD_CLIP)
                opt_transformer.step()
                opt_centroids.step()
        self.reset_centroids(protos, labels)
        return centroids.weight.detach().clone()

    # ---- generation ---------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, latents: torch.Tensor) -> torch.Tensor:
        """One client-sized image per class (normalised as client data), on the CPU. Images are
        resized as each generator call returns them, so full-resolution images of all classes
        never exist at once; `-gbs` images per call (0: as many as memory allows, adapting
        to GPU out-of-memory errors)."""
        return self.generator.generate(latents, self.to_client_images, batch_size=self.args.gen_batch_size)

    def to_client_images(self, images: torch.Tensor) -> torch.Tensor:
        return to_client_images(images, self.image_shape, antialias=getattr(self.args, "resize_antialias", True))

    def save_generated(self, client_images: torch.Tensor, round_idx: int) -> None:
        """A grid of the images clients receive (client resolution, enlarged only as far as labels
        need, so a long run's grids stay small): image i is class i's (generated from its
        centroid), labelled with the class's name; rows only wrap the classes, 10 to a row."""
        if image_round_due(round_idx, self.args.save_generated_every, self.global_rounds):
            self.save_image_grid(client_images, f"generated_round_{round_idx:04d}.png",
                                 nrow=min(10, len(client_images)),
                                 labels=list(self.data.label_names)[:len(client_images)])
