"""Evaluation as HtFLlib computes it, plus the unweighted client mean.

Client side: `classification_stats` turns scores on a test set into counts and a
micro-averaged AUC. Server side: `aggregate_evaluations` combines client replies;
it is a pure function so it can be tested on hand-made replies.
"""
import math

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def micro_auc(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Micro-averaged one-vs-rest ROC AUC over all classes (HtFLlib's choice).

    Scores of any scale work: AUC depends only on their order.
    """
    if len(labels) == 0:
        return float("nan")
    onehot = np.zeros((len(labels), num_classes), dtype=np.int64)
    onehot[np.arange(len(labels)), labels] = 1
    if onehot.min() == onehot.max() or not np.isfinite(scores).all():
        return float("nan")  # one class only, or a diverged model: no ranking to score
    return float(roc_auc_score(onehot.ravel(), scores.ravel()))


def classification_stats(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    scores = scores.detach().float().cpu()
    labels = labels.detach().cpu()
    # A diverged model's NaN scores count as wrong, not as a prediction of class argmax(NaN).
    finite = torch.isfinite(scores).all(dim=1)
    correct = int(((scores.argmax(dim=1) == labels) & finite).sum())
    return {
        "test_correct": correct,
        "test_num": int(labels.numel()),
        "test_auc": micro_auc(scores.numpy(), labels.numpy(), num_classes),
    }


def aggregate_evaluations(replies: list[dict]) -> dict:
    """Combine per-client evaluation replies.

    - `test_acc`: correct / samples over all clients' test sets (HtFLlib's number).
    - `test_auc`: client AUCs weighted by test samples (HtFLlib's number).
    - `train_loss`: summed loss / summed samples over training sets.
    - `client_mean_acc` / `client_std_acc`: unweighted over clients with test data.
    """
    correct = sum(r["test_correct"] for r in replies)
    tested = sum(r["test_num"] for r in replies)
    auc_pairs = [(r["test_auc"], r["test_num"]) for r in replies
                 if r["test_num"] > 0 and not math.isnan(r["test_auc"])]
    auc_weight = sum(n for _, n in auc_pairs)
    trained = sum(r["train_num"] for r in replies)
    per_client = np.array([r["test_correct"] / r["test_num"] for r in replies if r["test_num"] > 0])
    return {
        "test_acc": correct / tested if tested else float("nan"),
        "test_auc": sum(a * n for a, n in auc_pairs) / auc_weight if auc_weight else float("nan"),
        "train_loss": sum(r["train_loss_sum"] for r in replies) / trained if trained else float("nan"),
        "client_mean_acc": float(per_client.mean()) if len(per_client) else float("nan"),
        "client_std_acc": float(per_client.std()) if len(per_client) else float("nan"),
    }
