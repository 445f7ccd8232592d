"""GPT-FL (Zhang et al., arXiv 2306.02210): FedAvg started from a model the server
pre-trained on synthetic data from a text-to-image generator.

Setup, once: prompts from the label names (templates, or a local T5 model), about
three times the clients' real training set in synthetic images (guidance drawn in
[1, 5] with Stable Diffusion), and central training of the global model on them (SGD,
momentum 0.9, weight decay 5e-4, cosine schedule over `-se` epochs). The clients
here are heterogeneous, so there is one FedAvg group, and one such pre-trained global
model, per architecture of the family; each client receives its group's model.

Each round: the selected clients train their group's global model (`-ls` epochs of
SGD at `-lr`) and upload its full state dict; the server averages each group's
uploads uniformly and sends every client its group's new global model. Traffic per
round: a full model up per selected client and down per client.
"""
import math
import re
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from flcore.clients.clientgptfl import clientGPTFL
from flcore.generators.base import map_in_chunks
from flcore.generators.images import to_client_images
from flcore.prompts import class_prompts, resolve_prompt_model
from flcore.servers.serverbase import Server
from flcore.text_to_image import check_text_to_image_flags, load_text_to_image
from flcore.weighted_average import weighted_average
from trainmodel.families import client_architecture
from trainmodel.models import build_model
from utils.payload import state_to_payload
from utils.seeding import derive_seed, torch_generator

#: the paper's synthetic set is about this many times the real training set
SYNTHETIC_FACTOR = 3
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
PREVIEW_PER_CLASS = 8


def synthetic_count_per_class(requested: int, real_train_samples: int, num_classes: int) -> int:
    """`requested` if positive, else three times the real training samples split evenly
    over the classes (rounded up, so the set is never smaller than three times)."""
    if requested > 0:
        return requested
    return max(1, math.ceil(SYNTHETIC_FACTOR * real_train_samples / num_classes))


def image_prompts(prompts: list[list[str]], per_class: int) -> tuple[list[str], torch.Tensor]:
    """One prompt and label per synthetic image, class by class; a class's images cycle
    through its prompts so every prompt is used about equally often."""
    texts, labels = [], []
    for label, options in enumerate(prompts):
        texts += [options[index % len(options)] for index in range(per_class)]
        labels += [label] * per_class
    return texts, torch.tensor(labels, dtype=torch.int64)


def average_per_architecture(architectures: list[str], states: list[dict]) -> dict[str, dict]:
    """FedAvg within each architecture: {arch: uniform mean of the states uploaded by
    clients of that arch}. Integer tensors (BatchNorm's batch counters) are taken from
    the group's first state."""
    if len(architectures) != len(states):
        raise ValueError(f"{len(architectures)} architectures but {len(states)} states")
    groups = {}
    for arch, state in zip(architectures, states):
        groups.setdefault(arch, []).append(state)
    return {arch: weighted_average(members, [1.0] * len(members)) for arch, members in groups.items()}


def series_key(arch: str) -> str:
    """An architecture name usable as an h5 dataset name ("ViT-B/16" -> "ViT_B_16")."""
    return re.sub(r"[^A-Za-z0-9]+", "_", arch).strip("_")


