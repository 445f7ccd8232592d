"""DeepInversion (Yin et al., CVPR 2020) and Adaptive DeepInversion: images synthesised
from noise by optimising their pixels until trained classifiers (the teachers) label them
as asked and the teachers' BatchNorm layers see the feature statistics of their training.

The loss of a batch x with labels y, for the teachers T used in one Adam step:

    mean over t in T of [ CE_t(t(jitter(x)), y)                     t's own classes only
                          + bn_weight * sum over t's BN layers l of
                              (||mu_l(batch) - running_mean_l||_2 + ||var_l(batch) - running_var_l||_2)
                          + competition * (1 - JS(t, student)) ]    Adaptive DI, temperature 3
    + tv_weight * TV(x) + l2_weight * ||x||_2

A teacher without BatchNorm layers (FedAvgCNN) has no BN term: it guides only through its
cross-entropy (and the competition). Pure terms first, then the optimisation loop.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

#: client images lie in [-1, 1]; synthetic pixels are kept there after every step
PIXEL_MIN, PIXEL_MAX = -1.0, 1.0


@dataclass(frozen=True)
class SynthesisSettings:
    """How one batch is synthesised (defaults: the method's weights)."""

    iterations: int
    learning_rate: float = 0.1
    bn_weight: float = 10.0
    tv_weight: float = 1e-3
    l2_weight: float = 1e-5
    jitter: int = 2
    competition: float = 0.0
    temperature: float = 3.0


# ---- the loss terms --------------------------------------------------------------------------
def bn_statistics_distance(features: torch.Tensor, running_mean: torch.Tensor,
                           running_var: torch.Tensor) -> torch.Tensor:
    """||mu - running_mean||_2 + ||var - running_var||_2 for a BatchNorm2d input [N, C, H, W],
    with the per-channel mean and (biased, as BatchNorm normalises with) variance of the batch."""
    # As rows of channels: free for channels_last inputs, one copy otherwise.
    per_channel = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    var, mean = torch.var_mean(per_channel, dim=0, correction=0)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


class BatchNormStatistics:
    """Forward hooks on every BatchNorm2d of a model: each forward pass records, per layer,
    the distance of its input's statistics to the layer's running ones; `take()` returns
    their sum since the last call (0 for a model without BatchNorm)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self._distances: list[torch.Tensor] = []
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def _record(self, layer: nn.BatchNorm2d, inputs, output) -> None:
        self._distances.append(bn_statistics_distance(inputs[0], layer.running_mean, layer.running_var))

    def take(self) -> torch.Tensor:
        distances, self._distances = self._distances, []
        return torch.stack(distances).sum() if distances else torch.zeros(())

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Smoothness prior: the sum of the L2 norms (over the whole batch) of the differences
    between each pixel and its right, lower, lower-right and lower-left neighbours."""
    right = x[:, :, :, :-1] - x[:, :, :, 1:]
    down = x[:, :, :-1, :] - x[:, :, 1:, :]
    down_right = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    down_left = x[:, :, :-1, 1:] - x[:, :, 1:, :-1]
    return sum(torch.linalg.vector_norm(d) for d in (right, down, down_right, down_left))


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """||x||_2 over the whole batch: keeps pixels from growing without need."""
    return torch.linalg.vector_norm(x)


def jensen_shannon(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of JS(P, Q) = (KL(P||M) + KL(Q||M)) / 2, M = (P + Q) / 2, with P and Q the
    softmaxes at `temperature`, in nats (0 when equal, at most ln 2)."""
    p = F.softmax(logits_p / temperature, dim=1)
    q = F.softmax(logits_q / temperature, dim=1)
    m = (p + q) / 2
    # xlogy: a class with probability 0 contributes 0, not NaN.
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=1)
    return ((kl_pm + kl_qm) / 2).mean()


def competition_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """Adaptive DeepInversion's term 1 - JS(teacher, student): minimising it pushes the images
    towards where the student disagrees with the teacher."""
    return 1 - jensen_shannon(teacher_logits, student_logits, temperature)


def masked_logits_and_labels(logits: torch.Tensor, labels: torch.Tensor,
                             class_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A teacher's view of a batch: only the samples with a label it was trained on, only the
    logits of its classes, and the labels renumbered to index those classes."""
    keep = class_mask[labels]
    position = torch.cumsum(class_mask.long(), dim=0) - 1  # class -> index among known classes
    return logits[keep][:, class_mask], position[labels[keep]]


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the teacher's own classes, averaged over the samples whose label it
    knows; 0 when it knows none of them."""
    kept_logits, kept_labels = masked_logits_and_labels(logits, labels, class_mask)
    if kept_labels.numel() == 0:
        return logits.sum() * 0
    return F.cross_entropy(kept_logits, kept_labels)


def distillation_loss(student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's knowledge distillation: KL(target || softmax(student / T)) averaged over the
    batch and scaled by T^2, so that its gradients keep their size across temperatures."""
    log_probs = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_probs, target_probs, reduction="batchmean") * temperature ** 2


# ---- randomness of a step ----------------------------------------------------------------------
def draw_jitter(max_shift: int, rng: torch.Generator) -> tuple[int, int]:
    """Vertical and horizontal offsets, each uniform in [-max_shift, max_shift]."""
    offsets = torch.randint(-max_shift, max_shift + 1, (2,), generator=rng)
    return int(offsets[0]), int(offsets[1])


def jitter(x: torch.Tensor, shift_y: int, shift_x: int) -> torch.Tensor:
    """Roll the images by the offsets (pixels leaving one side come back on the other)."""
    return torch.roll(x, shifts=(shift_y, shift_x), dims=(2, 3))


def draw_labels(class_counts: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """`n` labels drawn with probability proportional to `class_counts`."""
    return torch.multinomial(class_counts.double(), n, replacement=True, generator=rng)


def draw_teachers(num_teachers: int, per_step: int, rng: torch.Generator) -> list[int]:
    """Sampling DeepInversion: `per_step` distinct teachers (all of them if fewer), in order."""
    return sorted(torch.randperm(num_teachers, generator=rng)[:per_step].tolist())


# ---- the optimisation ----------------------------------------------------------------------------
class Teacher:
    """A trained client model on the server, frozen in eval mode (BatchNorm normalises with
    its running statistics), with the class counts it was trained on and its BN hooks."""

    def __init__(self, model: nn.Module, class_counts: torch.Tensor):
        self.model = model.eval().requires_grad_(False)
        self.class_counts = class_counts.cpu()
        self.class_mask = self.class_counts > 0
        self.bn = BatchNormStatistics(self.model)

    @property
    def has_batchnorm(self) -> bool:
        return bool(self.bn.layers)


def ensemble_probabilities(teachers: list[Teacher], x: torch.Tensor, temperature: float) -> torch.Tensor:
    """What the teachers together believe about `x`: each teacher's softmax at `temperature`
    over its own classes (0 for the others), weighted class by class by the number of
    samples it was trained on, then normalised per image. The teachers are not changed."""
    total = 0
    with torch.no_grad():
        for teacher in teachers:
            logits = teacher.model(x).float()
            teacher.bn.take()  # these statistics belong to no synthesis step
            mask = teacher.class_mask.to(logits.device)
            probs = torch.zeros_like(logits)
            probs[:, mask] = F.softmax(logits[:, mask] / temperature, dim=1)
            total = total + probs * teacher.class_counts.to(logits.device, torch.float32)
    return total / total.sum(dim=1, keepdim=True)


def teacher_loss(teacher: Teacher, images: torch.Tensor, labels: torch.Tensor,
                 settings: SynthesisSettings, student_logits=None) -> dict:
    """One teacher's terms on (already jittered) images: {"ce", "bn", ["competition"], "total"}."""
    teacher.bn.take()  # forget statistics of any forward pass made outside this loss
    logits = teacher.model(images)
    mask = teacher.class_mask.to(labels.device)
    terms = {"ce": masked_cross_entropy(logits, labels, mask),
             "bn": teacher.bn.take().to(logits.device)}
    total = terms["ce"] + settings.bn_weight * terms["bn"]
    if student_logits is not None and settings.competition:
        kept_teacher, _ = masked_logits_and_labels(logits, labels, mask)
        kept_student, _ = masked_logits_and_labels(student_logits, labels, mask)
        # On the teacher's classes and samples only, as its cross-entropy.
        terms["competition"] = (competition_loss(kept_teacher, kept_student, settings.temperature)
                                if len(kept_teacher) else logits.sum() * 0)
        total = total + settings.competition * terms["competition"]
    terms["total"] = total
    return terms


def synthesis_loss(x: torch.Tensor, labels: torch.Tensor, teachers: list[Teacher],
                   settings: SynthesisSettings, shift: tuple[int, int], student=None) -> torch.Tensor:
    """The objective of one step: the teachers' terms on the rolled batch, averaged, plus the
    image priors on the batch itself."""
    moved = jitter(x, *shift)
    student_logits = student(moved) if student is not None and settings.competition else None
    per_teacher = torch.stack([teacher_loss(t, moved, labels, settings, student_logits)["total"]
                               for t in teachers]).mean()
    return per_teacher + settings.tv_weight * total_variation(x) + settings.l2_weight * l2_prior(x)


def synthesize_batch(teachers: list[Teacher], labels: torch.Tensor, image_shape, settings: SynthesisSettings,
                     rng: torch.Generator, teachers_per_step: int = 0, student=None,
                     device="cpu", on_step=None) -> torch.Tensor:
    """Optimise one batch of noise images for `labels` with Adam; returns them on the CPU.

    Every step uses all `teachers`, or `teachers_per_step` of them drawn afresh (Sampling
    DeepInversion) when that is positive and smaller. A student, given with a non-zero
    competition weight, adds Adaptive DeepInversion's term; it is read, never changed.
    All randomness (start noise, jitter, teacher draws) comes from `rng`.
    """
    noise = torch.randn((len(labels), *image_shape), generator=rng).clamp_(PIXEL_MIN, PIXEL_MAX)
    x = noise.to(device).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    labels = labels.to(device)
    optimizer = torch.optim.Adam([x], lr=settings.learning_rate)
    sample_teachers = 0 < teachers_per_step < len(teachers)
    if student is not None:
        student_was_training = student.training
        student_needs_grad = [p.requires_grad for p in student.parameters()]
        student.eval().requires_grad_(False)
    try:
        for _ in range(settings.iterations):
            chosen = ([teachers[i] for i in draw_teachers(len(teachers), teachers_per_step, rng)]
                      if sample_teachers else teachers)
            shift = draw_jitter(settings.jitter, rng)
            loss = synthesis_loss(x, labels, chosen, settings, shift, student)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                x.clamp_(PIXEL_MIN, PIXEL_MAX)
            if on_step is not None:
                on_step(loss.item())
    finally:
        if student is not None:
            student.train(student_was_training)
            for parameter, needed in zip(student.parameters(), student_needs_grad):
                parameter.requires_grad_(needed)
    return x.detach().to("cpu").contiguous()
