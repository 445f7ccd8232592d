"""FedKTL client: ETF classifier with ArcFace loss, plus distillation from generated pairs.

Per round the client receives one (image, latent) pair per class, trains with
    ArcFace-CE(normalize(model(x)) . ETF)  +  mu * MSE(proj(base(x_G)), v_G)
and uploads one prototype per class it holds: the normalised mean of its normalised
outputs over its training data.
"""
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from flcore.losses import arcface_logits
from flcore.prototypes import class_sums, present_means
from utils.payload import to_payload

ARCFACE_MARGIN = 0.5
ARCFACE_SCALE = 64.0
GRAD_CLIP = 100.0


class clientKTL(Client):
    # The generated pairs arrive with every round's training call and live only during it.
    CHECKPOINT_STATIC = Client.CHECKPOINT_STATIC | {"mse", "generated", "_generated_batches"}

    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.mu = args.mu
        self.fixed_proj = args.ktl_fixed_proj
        self.fused_forward = not args.ktl_separate_forward
        self.mse = nn.MSELoss()
        self.class_vectors = None  # [C, C], row k = normalised ETF vector of class k
        self.proj = None
        self.proj_initial = None
        self.proj_optimizer = None
        self.generated = None
        self._generated_batches = None
        self._arcface_loss = None  # (summed ArcFace loss, samples), beside the cached training loss

    # ---- setup: ETF and the projection layer, once ------------------------------------
    @server_call(payload=("etf", "proj"))
    def setup(self, payload):
        self.class_vectors = F.normalize(payload["etf"].T, dim=1).to(self.device)
        weight = payload["proj"]["weight"]
        self.proj = nn.Linear(weight.shape[1], weight.shape[0]).to(self.device)
        self.proj.load_state_dict(payload["proj"])
        self.proj_initial = copy.deepcopy(self.proj.state_dict())
        self.proj_optimizer = torch.optim.SGD(self.proj.parameters(), lr=self.learning_rate)
        return {}

    # ---- how the model is read ----------------------------------------------------------
    def scores(self, x):
        return F.normalize(self.model(x), dim=1) @ self.class_vectors.T

    def classification_loss(self, x, y):
        return self.ce_loss(arcface_logits(self.scores(x), y, ARCFACE_MARGIN, ARCFACE_SCALE), y)

    @staticmethod
    def loss_sums(cosine, y) -> tuple[float, float]:
        """(cross-entropy, ArcFace loss) summed over a batch. The training loss FedKTL reports is the
        cross-entropy of the logits it predicts with (scale x cosine, no margin), as every other
        method reports its classifier's; the ArcFace loss it trains with (the margin on the true
        class makes it about 7.5 where the cross-entropy is near 0) is its own series."""
        cross_entropy = F.cross_entropy(ARCFACE_SCALE * cosine, y, reduction="sum")
        arcface = F.cross_entropy(arcface_logits(cosine, y, ARCFACE_MARGIN, ARCFACE_SCALE), y, reduction="sum")
        return float(cross_entropy), float(arcface)

    def train_loss_stats(self) -> tuple[float, int]:
        if self._train_loss is None:
            self.model.eval()
            cross_entropy = arcface = 0.0
            with torch.no_grad():
                for x, y in self.full_batches(self.train_x, self.train_y):
                    batch = self.loss_sums(self.scores(x), y)
                    cross_entropy += batch[0]
                    arcface += batch[1]
            self._train_loss = (cross_entropy, self.train_samples)
            self._arcface_loss = (arcface, self.train_samples)
        return self._train_loss

    @server_call
    def evaluate(self, payload=None) -> dict:
        stats = super().evaluate(payload)
        stats["train_arcface_loss_sum"] = self._arcface_loss[0]
        return stats

    # ---- training -----------------------------------------------------------------------
    def train(self, payload=None):
        if self.fixed_proj:
            # The original code reloads the server's initial random layer every round.
            self.proj.load_state_dict(self.proj_initial)
        payload = payload or {}
        if "images" in payload:
            self.generated = (self.images_to_device(payload["images"]), self.to_device(payload["latents"]))
            self._generated_batches = self.cycle_generated()
        else:
            self.generated = self._generated_batches = None
        reply = super().train(payload)
        start = time.perf_counter()
        reply["means"], reply["classes"] = self.collect_prototypes()
        reply["timings"]["prototype_collection"] = time.perf_counter() - start
        self.generated = self._generated_batches = None  # nothing on the device between rounds
        return reply

    def cycle_generated(self):
        """Shuffled batches of generated pairs, reshuffled whenever they run out."""
        images, latents = self.generated
        while True:
            order = torch.randperm(len(images), generator=self.rng)
            for start in range(0, len(images), self.batch_size):
                index = order[start:start + self.batch_size].to(self.device)
                yield images[index], latents[index]

    def train_step(self, x, y):
        if self.generated is None:
            loss = self.classification_loss(x, y)
        else:
            x_gen, v_gen = next(self._generated_batches)
            if self.fused_forward:
                # One pass through the backbone for real and generated images together.
                features = self.model.base(torch.cat([x, x_gen]))
                real, gen_features = features[:len(x)], features[len(x):]
                cosine = F.normalize(self.model.head(real), dim=1) @ self.class_vectors.T
            else:
                cosine = self.scores(x)
                gen_features = self.model.base(x_gen)
            loss = self.ce_loss(arcface_logits(cosine, y, ARCFACE_MARGIN, ARCFACE_SCALE), y)
            loss = loss + self.mu * self.mse(self.proj(gen_features), v_gen)
        self.optimizer.zero_grad(set_to_none=True)
        self.proj_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        nn.utils.clip_grad_norm_(self.proj.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.proj_optimizer.step()
        return loss

    # ---- prototypes (and the training loss, from the same pass) ------------------------
    @torch.no_grad()
    def collect_prototypes(self):
        """(prototypes [K, C], classes [K]) for the K classes held, as payloads; also caches the training loss."""
        self.model.eval()
        # One running total over all batches (the original's summation order).
        totals = (torch.zeros(self.num_classes, self.num_classes, device=self.device),
                  torch.zeros(self.num_classes, dtype=torch.int64, device=self.device))
        loss_sum = arcface_sum = 0.0
        # The original collects prototypes through its training loader, which never yields the
        # last partial batch: with --stored_order those samples are left out of the prototypes too.
        limit = (self.train_samples // self.batch_size * self.batch_size if self.stored_order
                 else self.train_samples)
        seen = 0
        for x, y in self.full_batches(self.train_x, self.train_y):
            outputs = F.normalize(self.model(x), dim=1)
            kept = slice(0, max(0, min(len(y), limit - seen)))
            seen += len(y)
            class_sums(outputs[kept], y[kept], self.num_classes, into=totals)
            cross_entropy, arcface = self.loss_sums(outputs @ self.class_vectors.T, y)
            loss_sum += cross_entropy
            arcface_sum += arcface
        self._train_loss = (loss_sum, self.train_samples)
        self._arcface_loss = (arcface_sum, self.train_samples)
        means, classes, _ = present_means(*totals)
        return to_payload(F.normalize(means, dim=1)), to_payload(classes)
