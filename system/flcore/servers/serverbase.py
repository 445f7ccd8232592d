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

from trainmodel.families import resolve_family
from trainmodel.models import VIT_MODELS
from utils.checkpoints import CheckpointSchedule, CheckpointStore
from utils.errors import UserError
from utils.executors import make_executor
from utils.metrics import aggregate_evaluations
from utils.files import atomic_write
from utils.result_utils import result_name, results_config, write_results
from utils.resume import comparable_config, data_signature, load_resume_state
from utils.sampling import ClientSchedule
from utils.seeding import derive_seed, global_rng_states, seed_everything, set_global_rng_states, torch_generator
from utils.state import capture_state, first_non_finite_state, restore_state
from utils.timing import PhaseTimer

#: rounds in a row in which every selected client's update was non-finite before a run is
#: declared diverged (one such round can be a fluke the restored clients recover from)
DIVERGED_AFTER_ROUNDS = 3


class NoClientUpdates(Exception):
    """Every client selected for the round was skipped: the server keeps its state."""


def best_is_stale(accuracies, top_cnt: int) -> bool:
    """This library's auto-break rule, checked before a round: the best accuracy is more than
    `top_cnt` evaluations old."""
    return len(accuracies) - 1 - int(np.argmax(accuracies)) > top_cnt


def original_break(accuracies, top_cnt: int) -> bool:
    """The original code's rule, checked after a round's training with the evaluations so far
    (the last one made before that training): `len - argmax > top_cnt`, i.e. the best is
    `top_cnt` evaluations old. Ties go to the first maximum (the original's float32 topk
    leaves them to the implementation)."""
    return len(accuracies) - int(np.argmax(accuracies)) > top_cnt


