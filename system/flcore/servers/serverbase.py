"""The server every algorithm extends. It owns the round loop; algorithms own a round.

An algorithm's spec (`flcore/algorithms/`) names its server class and declares its
options; the server sets `client_class` and overrides:
- `setup()`: build server-side state and send clients what they need once;
- `train_round(round_idx, client_ids)`: one round of training and aggregation.
Everything else (client sampling, evaluation, metrics, timing, traffic, results,
auto-break) happens here, once.
"""
import os
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from flcore.clients.factory import ClientFactory
from flcore.clients.interface import check_call
from flcore.servers import checkpointing
from trainmodel.families import resolve_family
from trainmodel.models import VIT_MODELS
from utils.checkpoints import CheckpointSchedule, CheckpointStore
from utils.errors import UserError
from utils.executors import InProcessExecutor, build_clients
from utils.metrics import aggregate_evaluations
from utils.progress import RunProgress
from utils.files import atomic_write
from utils.recording import new_series, plain_series, record_evaluation, record_round
from utils.reporting import evaluation_line, summary_lines
from utils.result_utils import result_name, results_config, write_results
from utils.resume import data_signature, load_resume_state
from utils.sampling import ClientSchedule
from utils.seeding import derive_seed, seed_everything, torch_generator
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
                                   "data_signature_cache", "progress", "tensorboard"})
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
        self.series = new_series()
        self.checkpoints = CheckpointStore(self.run_dir, keep=getattr(args, "ckpt_keep", 1))
        self.current_round = 0
        self.skipped_in_round = 0
        self.rounds_without_updates = 0  # rounds in a row in which every selected client was skipped
        self.start_state = None  # set by begin(): rounds done when the loop starts
        self.data_signature_cache = None
        self.progress = None  # the terminal's bar, while train() runs
        self.tensorboard = None  # the --tensorboard log, while train() runs
        self.executor = self.make_executor()
        self.setup()

    # ---- construction ---------------------------------------------------------------
    def make_executor(self):
        """The executor `--executor` names, holding every client of the run, each built by a
        `ClientFactory` (which pickles, so Ray actors build their clients the same way)."""
        build_client = ClientFactory(self.client_class, self.seed)
        if getattr(self.args, "executor", "inprocess") == "ray":
            from utils.ray_executor import RayExecutor  # here: Ray is an optional dependency
            return RayExecutor(self.args, build_client, self.data, self.seed)
        clients = build_clients(self.args, build_client, self.data, range(self.args.num_clients))
        return InProcessExecutor(clients, offload=getattr(self.args, "offload", False))

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

    @classmethod
    def variant(cls, args) -> dict:
        """What sets a run apart from other runs of its algorithm (e.g. FedKTL's generator),
        as labels the results file records and the report adds to the row's name."""
        return {}

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
        self.progress = RunProgress(self.name, self.global_rounds, rounds_done)
        if self.progress.shown:
            self.executor.progress = self.progress.clients_done
        if self.series["rs_test_acc"]:
            self.progress.evaluated(self.series["eval_rounds"][-1], self.series["rs_test_acc"][-1])
        self.open_tensorboard(rounds_done)
        try:
            return self.run_rounds(rounds_done)
        finally:
            self.progress.close()
            self.executor.progress = None
            if self.tensorboard is not None:
                self.tensorboard.close()

    def run_rounds(self, rounds_done: int) -> dict:
        last_checkpoint = rounds_done
        original_rule = self.args.auto_break and getattr(self.args, "original_auto_break", False)
        stopped_after_training = False
        while rounds_done < self.global_rounds:
            if self.args.auto_break and not original_rule and self.reached_plateau():
                tqdm.write(f"auto-break: no improvement for {self.args.top_cnt} evaluations")
                break
            self.run_round(rounds_done)
            rounds_done += 1
            self.progress.round_done()
            if original_rule and original_break(self.series["rs_test_acc"], self.args.top_cnt):
                tqdm.write(f"auto-break (original rule): the best accuracy is {self.args.top_cnt} evaluations old")
                stopped_after_training = True
                break
            if self.checkpoint_schedule.due(rounds_done):
                self.save_checkpoint(rounds_done)
                last_checkpoint = rounds_done
        self.progress.close()  # before the final evaluation and the summary, printed below it
        self.executor.progress = None
        keep_final = getattr(self.args, "ckpt_keep_final", False)
        if keep_final and last_checkpoint != rounds_done:
            self.save_checkpoint(rounds_done)
        # The original never evaluates after its last round; the last training counts here,
        # except when the original auto-break rule stopped the run (as the original does).
        if not stopped_after_training:
            self.evaluate(rounds_done)
        self.save_results()
        checkpointing.mark_finished(self, rounds_done, keep_final)
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
        replies = self.broadcast(self.all_client_ids, self.client_class.evaluate, self.evaluation_payload(),
                                 count=False)
        summary = aggregate_evaluations(replies)
        extra = self.record_evaluation(replies)
        record_evaluation(self.series, rounds_done, summary, extra)
        tqdm.write(evaluation_line(self.name, rounds_done, summary, extra))
        if self.progress is not None:
            self.progress.evaluated(rounds_done, summary["test_acc"])
        if self.tensorboard is not None:
            self.tensorboard.evaluation(rounds_done, summary, extra)
        self.save_results()
        return summary

    def record_round(self, seconds: float) -> None:
        record_round(self.series, seconds, self.executor.take_traffic(), self.skipped_in_round,
                     self.executor.memory(), self.timer.reset())
        self.skipped_in_round = 0
        if self.tensorboard is not None:
            self.tensorboard.round(len(self.series["round_seconds"]), self.series)

    def open_tensorboard(self, rounds_done: int) -> None:
        """`--tensorboard`: a log under <out>/tensorboard/<run name>; on resume, what an interrupted
        run logged after its checkpoint is dropped (TensorBoard's purge step)."""
        if getattr(self.args, "tensorboard", False):
            from utils.tensorboard_log import TensorBoardLog  # an optional dependency: only when asked for
            self.tensorboard = TensorBoardLog(os.path.join(self.args.out, "tensorboard", self.name), rounds_done)

    def broadcast(self, client_ids, method, payload=None, count: bool = True, guarded: bool = False) -> list:
        """Call `method` (a server call the client class declares, e.g. `self.client_class.load_head`)
        with one payload on `client_ids` through the executor; replies in the order of `client_ids`.
        A method or payload that does not fit the declaration fails here (see `Executor.broadcast`
        for `count` and `guarded`)."""
        name = check_call(self.client_class, method, payload)
        return self.executor.broadcast(client_ids, name, payload, count=count, guarded=guarded)

    def scatter(self, method, payloads: dict, count: bool = True) -> list:
        """Call `method` on each client in `payloads` with its own payload; replies in id order."""
        names = {check_call(self.client_class, method, payload) for payload in payloads.values()}
        return self.executor.scatter(names.pop() if names else method, payloads, count=count)

    def train_clients(self, client_ids: list[int], payload=None, method=None) -> list[dict]:
        """Call `method` (training; default `train`) on the selected clients and return the replies of those whose
        losses and uploads were finite, each with its "client_id". A client with a NaN or an
        infinity is put back as it was before the call and left out of the round, with a
        warning; when none is left, `NoClientUpdates` ends the round.

        The clients' reported compute goes to its phases; the rest of the call (moving
        payloads and replies) counts as communication."""
        start = time.perf_counter()
        replies = self.broadcast(client_ids, method or self.client_class.train, payload, guarded=True)
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
        return plain_series(self.series)

    def save_checkpoint(self, rounds_done: int) -> None:
        checkpointing.save_checkpoint(self, rounds_done)

    def start_afresh(self) -> int:
        return checkpointing.start_afresh(self)

    def set_aside_damaged(self, damaged: list) -> None:
        checkpointing.set_aside_damaged(self, damaged)

    def resume(self, state: dict) -> int:
        return checkpointing.resume(self, state)

    # ---- results --------------------------------------------------------------------
    @property
    def results_path(self) -> str:
        return os.path.join(self.args.out, self.name + ".h5")

    def save_results(self) -> None:
        write_results(self.results_path, self.series,
                      results_config(self.args, self.run_index, self.variant(self.args)))

    def save_image_grid(self, images: torch.Tensor, filename: str, nrow: int, labels=None) -> None:
        """Client-space images ([-1, 1]) as one PNG grid in the run's folder, `nrow` to a row,
        small ones enlarged, with `labels[i]` (e.g. the class name, from
        `self.data.label_names`) written under image i (see `utils.image_grid`); a failed
        write (a full disk) is a one-line error, like every other file the run writes."""
        from utils.image_grid import labelled_grid, write_png  # only runs that save images pay for it

        grid = labelled_grid(images, nrow, labels)
        atomic_write(os.path.join(self.run_dir, filename), lambda f: write_png(grid, f))
        if self.tensorboard is not None:
            # one TensorBoard image series per kind of grid, e.g. "generated_round", stepped by round
            tag = "images/" + os.path.splitext(filename)[0].rstrip("0123456789").rstrip("_")
            self.tensorboard.image(tag, np.asarray(grid.convert("RGB")), self.current_round)

    def report_best(self) -> None:
        for line in summary_lines(self.name, self.series):
            print(line)
