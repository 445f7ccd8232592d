#!/usr/bin/env python
"""What FedKTL's transfer term does to the clients' feature extractors, round by round.

    python scripts/transfer_gradients.py                     # FedKTL, built-in generator, 4 rounds
    python scripts/transfer_gradients.py --generator faces -gr 4 --every 2

Runs FedKTL in process with any main.py flags and, on every `--every`-th training step of
every client that holds generated pairs, measures the two terms of the client's loss on the
same batch: the ArcFace classification loss and the transfer term mu * MSE(proj(base(x_G)),
v_G), the norms of their gradients with respect to the backbone (`model.base`) and the
cosine between those gradients. Printed per round: means over the measured steps. A cosine
near 0 means the transfer term moves the backbone in a direction unrelated to
classification; a positive one, that it helps it; a negative one, that the two compete.
Nothing is changed in training: the measurement is taken before each step, on copies of
the gradients.
"""
import argparse
import os
import sys
import tempfile
from collections import defaultdict

import torch

SYSTEM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "system")
if SYSTEM_DIR not in sys.path:
    sys.path.insert(0, SYSTEM_DIR)

import main  # noqa: E402
from flcore.clients.clientktl import ARCFACE_MARGIN, ARCFACE_SCALE, clientKTL  # noqa: E402
from flcore.losses import arcface_logits  # noqa: E402
from flcore.servers.serverktl import FedKTL  # noqa: E402

MEASURED = defaultdict(lambda: defaultdict(list))  # round -> quantity -> values
STATE = {"round": 0, "every": 1, "step": 0}


def flat_gradient(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=False, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


class MeasuredClient(clientKTL):
    def train_step(self, x, y):
        STATE["step"] += 1
        if self.generated is not None and STATE["step"] % STATE["every"] == 0:
            self.measure(x, y)
        return super().train_step(x, y)

    def measure(self, x, y):
        params = [p for p in self.model.base.parameters() if p.requires_grad]
        images, latents = self.generated
        index = torch.randperm(len(images), generator=torch.Generator().manual_seed(STATE["step"]))[:self.batch_size]
        classification = self.ce_loss(arcface_logits(self.scores(x), y, ARCFACE_MARGIN, ARCFACE_SCALE), y)
        g_cls = flat_gradient(classification, params)
        transfer = self.mu * self.mse(self.proj(self.model.base(images[index])), latents[index])
        g_tr = flat_gradient(transfer, params)
        row = MEASURED[STATE["round"]]
        row["classification loss"].append(float(classification.detach()))
        row["transfer term"].append(float(transfer.detach()))
        row["|grad| classification"].append(float(g_cls.norm()))
        row["|grad| transfer"].append(float(g_tr.norm()))
        row["cosine"].append(float(torch.nn.functional.cosine_similarity(g_cls, g_tr, dim=0)))


class MeasuredFedKTL(FedKTL):
    client_class = MeasuredClient

    def train_round(self, round_idx, client_ids):
        STATE["round"] = round_idx
        return super().train_round(round_idx, client_ids)


def main_cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=4, help="measure every this many training steps (4)")
    known, flags = parser.parse_known_args(argv)
    if known.every < 1:
        print("error: --every must be at least 1", file=sys.stderr)
        return 2
    STATE["every"] = known.every
    if "-gr" not in flags:
        flags += ["-gr", "4"]
    if "-algo" in flags and flags[flags.index("-algo") + 1] != "FedKTL":
        print("error: this script measures FedKTL: drop -algo", file=sys.stderr)
        return 2
    original = main.get_server_class
    main.get_server_class = lambda name: MeasuredFedKTL if name == "FedKTL" else original(name)
    with tempfile.TemporaryDirectory() as out:
        status = main.main(["-algo", "FedKTL", "--out", out, "--save_generated_every", "0", "-t", "1", *flags])
    if status != 0:
        return status
    names = ["classification loss", "transfer term", "|grad| classification", "|grad| transfer", "cosine"]
    print("\nround | steps | " + " | ".join(names))
    for round_idx in sorted(MEASURED):
        row = MEASURED[round_idx]
        values = torch.tensor([row[name] for name in names])
        means, stds = values.mean(dim=1), values.std(dim=1)
        cells = [f"{m:.3f} ± {s:.3f}" if name == "cosine" else f"{m:.2f}" for name, m, s in zip(names, means, stds)]
        print(f"{round_idx} | {len(row['cosine'])} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
