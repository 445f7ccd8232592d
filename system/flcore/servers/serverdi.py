"""One-shot federated learning by DeepInversion (Yin et al. 2020; the Adaptive variant and
Sampling DeepInversion as in EPFL MLO's report on one-shot FL by dataset distillation).

Round 0: every joining client trains its own model once (--teacher_epochs) and uploads it
whole with its class counts; that is the only communication. Every round then
1. synthesises --di_batches batches from noise by DeepInversion against the teachers
   (flcore/deep_inversion.py), either one teacher per batch in turn (cycle) or a few
   teachers drawn per step (sampling), each teacher judging only the classes it was trained on;
   from round 1 on, Adaptive DI's competition also seeks where the trained student disagrees;
2. labels each new image with the teachers' joint belief (count-weighted softmaxes over each
   teacher's own classes, at --student_temperature), appends both to the synthetic pool and
   trains the student (--student_model, a member of the family) on the whole pool for
   --student_epochs epochs by knowledge distillation from those soft labels (or, with
   --student_labels target, hard-label cross-entropy on the synthesis targets), with random
   crops and optional flips.
Evaluation sends the student to every client, which scores it on its own data (not counted
as traffic, as everywhere); -jr < 1 limits the teachers to the clients joining round 0.
"""
from collections import Counter

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flcore.clients.clientdi import clientDI
from flcore.generators.images import image_round_due
from flcore.deep_inversion import (PIXEL_MIN, SynthesisSettings, Teacher, distillation_loss, draw_labels,
                                   ensemble_probabilities, synthesize_batch)
from flcore.servers.serverbase import Server
from trainmodel.families import resolve_family
from trainmodel.models import build_model, find_model_name
from utils.errors import UserError
from utils.payload import state_to_payload
from utils.seeding import derive_seed, torch_generator
from utils.state import capture_value


# ---- the student's augmentation ------------------------------------------------------------
def random_crop(x: torch.Tensor, padding: int, rng: torch.Generator, fill: float = PIXEL_MIN) -> torch.Tensor:
    """Pad by `padding` pixels of `fill` (black), then cut each image's original size back out
    at its own offset, uniform in [0, 2 * padding] both ways."""
    if padding == 0:
        return x
    n, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), value=fill)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=rng)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=rng)
    rows = (top[:, None] + torch.arange(height))[:, None, :, None]   # [N, 1, H, 1]
    cols = (left[:, None] + torch.arange(width))[:, None, None, :]   # [N, 1, 1, W]
    samples = torch.arange(n)[:, None, None, None]
    channels = torch.arange(x.shape[1])[None, :, None, None]
    return padded[samples, channels, rows, cols]


def random_flip(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=rng) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


# ---- the server ------------------------------------------------------------------------------
def student_architecture(student_model, model_family: str) -> str:
    """The student's canonical model name: `student_model` if it is in the family, else the
    family's first member when none is given."""
    family = resolve_family(model_family)
    if student_model is None:
        return family[0]
    name = find_model_name(student_model)
    if name not in family:
        raise UserError(f"--student_model {student_model} is not in -m {model_family}: choose one "
                        f"of {', '.join(family)}")
    return name