def pretrain(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float,
             batch_size: int, generator: torch.Generator, desc: str) -> dict:
    """Central training on the synthetic set: SGD with momentum and weight decay, learning
    rate annealed by a cosine over the epochs. Returns the last epoch's mean loss and
    accuracy on the batches it trained on."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    stats = {"loss": math.nan, "accuracy": math.nan}
    model.train()
    for _ in tqdm(range(epochs), desc=desc, unit="epoch", dynamic_ncols=True, disable=None, leave=False):
        loss_sum, correct, seen = 0.0, 0, 0
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            if len(index) < 2:
                continue  # BatchNorm needs two samples
            logits = model(images[index])
            loss = F.cross_entropy(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(1) == labels[index]).sum())
            seen += len(index)
        schedule.step()
        stats = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
    return stats


class GPTFL(Server):
    client_class = clientGPTFL

    @classmethod
    def check_args(cls, args) -> None:
        super().check_args(args)
        check_text_to_image_flags(args)
        if args.prompt_model is not None:
            resolve_prompt_model(args.prompt_model)

    def setup(self):
        args = self.args
        self.architectures = [client_architecture(args.model_family, cid) for cid in self.all_client_ids]
        start = time.perf_counter()
        self.prompts = class_prompts(self.data.label_names, args.prompt_model, args.prompts_per_class,
                                     derive_seed(self.seed, "gptfl-prompts"), self.device)
        images, labels = self.synthesize()
        self.series["setup_generation_seconds"] = [time.perf_counter() - start]
        self.series["synthetic_images"] = [len(labels)]
        self.save_preview(images, labels)
        start = time.perf_counter()
        self.global_states = self.pretrain_globals(images, labels)
        self.series["setup_pretraining_seconds"] = [time.perf_counter() - start]
        self.send_globals()

    # ---- synthetic data -----------------------------------------------------------------
    def synthesize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic set as client inputs (CPU, [-1, 1], the dataset's image shape)."""
        args = self.args
        text_to_image = load_text_to_image(args, self.device, args.anchor_spread)
        real = sum(client.num_train for client in self.data.clients)
        per_class = synthetic_count_per_class(args.synthetic_per_class, real, self.num_classes)
        texts, labels = image_prompts(self.prompts, per_class)
        tqdm.write(f"GPT-FL: {len(texts)} synthetic images ({per_class} per class; {real} real training "
                   f"samples), prompts such as {self.prompts[0][0]!r}")
        generator = torch_generator(derive_seed(self.seed, "gptfl-synthesis"))
        batch = args.gen_batch_size or text_to_image.default_batch_size
        with tqdm(total=len(texts), desc="GPT-FL synthesis", unit="img", dynamic_ncols=True, disable=None,
                  leave=False) as bar:

            def to_client(images):
                client_images = to_client_images(images, self.data.image_shape)
                bar.update(len(images))
                return client_images

            # `batch` prompts per call, halved for the rest of the synthesis on GPU out-of-memory.
            parts, _ = map_in_chunks(lambda chunk: text_to_image.generate(chunk, generator), texts, batch,
                                     stage="GPT-FL synthesis", then=to_client, report=tqdm.write)
        return torch.cat(parts), labels

    def save_preview(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """A grid of the first few synthetic images of every class, one class per row, each
        labelled with its class's name."""
        shown = min(PREVIEW_PER_CLASS, int(torch.bincount(labels).min()))
        rows = [images[labels == label][:shown] for label in range(self.num_classes)]
        names = [self.data.label_names[label] for label in range(self.num_classes) for _ in range(shown)]
        self.save_image_grid(torch.cat(rows), "synthetic_preview.png", nrow=shown, labels=names)

    # ---- central pre-training -----------------------------------------------------------
    def pretrain_globals(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, dict]:
        """One global model per architecture in use, each trained on the whole synthetic set."""
        args = self.args
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        labels = labels.to(self.device)
        states = {}
        for arch in dict.fromkeys(self.architectures):  # family order, each once
            model = build_model(arch, num_classes=self.num_classes, feature_dim=args.feature_dim,
                                image_size=self.data.image_shape[-1], in_channels=self.data.image_shape[0],
                                seed=derive_seed(self.seed, "gptfl-global", arch))
            model = model.to(self.device, memory_format=torch.channels_last)
            order = torch_generator(derive_seed(self.seed, "gptfl-order", arch))
            stats = pretrain(model, images, labels, args.server_epochs, args.server_learning_rate,
                             args.server_batch_size, order, desc=f"GPT-FL pre-training {arch}")
            if args.server_epochs:
                tqdm.write(f"GPT-FL: {arch} pre-trained for {args.server_epochs} epoch(s) on the synthetic "
                           f"set: loss {stats['loss']:.4f}, accuracy {stats['accuracy']:.4f} (last epoch)")
            states[arch] = state_to_payload(model)
        return states

    # ---- federated rounds ---------------------------------------------------------------
    def send_globals(self) -> None:
        self.scatter(self.client_class.load_global, {cid: {"model": self.global_states[self.architectures[cid]]}
                                     for cid in self.all_client_ids})

    def train_round(self, round_idx, client_ids):
        replies = self.train_clients(client_ids)
        with self.timer.phase("aggregation"):
            # Groups nobody of which trained this round keep their global model.
            self.global_states.update(average_per_architecture(
                [self.architectures[reply["client_id"]] for reply in replies], [reply["model"] for reply in replies]))
        with self.timer.phase("communication"):
            self.send_globals()

    def record_evaluation(self, replies):
        """Test accuracy of every architecture's global model over its group's clients."""
        correct, total = {}, {}
        for cid, reply in zip(self.all_client_ids, replies):
            arch = self.architectures[cid]
            correct[arch] = correct.get(arch, 0) + reply["test_correct"]
            total[arch] = total.get(arch, 0) + reply["test_num"]
        return {f"rs_test_acc_{series_key(arch)}": correct[arch] / total[arch] if total[arch] else math.nan
                for arch in correct}
