"""FedLoGe: realignment arithmetic on hand-made heads, the fused three-update step, the
evaluation summary on mock replies, the one-architecture rule and short runs."""
import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import main
from flcore.loge_realignment import (ABSENT_CLASS_LOGIT, balanced_accuracy, mask_absent_classes,
                                     realign_global, realign_local)
from flcore.servers.serverloge import summarize_loge_evaluation
from tests.test_model_sharing_methods import base_flags, build_server
from trainmodel.models import build_model
from utils.payload import payload_size, state_to_payload
from utils.result_utils import read_results


def test_global_realignment_rescales_every_row_to_the_same_norm():
    weight = torch.tensor([[3.0, 4.0], [0.0, 0.5], [0.0, 0.0]])
    realigned = realign_global(weight, norm=1.7)
    assert torch.allclose(realigned, torch.tensor([[1.02, 1.36], [0.0, 1.7], [0.0, 0.0]]))


def test_local_realignment_scales_global_rows_by_personal_row_norms():
    global_weight = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    personal = torch.tensor([[0.0, 2.0], [0.3, 0.4]])  # row norms 2 and 0.5
    assert torch.allclose(realign_local(global_weight, personal), torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="head shapes differ"):
        realign_local(global_weight, torch.zeros(3, 2))


def test_absent_classes_are_masked_out_of_the_prediction():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 9.0]])
    masked = mask_absent_classes(logits, torch.tensor([False, True, True]))
    assert masked[0, 0] == ABSENT_CLASS_LOGIT and masked[0, 1:].tolist() == [1.0, 0.0]
    assert masked.argmax(dim=1).tolist() == [1, 2]


def test_balanced_accuracy_is_the_mean_recall_over_tested_classes():
    assert balanced_accuracy(torch.tensor([1, 0, 3]), torch.tensor([2, 0, 4])) == pytest.approx(0.625)
    assert math.isnan(balanced_accuracy(torch.zeros(3), torch.zeros(3)))


def mock_reply(class_total, generic, realigned, personal_correct, test_correct):
    return {"class_total": torch.tensor(class_total), "generic_class_correct": torch.tensor(generic),
            "generic_realigned_class_correct": torch.tensor(realigned), "personal_correct": personal_correct,
            "test_correct": test_correct, "test_num": sum(class_total)}


def test_evaluation_summary_pools_classes_for_generic_and_averages_clients_for_personal():
    # Prepare: client A tests 4 of class 0 and 0 of class 1; client B 1 of class 0 and 5 of class 1.
    replies = [mock_reply([4, 0], [2, 0], [3, 0], personal_correct=4, test_correct=3),
               mock_reply([1, 5], [1, 1], [0, 5], personal_correct=3, test_correct=6),
               mock_reply([0, 0], [0, 0], [0, 0], personal_correct=0, test_correct=0)]  # no test data
    # Execute
    summary = summarize_loge_evaluation(replies)
    # Assert: generic = mean over classes of pooled recall; personal = mean over tested clients.
    assert summary["rs_generic_acc"] == pytest.approx((3 / 5 + 1 / 5) / 2)
    assert summary["rs_generic_realigned_acc"] == pytest.approx((3 / 5 + 5 / 5) / 2)
    assert summary["rs_personal_acc"] == pytest.approx((4 / 4 + 3 / 6) / 2)
    assert summary["rs_personal_realigned_acc"] == pytest.approx((3 / 4 + 6 / 6) / 2)


def test_one_fused_step_equals_three_separate_updates(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "-algo", "FedLoGe", "-m", "ResNet4", "--sse_c_steps", "5")
    client = server.executor._clients[0]
    x, y = next(client.train_batches())
    reference = copy.deepcopy(client)
    client.optimizers = tuple(torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.5)
                              for m in (client.model.base, client.model.head, client.personal_head))
    client.model.train()
    client.train_step(x, y)

    # The original's order: backbone through SSE-C, then each head on detached features.
    model, personal = reference.model, reference.personal_head
    model.train()
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.5) for m in (model.base, model.head, personal)]
    features = model.base(x)
    F.cross_entropy(features @ reference.sse_c, y).backward()
    optimizers[0].step()
    F.cross_entropy(model.head(features.detach()), y).backward()
    optimizers[1].step()
    F.cross_entropy(personal(features.detach()), y).backward()
    optimizers[2].step()

    for fused, separate in ((client.model, model), (client.personal_head, personal)):
        for (name, a), (_, b) in zip(fused.state_dict().items(), separate.state_dict().items()):
            assert torch.allclose(a, b, atol=1e-6), name


def test_heterogeneous_family_is_refused_with_one_line(data_root, tmp_path, capsys):
    assert main.main(base_flags(data_root, tmp_path) + ["-algo", "FedLoGe", "-m", "HtFE-cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "FedLoGe averages one backbone" in err and "FedAvgCNN, ResNet4, ResNet8" in err and "-m FedAvgCNN" in err


def test_run_reports_four_accuracies_and_shares_only_backbone_and_global_head(data_root, tmp_path):
    flags = base_flags(data_root, tmp_path) + ["-algo", "FedLoGe", "-m", "ResNet4", "--sse_c_steps", "20",
                                                "-jr", "0.5"]
    assert main.main(flags) == 0
    series, config = read_results(os.path.join(tmp_path, "Tiny_FedLoGe_test_0.h5"))
    for name in ("rs_test_acc", "rs_generic_acc", "rs_generic_realigned_acc", "rs_personal_acc",
                 "rs_personal_realigned_acc"):
        assert len(series[name]) == 3 and np.all(np.isfinite(series[name])), name
    assert np.allclose(series["rs_personal_realigned_acc"], series["rs_client_mean_acc"])
    assert config["local_learning_rate"] == 0.03  # FedLoGe's default
    model = build_model("ResNet4", num_classes=10, feature_dim=512, image_size=16, seed=0)
    shared = payload_size({"backbone": state_to_payload(model.base), "head": state_to_payload(model.head)})[1]
    assert list(series["floats_up"]) == [2 * shared] * 2  # 2 of 4 clients per round
    assert list(series["floats_down"]) == [4 * shared] * 2


def test_clients_hold_the_sample_weighted_average_with_batchnorm_buffers(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "-algo", "FedLoGe", "-m", "ResNet4", "--sse_c_steps", "5")
    clients = server.executor._clients
    personal_before = [c.personal_head.weight.clone() for c in clients.values()]
    uploads = {}
    original = server.executor.broadcast

    def spy(ids, method, payload=None, **options):
        replies = original(ids, method, payload, **options)
        if method == "train":
            uploads.update(zip(ids, replies))
        return replies

    server.executor.broadcast = spy
    server.train_round(0, [0, 1, 2, 3])
    weights = [uploads[c]["num_samples"] for c in range(4)]
    key = next(k for k in server.backbone if k.endswith("running_mean"))
    expected = sum(w * uploads[c]["backbone"][key] for c, w in enumerate(weights)) / sum(weights)
    for client in clients.values():
        assert torch.allclose(client.model.base.state_dict()[key], expected, atol=1e-6)
        assert torch.equal(client.model.head.weight, clients[0].model.head.weight)
    # Personal heads trained locally and stayed different from each other.
    assert not torch.equal(clients[0].personal_head.weight, clients[1].personal_head.weight)
    assert not torch.equal(clients[0].personal_head.weight, personal_before[0])
