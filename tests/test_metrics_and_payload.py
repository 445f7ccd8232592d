"""Evaluation aggregation and traffic accounting on hand-made replies."""
import math

import numpy as np
import pytest
import torch

from utils.metrics import aggregate_evaluations, classification_stats, micro_auc
from utils.payload import Traffic, payload_size, to_payload
from utils.sampling import draw_client_schedule


def reply(correct, num, auc, loss_sum, train_num):
    return dict(test_correct=correct, test_num=num, test_auc=auc, train_loss_sum=loss_sum, train_num=train_num)


def test_aggregate_weights_by_samples_like_htfllib():
    replies = [reply(9, 10, 0.9, 5.0, 10), reply(10, 90, 0.5, 45.0, 30)]
    out = aggregate_evaluations(replies)
    assert out["test_acc"] == pytest.approx(19 / 100)
    assert out["test_auc"] == pytest.approx((0.9 * 10 + 0.5 * 90) / 100)
    assert out["train_loss"] == pytest.approx(50.0 / 40)
    assert out["client_mean_acc"] == pytest.approx((0.9 + 10 / 90) / 2)
    assert out["client_std_acc"] == pytest.approx(np.std([0.9, 10 / 90]))


def test_aggregate_skips_clients_without_test_data_and_nan_auc():
    replies = [reply(0, 0, float("nan"), 1.0, 1), reply(3, 4, float("nan"), 2.0, 1), reply(1, 4, 0.8, 3.0, 2)]
    out = aggregate_evaluations(replies)
    assert out["test_acc"] == pytest.approx(4 / 8)
    assert out["test_auc"] == pytest.approx(0.8)
    assert out["client_mean_acc"] == pytest.approx((0.75 + 0.25) / 2)


def test_classification_stats_counts_argmax_hits():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    stats = classification_stats(scores, torch.tensor([0, 1, 1]), 2)
    assert stats["test_correct"] == 2 and stats["test_num"] == 3
    assert 0.0 <= stats["test_auc"] <= 1.0


def test_micro_auc_perfect_and_reversed():
    labels = np.array([0, 1, 2])
    perfect = np.eye(3)
    assert micro_auc(perfect, labels, 3) == pytest.approx(1.0)
    assert micro_auc(1 - perfect, labels, 3) == pytest.approx(0.0)
    assert math.isnan(micro_auc(np.zeros((0, 3)), np.zeros(0, dtype=int), 3))


def test_payload_size_counts_tensors_and_floats():
    payload = {"a": torch.zeros(3, 4), "b": [torch.zeros(5, dtype=torch.float64), torch.zeros(2, dtype=torch.int64)],
               "n": 7}
    nbytes, floats = payload_size(payload)
    assert nbytes == 12 * 4 + 5 * 8 + 2 * 8
    assert floats == 12 + 5
    traffic = Traffic()
    traffic.add_down(payload, copies=3)
    traffic.add_up({"p": torch.zeros(10)})
    assert traffic.floats_down == 51 and traffic.floats_up == 10
    assert traffic.bytes_down == 3 * nbytes


def test_to_payload_is_a_detached_copy():
    source = torch.ones(3, requires_grad=True)
    copy = to_payload(source)
    with torch.no_grad():
        source.add_(1)
    assert torch.equal(copy, torch.ones(3)) and not copy.requires_grad


def test_client_schedule_is_seeded_and_respects_join_ratio():
    a = draw_client_schedule(20, 0.5, False, 5, seed=1)
    b = draw_client_schedule(20, 0.5, False, 5, seed=1)
    c = draw_client_schedule(20, 0.5, False, 5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    assert all(len(ids) == 10 and len(set(ids.tolist())) == 10 for ids in a)
    full = draw_client_schedule(20, 1.0, False, 2, seed=0)
    assert full[0].tolist() == list(range(20))
    random_sizes = draw_client_schedule(20, 0.25, True, 30, seed=0)
    assert all(5 <= len(ids) <= 20 for ids in random_sizes)


def test_non_finite_scores_count_as_wrong_and_give_nan_auc():
    from utils.metrics import classification_stats

    scores = torch.tensor([[0.1, 0.9], [float("nan"), 0.0], [0.8, 0.2]])
    stats = classification_stats(scores, torch.tensor([1, 0, 0]), 2)
    assert stats["test_correct"] == 2 and stats["test_num"] == 3
    assert math.isnan(stats["test_auc"])
