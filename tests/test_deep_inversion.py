"""One-shot DeepInversion: every loss term on hand-made inputs with values worked out by
hand, the step's randomness (jitter, labels, teacher draws), class masking, the student's
augmentation and flags, then short runs on the tiny dataset (traffic, determinism)."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import main
from cli import apply_algorithm_defaults, parse_args, validate
from flcore.deep_inversion import (BatchNormStatistics, SynthesisSettings, Teacher, bn_statistics_distance,
                                   competition_loss, distillation_loss, draw_jitter, draw_labels, draw_teachers,
                                   ensemble_probabilities, jensen_shannon, jitter, l2_prior, masked_cross_entropy,
                                   masked_logits_and_labels, synthesis_loss, synthesize_batch, teacher_loss,
                                   total_variation)
from flcore.servers.serverdi import student_architecture
from flcore.registry import get_server_class
from flcore.servers.serverdi import random_crop, random_flip
from trainmodel.families import client_architecture
from trainmodel.models import build_model
from utils.data_utils import load_federated_dataset
from utils.errors import UserError
from utils.result_utils import read_results

# A few Adam steps on tiny batches: enough to exercise every path in seconds.
TINY_FLAGS = ["-algo", "DeepInversion", "-m", "HtFE-cpu", "--teacher_epochs", "1", "--di_batches", "2",
              "--di_batch_size", "8", "--di_iterations", "3", "--student_epochs", "1", "-sbs", "8",
              "--save_generated_every", "0"]


def batchnorm(running_mean, running_var) -> nn.BatchNorm2d:
    """An eval-mode BN layer that normalises with the given statistics and eps 0, weight 1, bias 0."""
    layer = nn.BatchNorm2d(len(running_mean), eps=0.0)
    layer.running_mean.copy_(torch.tensor(running_mean))
    layer.running_var.copy_(torch.tensor(running_var))
    return layer.eval()


# Channel 0 holds 1, 3, 1, 3 (mean 2, biased variance 1); channel 1 holds 0, 0, 4, 4 (mean 2, variance 4).
FEATURES = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]],
                         [[[1.0, 3.0]], [[4.0, 4.0]]]])  # [N=2, C=2, H=1, W=2]


# ---- BatchNorm statistics ----------------------------------------------------------------------
def test_bn_distance_of_a_hand_made_batch():
    # mean (2, 2) vs running (0, 2): distance 2; variance (1, 4) vs running (1, 1): distance 3.
    distance = bn_statistics_distance(FEATURES, torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]))
    assert distance.item() == pytest.approx(5.0)


def test_bn_hooks_sum_over_the_layers_of_a_tiny_network_and_reset():
    # Prepare: layer 1 sees FEATURES (distance 5) and outputs x - (0, 2): channel means (2, 0),
    # variances (1, 4); layer 2's running statistics (2, 1) / (1, 4) give distance 1 + 0.
    network = nn.Sequential(batchnorm([0.0, 2.0], [1.0, 1.0]), batchnorm([2.0, 1.0], [1.0, 4.0]))
    statistics = BatchNormStatistics(network)
    # Execute
    with torch.no_grad():
        network(FEATURES)
    # Assert
    assert len(statistics.layers) == 2
    assert statistics.take().item() == pytest.approx(6.0)
    assert statistics.take().item() == 0.0  # taken: nothing left until the next pass
    statistics.remove()
    network(FEATURES)
    assert statistics.take().item() == 0.0


def test_a_teacher_without_batchnorm_has_no_bn_term():
    teacher = Teacher(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.tensor([1, 1, 1]))
    terms = teacher_loss(teacher, FEATURES, torch.tensor([0, 2]), SynthesisSettings(iterations=1))
    assert not teacher.has_batchnorm
    assert terms["bn"].item() == 0.0
    assert terms["total"].item() == pytest.approx(terms["ce"].item())


def test_teacher_loss_is_ce_plus_ten_times_bn():
    # A BN layer followed by a fixed linear classifier over 3 classes, all known.
    model = nn.Sequential(batchnorm([0.0, 2.0], [1.0, 1.0]), nn.Flatten(), nn.Linear(4, 3))
    teacher = Teacher(model, torch.tensor([5, 5, 5]))
    labels = torch.tensor([1, 2])
    terms = teacher_loss(teacher, FEATURES, labels, SynthesisSettings(iterations=1))
    expected_ce = nn.functional.cross_entropy(model(FEATURES), labels)
    assert terms["bn"].item() == pytest.approx(5.0)
    assert terms["ce"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(expected_ce.item() + 10 * 5.0, rel=1e-6)


# ---- image priors ------------------------------------------------------------------------------
def test_total_variation_of_a_two_by_two_image():
    # [[0, 1], [3, 5]]: right differences -1, -2 (norm sqrt 5); down -3, -4 (5);
    # down-right 0 - 5 (5); down-left 1 - 3 (2).
    image = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    assert total_variation(image).item() == pytest.approx(math.sqrt(5) + 12)
    assert total_variation(torch.full((2, 3, 4, 4), 0.7)).item() == 0.0


def test_l2_prior_is_the_norm_of_the_whole_batch():
    batch = torch.tensor([[[[3.0]]], [[[4.0]]]])
    assert l2_prior(batch).item() == pytest.approx(5.0)


# ---- Adaptive DeepInversion's competition -----------------------------------------------------------
def test_jensen_shannon_of_known_distributions():
    # Disjoint one-hot distributions: JS = ln 2, competition 1 - ln 2.
    certain_a, certain_b = torch.tensor([[0.0, -math.inf]]), torch.tensor([[-math.inf, 0.0]])
    assert jensen_shannon(certain_a, certain_b, 3.0).item() == pytest.approx(math.log(2))
    assert competition_loss(certain_a, certain_b, 3.0).item() == pytest.approx(1 - math.log(2))
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # KL(P||M) = (ln(2/3) + ln 2) / 2, KL(Q||M) = ln(4/3).
    even = torch.tensor([[0.0, 0.0]])
    expected = ((math.log(2 / 3) + math.log(2)) / 2 + math.log(4 / 3)) / 2
    assert jensen_shannon(even, certain_a, 3.0).item() == pytest.approx(expected)
    # The same distribution twice: JS 0, competition 1.
    assert competition_loss(even, even, 3.0).item() == pytest.approx(1.0)


def test_jensen_shannon_uses_the_temperature():
    # Logits 3 ln p at temperature 3 are the distribution p itself.
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    m = (p + q) / 2
    expected = float(((p * (p / m).log()).sum() + (q * (q / m).log()).sum()) / 2)
    assert jensen_shannon(3 * p.log()[None], 3 * q.log()[None], 3.0).item() == pytest.approx(expected, rel=1e-5)
    # A batch is averaged over its rows.
    rows = jensen_shannon(torch.stack([3 * p.log(), 3 * p.log()]), torch.stack([3 * q.log(), 3 * p.log()]), 3.0)
    assert rows.item() == pytest.approx(expected / 2, rel=1e-5)


# ---- class masking -------------------------------------------------------------------------------
def test_masked_cross_entropy_keeps_known_samples_and_classes():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0], [4.0, 9.0, 1.0]])
    known = torch.tensor([True, False, True])
    # Sample 1 (class 1, unknown) is left out; class 1's logit too.
    # Sample 0: logits (1, 3), target index 0 -> ln(1 + e^2); sample 2: logits (4, 1), class 2 is
    # index 1 -> ln(1 + e^3).
    expected = (math.log(1 + math.e ** 2) + math.log(1 + math.e ** 3)) / 2
    loss = masked_cross_entropy(logits, torch.tensor([0, 1, 2]), known)
    assert loss.item() == pytest.approx(expected)
    kept, renumbered = masked_logits_and_labels(logits, torch.tensor([0, 1, 2]), known)
    assert torch.equal(kept, torch.tensor([[1.0, 3.0], [4.0, 1.0]]))
    assert torch.equal(renumbered, torch.tensor([0, 1]))


def test_masked_cross_entropy_is_zero_when_no_label_is_known():
    logits = torch.randn(2, 3, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.tensor([1, 1]), torch.tensor([True, False, True]))
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph
    assert torch.count_nonzero(logits.grad) == 0


def test_competition_is_masked_like_the_cross_entropy():
    # Teacher knows classes 0 and 2; the sample of class 1 must not enter its competition term.
    teacher = Teacher(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), torch.tensor([3, 0, 1]))
    student_logits = torch.tensor([[0.0, 7.0, 1.0], [5.0, -3.0, 0.0]])
    labels = torch.tensor([2, 1])
    settings = SynthesisSettings(iterations=1, competition=0.5)
    terms = teacher_loss(teacher, FEATURES, labels, settings, student_logits)
    with torch.no_grad():
        teacher_logits = teacher.model(FEATURES)
    expected = competition_loss(teacher_logits[:1, [0, 2]], student_logits[:1, [0, 2]], 3.0)
    assert terms["competition"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx(terms["ce"].item() + 0.5 * expected.item(), rel=1e-6)


def test_labels_come_only_from_classes_with_samples():
    rng = torch.Generator().manual_seed(0)
    labels = draw_labels(torch.tensor([0, 30, 0, 10, 0]), 4000, rng)
    assert set(labels.tolist()) == {1, 3}
    assert (labels == 1).float().mean().item() == pytest.approx(0.75, abs=0.03)


# ---- the step's randomness ---------------------------------------------------------------------
def test_jitter_is_a_roll_by_the_drawn_offsets():
    # Prepare: two generators in the same state, one for the function, one to predict it.
    rng, twin = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    for _ in range(20):
        # Execute
        shift_y, shift_x = draw_jitter(2, rng)
        moved = jitter(x, shift_y, shift_x)
        # Assert: the offsets are the generator's next two integers in [-2, 2], and pixel
        # (i, j) comes from ((i - shift_y) mod H, (j - shift_x) mod W).
        assert [shift_y, shift_x] == torch.randint(-2, 3, (2,), generator=twin).tolist()
        rows = (torch.arange(5) - shift_y) % 5
        cols = (torch.arange(6) - shift_x) % 6
        assert torch.equal(moved, x[:, :, rows][:, :, :, cols])
    offsets = {draw_jitter(2, rng)[0] for _ in range(200)}
    assert offsets == {-2, -1, 0, 1, 2}
    assert draw_jitter(0, rng) == (0, 0)


def test_sampling_draws_distinct_teachers():
    rng = torch.Generator().manual_seed(0)
    draws = [draw_teachers(5, 3, rng) for _ in range(100)]
    assert all(len(set(d)) == 3 and d == sorted(d) and max(d) < 5 for d in draws)
    assert len({tuple(d) for d in draws}) > 5
    assert draw_teachers(2, 3, rng) == [0, 1]


def tiny_bn_teacher(seed: int, counts) -> Teacher:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    return Teacher(model, torch.tensor(counts))


def test_synthesis_loss_averages_teachers_and_adds_the_priors_once():
    teachers = [tiny_bn_teacher(0, [2, 2, 0]), tiny_bn_teacher(1, [0, 1, 1])]
    x = torch.rand(4, 3, 6, 6) * 2 - 1
    labels = torch.tensor([0, 1, 2, 1])
    settings = SynthesisSettings(iterations=1, tv_weight=0.01, l2_weight=0.1)
    loss = synthesis_loss(x, labels, teachers, settings, (1, -2))
    moved = jitter(x, 1, -2)
    per_teacher = [teacher_loss(t, moved, labels, settings)["total"].item() for t in teachers]
    expected = sum(per_teacher) / 2 + 0.01 * total_variation(x).item() + 0.1 * l2_prior(x).item()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_synthesize_batch_is_seeded_bounded_and_leaves_models_alone():
    teachers = [tiny_bn_teacher(0, [2, 2, 0]), tiny_bn_teacher(1, [0, 1, 1]), tiny_bn_teacher(2, [1, 1, 1])]
    student = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).train()
    before = [{k: v.clone() for k, v in t.model.state_dict().items()} for t in teachers]
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    settings = SynthesisSettings(iterations=4, competition=1.0)
    labels = torch.tensor([0, 1, 2, 2, 1])
    losses = []
    first = synthesize_batch(teachers, labels, (3, 6, 6), settings, torch.Generator().manual_seed(5),
                             teachers_per_step=2, student=student, on_step=losses.append)
    again = synthesize_batch(teachers, labels, (3, 6, 6), settings, torch.Generator().manual_seed(5),
                             teachers_per_step=2, student=student)
    assert first.shape == (5, 3, 6, 6) and len(losses) == 4
    assert torch.equal(first, again)
    assert first.min() >= -1 and first.max() <= 1
    for teacher, state in zip(teachers, before):
        assert all(torch.equal(state[k], v) for k, v in teacher.model.state_dict().items())
    assert all(torch.equal(student_before[k], v) for k, v in student.state_dict().items())
    assert student.training and all(p.requires_grad for p in student.parameters())


# ---- the student's augmentation ---------------------------------------------------------------
def test_random_crop_cuts_each_image_at_its_drawn_offset():
    x = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(3, 2, 4, 4)
    cropped = random_crop(x, 2, torch.Generator().manual_seed(1))
    twin = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 5, (3,), generator=twin), torch.randint(0, 5, (3,), generator=twin)
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(3):
        assert torch.equal(cropped[i], padded[i, :, top[i]:top[i] + 4, left[i]:left[i] + 4])
    assert random_crop(x, 0, twin) is x


def test_random_flip_mirrors_some_images_whole():
    x = torch.randn(64, 3, 5, 5)
    flipped = random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(flipped, x)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54


# ---- flags ------------------------------------------------------------------------------------------
def test_student_is_the_family_first_unless_named():
    assert student_architecture(None, "HtFE-cpu") == "FedAvgCNN"
    assert student_architecture("resnet-8", "HtFE-cpu") == "ResNet8"
    with pytest.raises(UserError, match="choose one of FedAvgCNN, ResNet4, ResNet8"):
        student_architecture("ResNet18", "HtFE-cpu")


def test_a_student_outside_the_family_is_a_one_line_error(data_root, tmp_path, capsys):
    code = main.main(["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out",
                      str(tmp_path), "-gr", "1", *TINY_FLAGS, "--student_model", "ResNet18"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: --student_model ResNet18 is not in -m HtFE-cpu: choose one of FedAvgCNN, ResNet4, ResNet8"]


@pytest.mark.parametrize("flag,value,message", [
    ("--di_teachers_per_step", "0", "--di_teachers_per_step must be at least 1"),
    ("--di_batches", "0", "--di_batches must be at least 1"),
    ("--di_jitter", "-1", "--di_jitter must not be negative"),
    ("--di_temperature", "0", "--di_temperature must be positive"),
    ("--student_temperature", "0", "--student_temperature must be positive"),
])
def test_bad_flag_values_are_user_errors(flag, value, message):
    args = parse_args(["-algo", "DeepInversion", flag, value])
    apply_algorithm_defaults(args)
    with pytest.raises(UserError, match=message):
        validate(args)


# ---- runs on the tiny dataset -------------------------------------------------------------------
def tiny_server(data_root, tmp_path, *flags):
    args = parse_args(["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out",
                       str(tmp_path), "-gr", "1", *TINY_FLAGS, *flags])
    server_class = get_server_class(args.algorithm)
    apply_algorithm_defaults(args)
    validate(args)
    data = load_federated_dataset("Tiny", 4, None, data_root)
    args.num_classes = data.num_classes
    return server_class(args, 0, data)


def run_tiny(data_root, out, *flags, rounds=1):
    assert main.main(["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(out),
                      "-gr", str(rounds), *TINY_FLAGS, *flags]) == 0
    series, _ = read_results(os.path.join(out, "Tiny_DeepInversion_test_0.h5"))
    return series


def teacher_floats(num_clients: int) -> int:
    """Float parameters and buffers of the clients' models (16x16 images)."""
    total = 0
    for cid in range(num_clients):
        model = build_model(client_architecture("HtFE-cpu", cid), num_classes=10, image_size=16)
        total += sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    return total


