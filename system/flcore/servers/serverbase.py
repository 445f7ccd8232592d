"""The server every algorithm extends. It owns the round loop; algorithms own a round.

An algorithm sets `client_class`, may set `DEFAULTS` (its flag defaults, which the
user's flags override), and overrides:
- `setup()`: build server-side state and send clients what they need once;
- `train_round(round_idx, client_ids)`: one round of training and aggregation.
Everything else (client sampling, evaluation, metrics, timing, traffic, results,
auto-break) happens here, once.
"""
import math
import os
import time
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from trainmodel.families import build_client_models
from utils.executors import InProcessExecutor
from utils.metrics import aggregate_evaluations
from utils.result_utils import result_name, write_results
from utils.sampling import draw_client_schedule
from utils.seeding import seed_everything, torch_generator, derive_seed
from utils.timing import PhaseTimer


def best_is_stale(accuracies, top_cnt: int) -> bool:
    """HtFLlib's auto-break rule: the best accuracy is more than `top_cnt` evaluations old."""
    return len(accuracies) - 1 - int(np.argmax(accuracies)) > top_cnt


class Server:
    client_class = None
    #: flag defaults for this algorithm: {dest: value}; the user's flags win.
    DEFAULTS: dict = {}

    def __init__(self, args, run_index: int, data):
        self.check_args(args)
        self.args = args
        self.run_index = run_index
        self.seed = args.seed + run_index
        seed_everything(self.seed)
        self.device = torch.device(args.device)
        self.data = data
        self.num_clients = args.num_clients
        self.num_classes = args.num_classes
        self.global_rounds = args.global_rounds
        self.eval_gap = args.eval_gap
        self.name = result_name(args.dataset, args.algorithm, args.goal, run_index)
        self.run_dir = os.path.join(args.out, self.name)
        # Server-side randomness (latent draws, ETF, ...) has its own stream.
        self.rng = torch_generator(derive_seed(self.seed, "server"))
        self.schedule = draw_client_schedule(self.num_clients, args.join_ratio,
                                             args.random_join_ratio, self.global_rounds, self.seed)
        self.timer = PhaseTimer()
        self.series = defaultdict(list)
        self.series["phase_seconds"] = defaultdict(list)
        self.executor = self.make_executor()
        self.setup()

    # ---- construction ---------------------------------------------------------------
    def make_executor(self):
        models = build_client_models(self.args.model_family, self.num_clients, self.num_classes,
                                     self.args.feature_dim, self.data.image_shape[-1], self.seed)
        clients = [self.client_class(self.args, cid, models[cid], self.data.clients[cid], self.seed)
                   for cid in range(self.num_clients)]
        return InProcessExecutor(clients)

    @property
    def all_client_ids(self) -> list[int]:
        return list(range(self.num_clients))

    # ---- hooks ----------------------------------------------------------------------
    @classmethod
    def check_args(cls, args) -> None:
        """Refuse flags this algorithm cannot run with (a one-line UserError); main.py calls
        it before the dataset is loaded."""

    def setup(self) -> None:
        """Server-side state and one-off messages to clients (counted as setup traffic)."""

    def train_round(self, round_idx: int, client_ids: list[int]) -> None:
        raise NotImplementedError

    def evaluation_payload(self):
        """What every client's `evaluate` receives (e.g. a model the server holds)."""
        return None

    def record_evaluation(self, replies: list[dict]) -> dict:
        """Series of this algorithm's own beyond the standard ones, from the evaluation
        replies: {series name: value}. Printed and saved with the standard series."""
        return {}

    # ---- the loop -------------------------------------------------------------------
    def train(self) -> dict:
        setup_traffic = self.executor.take_traffic()
        self.series["setup_bytes_down"] = [setup_traffic.bytes_down]
        self.series["setup_floats_down"] = [setup_traffic.floats_down]
        # disable=None: a bar on a terminal, none in log files of scripted sweeps.
        bar = tqdm(range(self.global_rounds), desc=self.name, unit="round", dynamic_ncols=True, disable=None)
        rounds_done = 0
        for round_idx in bar:
            start = time.perf_counter()
            if round_idx % self.eval_gap == 0:
                with self.timer.phase("evaluation"):
                    self.evaluate(round_idx)
                bar.set_postfix(acc=f"{self.series['rs_test_acc'][-1]:.4f}")
            self.train_round(round_idx, [int(c) for c in self.schedule[round_idx]])
            self.record_round(time.perf_counter() - start)
            rounds_done = round_idx + 1
            if self.args.auto_break and self.reached_plateau():
                tqdm.write(f"auto-break: no improvement for {self.args.top_cnt} evaluations")
                break
        bar.close()
        # The original never evaluates after its last round; the last training counts here.
        self.evaluate(rounds_done)
        self.save_results()
        self.report_best()
        return self.series

    def evaluate(self, rounds_done: int) -> dict:
        """Every client, not only the selected ones, is evaluated (as HtFLlib does)."""
        replies = self.executor.broadcast(self.all_client_ids, "evaluate", self.evaluation_payload(),
                                          count=False)
        summary = aggregate_evaluations(replies)
        extra = self.record_evaluation(replies)
        for name, value in extra.items():
            self.series[name].append(value)
        self.series["eval_rounds"].append(rounds_done)
        self.series["rs_test_acc"].append(summary["test_acc"])
        self.series["rs_test_auc"].append(summary["test_auc"])
        self.series["rs_train_loss"].append(summary["train_loss"])
        self.series["rs_client_mean_acc"].append(summary["client_mean_acc"])
        self.series["rs_client_std_acc"].append(summary["client_std_acc"])
        tqdm.write(f"[{self.name}] after {rounds_done} round(s): test acc {summary['test_acc']:.4f}"
                   f" (client mean {summary['client_mean_acc']:.4f} +- {summary['client_std_acc']:.4f}),"
                   f" auc {summary['test_auc']:.4f}, train loss {summary['train_loss']:.4f}"
                   + "".join(f", {name.removeprefix('rs_')} {value:.4f}" for name, value in extra.items()))
        self.save_results()
        return summary

    def record_round(self, seconds: float) -> None:
        traffic = self.executor.take_traffic()
        self.series["round_seconds"].append(seconds)
        self.series["bytes_up"].append(traffic.bytes_up)
        self.series["bytes_down"].append(traffic.bytes_down)
        self.series["floats_up"].append(traffic.floats_up)
        self.series["floats_down"].append(traffic.floats_down)
        phases = self.timer.reset()
        rounds_so_far = len(self.series["round_seconds"])
        for name in set(phases) | set(self.series["phase_seconds"]):
            column = self.series["phase_seconds"][name]
            column.extend([0.0] * (rounds_so_far - 1 - len(column)))
            column.append(phases.get(name, 0.0))

    def train_clients(self, client_ids: list[int], payload=None, method: str = "train") -> list[dict]:
        """Call `method` (training) on the selected clients. Their reported compute goes to its
        phases; the rest of the call (moving payloads and replies) counts as communication."""
        start = time.perf_counter()
        replies = self.executor.broadcast(client_ids, method, payload)
        compute = self.collect_timings(replies)
        self.timer.add("communication", time.perf_counter() - start - compute)
        return replies

    def collect_timings(self, replies: list[dict]) -> float:
        """Add the compute time clients report to this round's phases; returns their sum."""
        total = 0.0
        for reply in replies:
            for name, seconds in reply.get("timings", {}).items():
                self.timer.add(name, seconds)
                total += seconds
        return total

    def reached_plateau(self) -> bool:
        return best_is_stale(self.series["rs_test_acc"], self.args.top_cnt)

    # ---- results --------------------------------------------------------------------
    def save_results(self) -> None:
        os.makedirs(self.args.out, exist_ok=True)
        config = dict(vars(self.args), run_index=self.run_index, run_seed=self.seed)
        write_results(os.path.join(self.args.out, self.name + ".h5"), self.series, config)

    def report_best(self) -> None:
        acc = self.series["rs_test_acc"]
        best = int(np.argmax(acc))
        rounds = self.series["round_seconds"]
        per_round = float(np.median(rounds)) if rounds else math.nan
        print(f"[{self.name}] best test accuracy {acc[best]:.4f} after "
              f"{self.series['eval_rounds'][best]} round(s); median {per_round:.2f} s/round")
        up, down = self.series["floats_up"], self.series["floats_down"]
        if up:
            print(f"[{self.name}] traffic per round, all clients: {np.mean(up) / 1e6:.4g}M floats up, "
                  f"{np.mean(down) / 1e6:.4g}M floats down (mean of {len(up)} rounds); "
                  f"{self.series['setup_floats_down'][0] / 1e6:.4g}M floats down once at setup")