class DeepInversion(Server):
    client_class = clientDI
    # Teachers are saved as (architecture, weights, class counts); the settings are flags.
    CHECKPOINT_STATIC = Server.CHECKPOINT_STATIC | {"settings", "teachers"}

    @classmethod
    def check_args(cls, args) -> None:
        super().check_args(args)
        student_architecture(args.student_model, args.model_family)

    def setup(self):
        args = self.args
        self.image_shape = tuple(self.data.image_shape)
        self.student_arch = student_architecture(args.student_model, args.model_family)
        self.student = self.build(self.student_arch, derive_seed(self.seed, "di-student"))
        self.student_optimizer = torch.optim.SGD(self.student.parameters(), lr=args.server_learning_rate,
                                                 momentum=0.9, weight_decay=5e-4)
        self.settings = SynthesisSettings(
            iterations=args.di_iterations, learning_rate=args.di_lr,
            bn_weight=args.di_bn_weight, tv_weight=args.di_tv_weight, l2_weight=args.di_l2_weight,
            jitter=args.di_jitter, competition=args.di_competition, temperature=args.di_temperature)
        self.teachers: list[Teacher] = []
        self.pool_x = torch.zeros((0, *self.image_shape))
        self.pool_y = torch.zeros(0, dtype=torch.long)
        # The teachers' soft labels of the pool's images, made once when the images join it.
        self.pool_soft = torch.zeros((0, self.num_classes))
        self.batches_made = 0
        # Shuffling and augmenting the pool have their own stream, apart from synthesis's self.rng.
        self.student_rng = torch_generator(derive_seed(self.seed, "di-student-data"))

    def build(self, arch: str, seed: int) -> torch.nn.Module:
        channels, height, _ = self.image_shape
        model = build_model(arch, num_classes=self.num_classes, feature_dim=self.args.feature_dim,
                            image_size=height, in_channels=channels, seed=seed)
        return model.to(self.device, memory_format=torch.channels_last)

    def evaluation_payload(self):
        return {"student": state_to_payload(self.student), "arch": self.student_arch}

    def train_round(self, round_idx, client_ids):
        if not self.teachers:  # round 0, unless every client was skipped in it
            self.collect_teachers(client_ids)
        with self.timer.phase("synthesis"):
            images, labels, soft = self.synthesize()
        self.save_generated(images, labels, round_idx)
        self.pool_x = torch.cat([self.pool_x, images])
        self.pool_y = torch.cat([self.pool_y, labels])
        self.pool_soft = torch.cat([self.pool_soft, soft])
        with self.timer.phase("student_training"):
            self.train_student()

    # ---- round 0: the one upload ------------------------------------------------------------
    def collect_teachers(self, client_ids: list[int]) -> None:
        replies = self.train_clients(client_ids, method=self.client_class.train_teacher)
        self.teachers = [self.make_teacher(reply["arch"], reply["teacher"], reply["class_counts"])
                         for reply in replies]
        kinds = Counter(reply["arch"] for reply in replies)
        with_bn = sum(t.has_batchnorm for t in self.teachers)
        tqdm.write(f"[{self.name}] {len(self.teachers)} teachers ("
                   + ", ".join(f"{count} {arch}" for arch, count in sorted(kinds.items()))
                   + f"); {with_bn} have BatchNorm layers, the others get no BN statistics term")

    def make_teacher(self, arch: str, weights: dict, class_counts: torch.Tensor) -> Teacher:
        model = self.build(arch, seed=0)  # weights replaced at once
        model.load_state_dict(weights)
        return Teacher(model, class_counts)

    def checkpoint_state(self):
        state = super().checkpoint_state()
        state["teachers"] = [{"arch": t.model.arch, "weights": capture_value(t.model), "class_counts": t.class_counts}
                             for t in self.teachers]
        return state

    def restore_checkpoint_state(self, state):
        state = dict(state)
        teachers = state.pop("teachers")
        super().restore_checkpoint_state(state)
        self.teachers = [self.make_teacher(t["arch"], t["weights"], t["class_counts"]) for t in teachers]

    # ---- every round ------------------------------------------------------------------------
    def synthesize(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """--di_batches new batches, their target labels and the teachers' soft labels of
        them, on the CPU."""
        args = self.args
        # Adaptive DI's competition needs a student that has learnt something: before the
        # first pool (round 0) there is no disagreement to seek, so it starts in round 1.
        student = self.student if self.settings.competition and len(self.pool_y) else None
        all_counts = torch.stack([t.class_counts for t in self.teachers]).sum(dim=0)
        images, labels, soft = [], [], []
        bar = tqdm(total=args.di_batches * args.di_iterations, desc="DeepInversion synthesis",
                   unit="step", dynamic_ncols=True, leave=False, disable=None)
        for _ in range(args.di_batches):
            if args.di_teacher_mode == "cycle":
                teachers = [self.teachers[self.batches_made % len(self.teachers)]]
                batch_labels = draw_labels(teachers[0].class_counts, args.di_batch_size, self.rng)
                per_step = 0
            else:
                teachers = self.teachers
                batch_labels = draw_labels(all_counts, args.di_batch_size, self.rng)
                per_step = args.di_teachers_per_step
            batch = synthesize_batch(teachers, batch_labels, self.image_shape, self.settings, self.rng,
                                     teachers_per_step=per_step, student=student, device=self.device,
                                     on_step=lambda loss: bar.update(1))
            images.append(batch)
            labels.append(batch_labels)
            # All teachers judge every image, whichever made it: one teacher's target can be
            # a pattern only it believes in.
            x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
            soft.append(ensemble_probabilities(self.teachers, x, args.student_temperature).cpu())
            self.batches_made += 1
        bar.close()
        return torch.cat(images), torch.cat(labels), torch.cat(soft)

    def train_student(self) -> None:
        """--student_epochs epochs over the whole synthetic pool: distillation from the
        teachers' soft labels, or cross-entropy on the target labels (--student_labels)."""
        args = self.args
        self.student.train()
        size = len(self.pool_y)
        for _ in tqdm(range(args.student_epochs), desc="student", unit="epoch", dynamic_ncols=True,
                      leave=False, disable=None):
            order = torch.randperm(size, generator=self.student_rng)
            for start in range(0, size, args.server_batch_size):
                index = order[start:start + args.server_batch_size]
                x = random_crop(self.pool_x[index], args.student_crop, self.student_rng)
                if args.student_flip:
                    x = random_flip(x, self.student_rng)
                x = x.to(self.device).contiguous(memory_format=torch.channels_last)
                logits = self.student(x)
                if args.student_labels == "ensemble":
                    loss = distillation_loss(logits, self.pool_soft[index].to(self.device), args.student_temperature)
                else:
                    loss = F.cross_entropy(logits, self.pool_y[index].to(self.device))
                self.student_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.student_optimizer.step()

    def save_generated(self, images: torch.Tensor, labels: torch.Tensor, round_idx: int) -> None:
        """Up to 10 of this round's images per class as a PNG in the run folder: one row per
        class, each image labelled with its class's name, filled up with black (unlabelled)
        where a class has fewer."""
        if not image_round_due(round_idx, self.args.save_generated_every, self.global_rounds):
            return
        rows, names = [], []
        for c in range(self.num_classes):
            row = images[labels == c][:10]
            rows += [row, torch.full((10 - len(row), *self.image_shape), PIXEL_MIN)]
            names += [self.data.label_names[c]] * len(row) + [""] * (10 - len(row))
        self.save_image_grid(torch.cat(rows), f"synthetic_round_{round_idx:04d}.png", nrow=10, labels=names)