def test_one_round_uploads_the_teachers_once(data_root, tmp_path):
    series = run_tiny(data_root, tmp_path)
    assert len(series["rs_test_acc"]) == 2 and np.all(np.isfinite(series["rs_test_acc"]))
    assert list(series["floats_up"]) == [teacher_floats(4)]
    assert list(series["floats_down"]) == [0] and list(series["setup_floats_down"]) == [0]
    assert series["phase_seconds"]["synthesis"][0] > 0


def test_same_seed_same_results_and_no_traffic_after_round_0(data_root, tmp_path):
    # Two rounds with sampling mode and the competition (active in round 1).
    flags = ["--di_teacher_mode", "sampling", "--di_teachers_per_step", "2", "--seed", "7"]
    first = run_tiny(data_root, tmp_path / "a", *flags, rounds=2)
    second = run_tiny(data_root, tmp_path / "b", *flags, rounds=2)
    assert np.array_equal(first["rs_test_acc"], second["rs_test_acc"])
    assert np.array_equal(first["rs_train_loss"], second["rs_train_loss"])
    assert list(first["floats_up"]) == [teacher_floats(4), 0]
    assert list(first["floats_down"]) == [0, 0]


def test_pool_grows_and_clients_keep_one_student(data_root, tmp_path):
    server = tiny_server(data_root, tmp_path, "-gr", "2", "--student_model", "ResNet4")
    server.evaluate(0)
    students = [client.student for client in server.executor._clients.values()]
    server.train_round(0, [0, 1, 2, 3])
    assert len(server.teachers) == 4 and len(server.pool_y) == 16
    # Each synthetic batch of cycle mode carries labels its teacher was trained on.
    for batch in range(2):
        labels = server.pool_y[8 * batch:8 * batch + 8]
        assert server.teachers[batch].class_mask[labels].all()
    server.train_round(1, [0, 1, 2, 3])
    assert len(server.pool_y) == 32
    # Every image keeps the teachers' soft label it got on joining the pool.
    assert server.pool_soft.shape == (32, 10)
    assert torch.allclose(server.pool_soft.sum(dim=1), torch.ones(32))
    assert torch.allclose(server.pool_soft[:16], ensemble_probabilities(server.teachers, server.pool_x[:16], 3.0),
                          atol=1e-6)
    server.evaluate(2)
    assert all(s is not None for s in students)
    assert all(client.student is s for client, s in zip(server.executor._clients.values(), students))
    assert all(s.arch == "ResNet4" for s in students)
    state = server.student.state_dict()
    assert all(torch.equal(state[k], v.to(state[k].device)) for k, v in students[0].state_dict().items())
    # The saved grid: one row of 10 per class, 16x16 images enlarged and labelled.
    from utils.image_grid import grid_layout

    server.args.save_generated_every = 1
    server.save_generated(torch.zeros(3, 3, 16, 16), torch.tensor([2, 2, 5]), 0)
    layout = grid_layout(10 * 10, 10, 16, 16, labelled=True)
    with Image.open(os.path.join(server.run_dir, "synthetic_round_0000.png")) as grid:
        assert grid.size == layout.size
        # Row 2 starts with a saved image (grey 0 -> 127/128), row 0 is black filler.
        x, y = layout.origin(2 * 10)
        assert grid.getpixel((x + 8, y + 8))[0] in (127, 128)
        x, y = layout.origin(0)
        assert grid.getpixel((x + 8, y + 8))[0] == 0