class Server:
    client_class = None
    #: attributes that never change after construction and setup (or are saved apart):
    #: left out of checkpoints. Subclasses add theirs (e.g. a pre-trained generator).
    CHECKPOINT_STATIC = frozenset({"args", "data", "device", "executor", "timer", "schedule", "series",
                                   "checkpoints", "checkpoint_schedule", "run_index", "seed", "num_clients", "num_classes",
                                   "global_rounds", "eval_gap", "name", "run_dir", "start_state",
                                   "data_signature_cache"})
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
        self.schedule = ClientSchedule(self.num_clients, args.join_ratio, args.random_join_ratio, self.seed)
        self.timer = PhaseTimer()
        self.series = defaultdict(list)
        self.series["phase_seconds"] = defaultdict(list)
        self.checkpoints = CheckpointStore(self.run_dir, keep=getattr(args, "ckpt_keep", 1))
        self.current_round = 0
        self.skipped_in_round = 0
        self.rounds_without_updates = 0  # rounds in a row in which every selected client was skipped
        self.start_state = None  # set by begin(): rounds done when the loop starts
        self.data_signature_cache = None
        self.executor = self.make_executor()
        self.setup()

    # ---- construction ---------------------------------------------------------------
    def make_executor(self):
        return make_executor(self.args, self.client_class, self.data, self.seed)

    def close(self) -> None:
        """Release the clients (and the executor's worker processes, if any)."""
        self.executor.close()

    @property
    def all_client_ids(self) -> list[int]:
        return list(range(self.num_clients))

    # ---- hooks ----------------------------------------------------------------------
    #: whether clients' heads are averaged or trained as one (then all heads need one shape)
    SHARES_HEADS = False

    @classmethod
    def check_args(cls, args) -> None:
        """Refuse flags this algorithm cannot run with (a one-line UserError); main.py calls
        it before the dataset is loaded. Subclasses extend it (calling this one)."""
        if cls.SHARES_HEADS and getattr(args, "vit_mlp_head", False) and any(
                name in VIT_MODELS for name in resolve_family(args.model_family)):
            raise UserError(f"{args.algorithm} shares one head among clients, and --vit_mlp_head gives the ViTs "
                            f"of -m {args.model_family} another head shape: pass --vit_mlp_head false")

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
    @property
    def data_signature(self) -> dict:
        if self.data_signature_cache is None:
            self.data_signature_cache = data_signature(self.data)
        return self.data_signature_cache

    def begin(self, state=None) -> int:
        """Continue from `state` (a checkpoint `utils.resume.load_resume_state` accepted) or, when
        None, start afresh; returns the rounds already done. `train` calls it unless the caller
        (main.py, which checks everything before writing a file) already did."""
        setup_traffic = self.executor.take_traffic()
        self.series["setup_bytes_down"] = [setup_traffic.bytes_down]
        self.series["setup_floats_down"] = [setup_traffic.floats_down]
        self.start_state = self.resume(state) if state is not None else self.start_afresh()
        return self.start_state

    def train(self) -> dict:
        if self.start_state is None:
            state = None
            if getattr(self.args, "resume", False):
                state, damaged = load_resume_state(self.checkpoints, self.args, self.data_signature)
                self.set_aside_damaged(damaged)
            self.begin(state)
        rounds_done = self.start_state
        self.checkpoint_schedule = CheckpointSchedule(getattr(self.args, "ckpt_every", None),
                                                      getattr(self.args, "ckpt_minutes", 5.0))
        last_checkpoint = rounds_done
        # disable=None: a bar on a terminal, none in log files of scripted sweeps.
        bar = tqdm(total=self.global_rounds, initial=rounds_done, desc=self.name, unit="round",
                   dynamic_ncols=True, disable=None)
        original_rule = self.args.auto_break and getattr(self.args, "original_auto_break", False)
        stopped_after_training = False
        while rounds_done < self.global_rounds:
            if self.args.auto_break and not original_rule and self.reached_plateau():
                tqdm.write(f"auto-break: no improvement for {self.args.top_cnt} evaluations")
                break
            self.run_round(rounds_done)
            rounds_done += 1
            bar.update(1)
            if self.series["rs_test_acc"]:
                bar.set_postfix(acc=f"{self.series['rs_test_acc'][-1]:.4f}")
            if original_rule and original_break(self.series["rs_test_acc"], self.args.top_cnt):
                tqdm.write(f"auto-break (original rule): the best accuracy is {self.args.top_cnt} evaluations old")
                stopped_after_training = True
                break
            if self.checkpoint_schedule.due(rounds_done):
                self.save_checkpoint(rounds_done)
                last_checkpoint = rounds_done
        bar.close()
        keep_final = getattr(self.args, "ckpt_keep_final", False)
        if keep_final and last_checkpoint != rounds_done:
            self.save_checkpoint(rounds_done)
        # The original never evaluates after its last round; the last training counts here,
        # except when the original auto-break rule stopped the run (as the original does).
        if not stopped_after_training:
            self.evaluate(rounds_done)
        self.save_results()
        # The series and flags let `--resume` refuse other flags and rebuild a deleted h5;
        # the results file is named relative to --out, so a copied folder stays whole.
        self.checkpoints.mark_finished({"rounds_done": rounds_done, "results": self.name + ".h5",
                                        "best_test_acc": float(np.max(self.series["rs_test_acc"])),
                                        "config": comparable_config(self.args), "data": self.data_signature,
                                        "series": self.plain_series()})
        # A finished run needs no checkpoint to resume (finished.json says it is done); keeping
        # HtFE8-sized ones for every run of a sweep would fill the disk.
        self.checkpoints.remove_rounds(keep_newest=self.checkpoints.keep if keep_final else 0)
        self.report_best()
        return self.series

    def run_round(self, round_idx: int) -> None:
        start = time.perf_counter()
        self.current_round = round_idx
        if round_idx % self.eval_gap == 0:
            with self.timer.phase("evaluation"):
                self.evaluate(round_idx)
        try:
            self.train_round(round_idx, [int(c) for c in self.schedule[round_idx]])
            self.rounds_without_updates = 0
        except NoClientUpdates:
            self.rounds_without_updates += 1
            tqdm.write(f"[{self.name}] round {round_idx}: every selected client was skipped; "
                       f"the server keeps its state")
        self.record_round(time.perf_counter() - start)
        self.check_diverged(round_idx)

    def check_diverged(self, round_idx: int) -> None:
        """End the run, saying why, when the server's own state became non-finite or every
        client's update has been non-finite for DIVERGED_AFTER_ROUNDS rounds: what it would
        go on to report is a diverged or untrained model."""
        where = first_non_finite_state(self, self.CHECKPOINT_STATIC)
        if where is not None:
            self.stop_diverged(round_idx, f"the server's {where} is not finite after round {round_idx}",
                               "-slr", "server_learning_rate")
        if self.rounds_without_updates >= DIVERGED_AFTER_ROUNDS:
            self.stop_diverged(round_idx, f"every selected client's update was non-finite in the last "
                                          f"{self.rounds_without_updates} rounds", "-lr", "local_learning_rate")

    def stop_diverged(self, round_idx: int, what: str, flag: str, dest: str) -> None:
        self.series["diverged_after_round"] = [round_idx + 1]
        self.save_results()
        value = getattr(self.args, dest, None)
        raise UserError(f"training diverged: {what}; lower {flag} (now {value}) or the other step sizes; the "
                        f"evaluations before it are in {self.results_path}, marked diverged_after_round")

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
        self.series["skipped_clients"].append(self.skipped_in_round)
        memory = self.executor.memory()
        self.series["peak_host_mib"].append(memory["host_mib"])
        self.series["peak_gpu_mib"].append(memory["gpu_mib"])
        self.skipped_in_round = 0
        phases = self.timer.reset()
        rounds_so_far = len(self.series["round_seconds"])
        for name in set(phases) | set(self.series["phase_seconds"]):
            column = self.series["phase_seconds"][name]
            column.extend([0.0] * (rounds_so_far - 1 - len(column)))
            column.append(phases.get(name, 0.0))

    def train_clients(self, client_ids: list[int], payload=None, method: str = "train") -> list[dict]:
        """Call `method` (training) on the selected clients and return the replies of those whose
        losses and uploads were finite, each with its "client_id". A client with a NaN or an
        infinity is put back as it was before the call and left out of the round, with a
        warning; when none is left, `NoClientUpdates` ends the round.

        The clients' reported compute goes to its phases; the rest of the call (moving
        payloads and replies) counts as communication."""
        start = time.perf_counter()
        replies = self.executor.broadcast(client_ids, method, payload, guarded=True)
        compute = self.collect_timings(replies)
        self.timer.add("communication", time.perf_counter() - start - compute)
        kept = []
        for cid, reply in zip(client_ids, replies):
            if "skipped" in reply:
                self.skipped_in_round += 1
                tqdm.write(f"[{self.name}] warning: round {self.current_round}: client {cid} skipped, "
                           f"its {reply['skipped']}")
            else:
                reply["client_id"] = cid
                kept.append(reply)
        if not kept:
            raise NoClientUpdates
        return kept

    def collect_timings(self, replies: list[dict]) -> float:
        """Add the compute time clients report to this round's phases; returns their sum."""
        total = 0.0
        for reply in replies:
            for name, seconds in reply.get("timings", {}).items():
                self.timer.add(name, seconds)
                total += seconds
        return total

    def reached_plateau(self) -> bool:
        accuracies = self.series["rs_test_acc"]
        return bool(accuracies) and best_is_stale(accuracies, self.args.top_cnt)

    # ---- checkpoints ----------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """This server's changing state (the clients' is gathered through the executor)."""
        return capture_state(self, self.CHECKPOINT_STATIC)

    def restore_checkpoint_state(self, state: dict) -> None:
        restore_state(self, state, self.device, self.CHECKPOINT_STATIC)

    def plain_series(self) -> dict:
        return {name: dict(values) if isinstance(values, dict) else list(values)
                for name, values in self.series.items()}

    def save_checkpoint(self, rounds_done: int) -> None:
        start = time.perf_counter()
        client_states = self.executor.broadcast(self.all_client_ids, "checkpoint_state", count=False)
        self.checkpoints.save(rounds_done, {
            "config": comparable_config(self.args),
            "data": self.data_signature,
            "server": self.checkpoint_state(),
            "clients": dict(zip(self.all_client_ids, client_states)),
            "series": self.plain_series(),
            "rng": global_rng_states(),
        })
        seconds = time.perf_counter() - start
        self.series["checkpoint_seconds"].append(seconds)
        self.checkpoint_schedule.written(seconds)

    def start_afresh(self) -> int:
        moved = self.checkpoints.replace_with_fresh()
        if moved:
            tqdm.write(f"[{self.name}] the checkpoints of an earlier run are moved to {moved} "
                       f"(pass --resume to continue that run instead)")
        return 0

    def set_aside_damaged(self, damaged: list) -> None:
        """Move checkpoints newer than the one resumed from, which did not load, out of the way."""
        if damaged:
            where = self.checkpoints.set_aside_unreadable([rounds for rounds, _ in damaged])
            for rounds, reason in damaged:
                tqdm.write(f"checkpoint after round {rounds} cannot be read ({reason}): moved to {where}")
        self.checkpoints.remove_leftovers()

    def resume(self, state: dict) -> int:
        """Put the run back as `state` (an accepted checkpoint) left it; returns its rounds done."""
        try:
            self.executor.scatter("restore_checkpoint_state", state["clients"], count=False)
            self.restore_checkpoint_state(state["server"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise UserError(f"the checkpoint in {self.checkpoints.folder} does not fit this run ({reason}): "
                            f"resume with the flags, data and library version that wrote it, or drop --resume "
                            f"to start afresh") from None
        self.series = defaultdict(list, {name: defaultdict(list, values) if isinstance(values, dict) else values
                                         for name, values in state["series"].items()})
        set_global_rng_states(state["rng"])
        rounds_done = state["rounds_done"]
        tqdm.write(f"[{self.name}] resuming after round {rounds_done} of {self.global_rounds} from "
                   f"{self.checkpoints.path(rounds_done)}")
        return rounds_done

    # ---- results --------------------------------------------------------------------
    @property
    def results_path(self) -> str:
        return os.path.join(self.args.out, self.name + ".h5")

    def save_results(self) -> None:
        write_results(self.results_path, self.series, results_config(self.args, self.run_index))

    def save_image_grid(self, images: torch.Tensor, filename: str, nrow: int) -> None:
        """Client-space images ([-1, 1]) as one PNG grid in the run's folder; a failed write
        (a full disk) is a one-line error, like every other file the run writes."""
        from torchvision.utils import save_image  # only runs that save images pay for it

        atomic_write(os.path.join(self.run_dir, filename),
                     lambda f: save_image((images.detach().cpu().float() + 1) / 2, f, format="png",
                                          nrow=nrow, padding=1))

    def report_best(self) -> None:
        acc = self.series["rs_test_acc"]
        best = int(np.argmax(acc))
        rounds = self.series["round_seconds"]
        per_round = float(np.median(rounds)) if rounds else math.nan
        print(f"[{self.name}] best test accuracy {acc[best]:.4f} after "
              f"{self.series['eval_rounds'][best]} round(s); median {per_round:.2f} s/round")
        up, down = self.series["floats_up"], self.series["floats_down"]
        skipped = self.series["skipped_clients"]
        if any(skipped):
            rounds_hit = [r for r, count in enumerate(skipped) if count]
            print(f"[{self.name}] note: {int(sum(skipped))} client update(s) in {len(rounds_hit)} round(s) were "
                  f"non-finite and left out (first in round {rounds_hit[0]}); those clients kept their "
                  f"weights from before")
        if up:
            print(f"[{self.name}] traffic per round, all clients: {np.mean(up) / 1e6:.4g}M floats up, "
                  f"{np.mean(down) / 1e6:.4g}M floats down (mean of {len(up)} rounds); "
                  f"{self.series['setup_floats_down'][0] / 1e6:.4g}M floats down once at setup")
