"""One-shot DeepInversion client: trains its own model once as a teacher and uploads it;
afterwards it only evaluates the server's student on its own data."""
import time

import torch
import torch.nn.functional as F

from flcore.clients.clientbase import Client
from flcore.clients.interface import server_call
from trainmodel.models import build_model
from utils.metrics import classification_stats
from utils.payload import state_to_payload


class clientDI(Client):
    # The student is the server's, reloaded on every evaluation.
    CHECKPOINT_STATIC = Client.CHECKPOINT_STATIC | {"student"}

    def __init__(self, args, client_id, model, data, seed):
        super().__init__(args, client_id, model, data, seed)
        self.teacher_epochs = args.teacher_epochs
        self.student = None  # built on the first evaluation, then only reloaded

    @server_call
    def train_teacher(self, payload=None) -> dict:
        """Train the local model for --teacher_epochs epochs; upload it whole (parameters and
        BatchNorm buffers), its architecture and the class counts it was trained on."""
        start = time.perf_counter()
        self.model.train()
        self.run_epochs(self.teacher_epochs)
        self._train_loss = None
        seconds = time.perf_counter() - start
        return {"teacher": state_to_payload(self.model), "arch": self.model.arch,
                "class_counts": torch.bincount(self.train_y, minlength=self.num_classes),
                "num_samples": self.train_samples, "timings": {"client_training": seconds}}

    def load_student(self, payload) -> torch.nn.Module:
        if self.student is None or self.student.arch != payload["arch"]:
            channels, height = self.train_x.shape[1], self.train_x.shape[2]
            # The weights are replaced at once; a fixed seed keeps the global RNG untouched.
            self.student = build_model(payload["arch"], num_classes=self.num_classes,
                                       feature_dim=self.args.feature_dim, image_size=height,
                                       in_channels=channels, seed=0)
            self.student = self.student.to(self.device, memory_format=torch.channels_last)
        self.student.load_state_dict(payload["student"])
        return self.student.eval()

    def evaluate(self, payload=None) -> dict:
        """The student's accuracy and AUC on this client's test set, its loss on the training set."""
        student = self.load_student(payload)
        with torch.no_grad():
            scores = [student(x) for x, _ in self.full_batches(self.test_x, self.test_y)]
            loss_sum = sum(float(F.cross_entropy(student(x), y, reduction="sum"))
                           for x, y in self.full_batches(self.train_x, self.train_y))
        stats = classification_stats(torch.cat(scores) if scores else torch.zeros(0, self.num_classes),
                                     self.test_y, self.num_classes)
        stats.update(train_loss_sum=loss_sum, train_num=self.train_samples)
        return stats