# ---- the student's labels ------------------------------------------------------------------------
class FixedLogits(nn.Module):
    """A 'teacher' that gives every image the same logits."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def test_ensemble_weights_each_teachers_own_classes_by_its_counts():
    # Teacher A knows classes 0, 1 (counts 3, 1); B knows 1, 2 (counts 1, 1). Equal logits on
    # known classes give each teacher a uniform softmax over its own classes.
    a = Teacher(FixedLogits([0.0, 0.0, 9.0]), torch.tensor([3, 1, 0]))
    b = Teacher(FixedLogits([9.0, 0.0, 0.0]), torch.tensor([0, 1, 1]))
    probs = ensemble_probabilities([a, b], torch.zeros(2, 1, 4, 4), temperature=1.0)
    # Class 0: 3 * 1/2; class 1: 1 * 1/2 + 1 * 1/2; class 2: 1 * 1/2; sum 3.
    assert torch.allclose(probs, torch.tensor([[0.5, 1 / 3, 1 / 6]] * 2))


def test_ensemble_temperature_softens_a_teacher():
    teacher = Teacher(FixedLogits([math.log(4.0), 0.0]), torch.tensor([5, 5]))
    sharp = ensemble_probabilities([teacher], torch.zeros(1, 1, 2, 2), temperature=1.0)
    soft = ensemble_probabilities([teacher], torch.zeros(1, 1, 2, 2), temperature=2.0)
    assert torch.allclose(sharp, torch.tensor([[0.8, 0.2]]))
    assert torch.allclose(soft, torch.tensor([[2 / 3, 1 / 3]]))  # exp(log 4 / 2) = 2


def test_distillation_is_t_squared_kl_and_zero_at_the_target():
    target = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]], requires_grad=True)
    loss = distillation_loss(logits, target, temperature=2.0)
    q = torch.softmax(logits.detach() / 2, dim=1)
    kl = (target * (target / q).log()).sum(dim=1).mean()
    assert torch.isclose(loss, 4 * kl)
    loss.backward()
    # d/dlogits of T^2 KL = T (softmax(s / T) - p), averaged over the batch.
    assert torch.allclose(logits.grad, 2 * (q - target) / 2)
    matching = torch.log(target) * 2.0  # softmax(matching / 2) = target
    assert distillation_loss(matching, target, 2.0).abs() < 1e-6


@pytest.mark.parametrize("labels, learnt", [("ensemble", 1), ("target", 0)])
def test_the_student_learns_the_teachers_belief_unless_told_to_learn_targets(data_root, tmp_path, labels, learnt):
    # A pool whose synthesis targets (class 0) the teachers together reject: they see class 1.
    # The default student follows the teachers; `--student_labels target` the targets.
    server = tiny_server(data_root, tmp_path, "--student_labels", labels, "--student_epochs", "30",
                         "-slr", "0.05")
    generator = torch.Generator().manual_seed(0)
    server.pool_x = torch.rand((32, *server.image_shape), generator=generator) * 2 - 1
    server.pool_y = torch.zeros(32, dtype=torch.long)
    server.pool_soft = torch.nn.functional.one_hot(torch.ones(32, dtype=torch.long), 10).float() * 0.9 + 0.01
    server.train_student()
    server.student.eval()
    with torch.no_grad():
        predicted = server.student(server.pool_x).argmax(dim=1)
    assert (predicted == learnt).float().mean() > 0.9


def test_the_student_defaults_to_the_teachers_soft_labels_at_temperature_3():
    args = parse_args(["-algo", "DeepInversion"])
    apply_algorithm_defaults(args)
    assert args.student_labels == "ensemble" and args.student_temperature == 3.0
