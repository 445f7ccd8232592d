"""The client every algorithm extends.

A client owns its model, optimiser, data and random stream. The server reaches it only
through an executor calling `setup`, `train` and `evaluate` (or an algorithm's own
methods) with a payload and getting a reply of CPU tensors and numbers back.

Subclasses usually override `classification_loss`/`scores` (how the model is read),
`train_step` (what one local step does) and `train`'s reply (what is uploaded).
"""
import itertools
import time

import torch
import torch.nn as nn

from flcore.clients.interface import server_call
from utils.metrics import classification_stats
from utils.payload import first_non_finite, first_non_finite_named
from utils.seeding import derive_seed
from utils.state import capture_state, named_float_tensors, restore_state


class Client:
    #: attributes fixed at construction (data, flags, loss modules): left out of checkpoints.
    #: Subclasses add theirs, e.g. caches rebuilt on every call.
    CHECKPOINT_STATIC = frozenset({"args", "device", "train_x", "train_y", "test_x", "test_y", "ce_loss",
                                   "loss_total"})

    def __init__(self, args, client_id: int, model: nn.Module, data, seed: int):
        self.id = client_id
        self.args = args
        self.device = torch.device(args.device)
        self.num_classes = args.num_classes
        self.batch_size = args.batch_size
        self.eval_batch_size = args.eval_batch_size
        self.local_epochs = args.local_epochs
        self.learning_rate = args.local_learning_rate
        self.stored_order = bool(getattr(args, "stored_order", False))
        # channels_last: ~30% faster convolutions on CPU for these small models.
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.train_x, self.train_y = data.train_x, data.train_y
        self.test_x, self.test_y = data.test_x, data.test_y
        self.train_samples = int(self.train_y.numel())
        self.test_samples = int(self.test_y.numel())
        # Shuffling has its own stream per client, so one client's draws never shift another's.
        self.rng = torch.Generator().manual_seed(derive_seed(seed, "client-data", client_id))
        self.ce_loss = nn.CrossEntropyLoss()
        self.optimizer = self.make_optimizer()
        self.scheduler = (torch.optim.lr_scheduler.ExponentialLR(
            self.optimizer, gamma=args.learning_rate_decay_gamma)
            if args.learning_rate_decay and self.optimizer is not None else None)
        self._train_loss = None  # (sum, count) for the current weights, see train_loss_stats
        self.loss_total = None  # sum of the training losses since the last guarded call began

    # ---- pieces subclasses override -------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.learning_rate)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores used for prediction (argmax) and AUC."""
        return self.model(x)

    def classification_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch; reported as the training loss."""
        return self.ce_loss(self.model(x), y)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; returns the whole loss it minimised (every term,
        so that a non-finite one is noticed)."""
        loss = self.classification_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def upload(self) -> dict:
        """What the client sends back after training."""
        return {}

    # ---- calls the server makes through the executor ---------------------------------
    @server_call
    def setup(self, payload) -> dict:
        return {}

    @server_call
    def train(self, payload=None) -> dict:
        start = time.perf_counter()
        self.local_train()
        seconds = time.perf_counter() - start
        reply = self.upload()
        reply["num_samples"] = self.train_samples
        reply.setdefault("timings", {})["client_training"] = seconds
        return reply

    @server_call
    def evaluate(self, payload=None) -> dict:
        self.model.eval()
        with torch.no_grad():
            scores = [self.scores(x) for x, _ in self.full_batches(self.test_x, self.test_y)]
        stats = classification_stats(
            torch.cat(scores) if scores else torch.zeros(0, self.num_classes),
            self.test_y, self.num_classes)
        loss_sum, count = self.train_loss_stats()
        stats.update(train_loss_sum=loss_sum, train_num=count)
        return stats

    @server_call
    def checkpoint_state(self, payload=None) -> dict:
        """Everything that changes during a run, as plain containers of CPU tensors."""
        return capture_state(self, self.CHECKPOINT_STATIC)

    @server_call
    def restore_checkpoint_state(self, state: dict) -> dict:
        restore_state(self, state, self.device, self.CHECKPOINT_STATIC)
        return {}

    def guarded(self, method: str, payload=None) -> dict:
        """Call a training method; if a training loss, a weight or the reply is not finite,
        put the client back as it was before the call and reply {"skipped": reason} instead."""
        before = capture_state(self, self.CHECKPOINT_STATIC, copy=True)
        self.loss_total = None
        reply = getattr(self, method)(payload)
        # The summed loss predates the last step, so the weights that step made are checked
        # too; all in one device synchronisation.
        checked = self.held_tensors()
        if self.loss_total is not None:
            checked = itertools.chain([(_LOSS, self.loss_total)], checked)
        where = first_non_finite_named(checked)
        if where is _LOSS:
            problem = f"training loss is {float(self.loss_total)}"
        elif where is not None:
            problem = f"weights {where} are not finite after training"
        else:
            where = first_non_finite(reply)
            problem = None if where is None else f"upload {where} is not finite"
        self.loss_total = None
        if problem is None:
            return reply
        restore_state(self, before, self.device)
        return {"skipped": problem, "num_samples": self.train_samples, "timings": reply.get("timings", {})}

    def held_tensors(self):
        """(name, tensor) for every parameter and buffer of the modules this client keeps in
        its checkpoints (static attributes left out), each tensor once."""
        return named_float_tensors(self, self.CHECKPOINT_STATIC, modules_only=True)

    # ---- helpers --------------------------------------------------------------------
    def local_train(self) -> None:
        self.model.train()
        self._train_loss = None
        self.run_epochs(self.local_epochs)
        if self.scheduler is not None:
            self.scheduler.step()

    def run_epochs(self, epochs: int) -> None:
        """`epochs` passes of `train_step` over shuffled batches, summing the losses on the
        device (no synchronisation per step) for `guarded`'s check."""
        for _ in range(epochs):
            for x, y in self.train_batches():
                loss = self.train_step(x, y).detach()
                self.loss_total = loss if self.loss_total is None else self.loss_total + loss

    def train_batches(self):
        """One shuffled epoch of full batches (the last partial batch is dropped, as HtFLlib does).
        A training set smaller than one batch (but of two samples or more) is one batch of its own,
        so that its client trains. With --stored_order, the stored order every epoch and full
        batches only, as the original's loader."""
        if self.stored_order:
            order = torch.arange(self.train_samples)
        else:
            order = torch.randperm(self.train_samples, generator=self.rng)
        size = self.batch_size
        # One sample stays out: training-mode BatchNorm cannot normalise a batch of one.
        if not self.stored_order and 2 <= self.train_samples < size:
            size = self.train_samples
        for start in range(0, self.train_samples - size + 1, size):
            index = order[start:start + size]
            yield self.images_to_device(self.train_x[index]), self.to_device(self.train_y[index])

    def full_batches(self, x: torch.Tensor, y: torch.Tensor):
        """Large ordered batches for passes without gradients."""
        for start in range(0, int(y.numel()), self.eval_batch_size):
            yield (self.images_to_device(x[start:start + self.eval_batch_size]),
                   self.to_device(y[start:start + self.eval_batch_size]))

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def images_to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def train_loss_stats(self) -> tuple[float, int]:
        """(summed loss, samples) over the training set for the current weights.

        Cached until the next training, so an algorithm that already made a pass over
        the training data (FedKTL's prototypes) fills it in for free.
        """
        if self._train_loss is None:
            self.model.eval()
            total = 0.0
            with torch.no_grad():
                for x, y in self.full_batches(self.train_x, self.train_y):
                    total += float(self.classification_loss(x, y)) * int(y.numel())
            self._train_loss = (total, self.train_samples)
        return self._train_loss


#: stands for the summed training loss among the tensors `guarded` checks
_LOSS = object()
