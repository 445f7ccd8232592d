#!/usr/bin/env python
"""Entry point: flags -> config -> server class -> run `-t` repetitions.

    python system/main.py                       # FedKTL, built-in generator, MNIST5k, 20 clients
    python system/main.py -algo Local -gr 10    # the local-training reference

Results go to the repository's results/ (or --out), from whatever folder it is started.
"""
import os
import sys
import time

SYSTEM_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SYSTEM_DIR)
for path in (SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from cli import apply_algorithm_defaults, parse_args, respell, validate  # noqa: E402
from dataset.loader import load_federated_dataset  # noqa: E402
from flcore.registry import get_server_class  # noqa: E402
from utils.checkpoints import FINISHED, CheckpointStore  # noqa: E402
from utils.data_utils import check_training_sizes  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.result_utils import (result_name, results_config, summarize_repetitions, write_json,  # noqa: E402
                                write_results)
from utils.resume import check_finished_run, data_signature, load_resume_state  # noqa: E402
from utils.run_lock import RunLock, held_message, is_held  # noqa: E402


def choose_device(args) -> None:
    if args.device == "cuda":
        if torch.cuda.is_available():
            args.device = f"cuda:{args.device_id}"
        else:
            print("CUDA is not available: running on CPU")
            args.device = "cpu"


def run(args) -> None:
    # Every check that can fail comes before the first file is written.
    server_class = get_server_class(args.algorithm)
    apply_algorithm_defaults(args)
    validate(args)
    server_class.check_args(args)
    for index in range(args.prev, args.times):
        run_dir = os.path.join(args.out, result_name(args.dataset, args.algorithm, args.goal, index))
        if is_held(run_dir):  # told before any work; checked again, for good, when the run takes it
            raise UserError(held_message(run_dir))
    choose_device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_federated_dataset(args.dataset, args.num_clients, args.num_classes, args.data_root)
    args.num_classes = data.num_classes
    for warning in check_training_sizes(data, args.batch_size, args.stored_order):
        print(warning, file=sys.stderr)
    signature = data_signature(data)
    print(f"{args.algorithm} on {args.dataset}: {args.num_clients} clients ({args.model_family}), "
          f"{args.num_classes} classes, {args.global_rounds} rounds, device {args.device}, seed {args.seed}")
    for index in range(args.prev, args.times):
        run_repetition(args, server_class, data, signature, index)
    print(summarize_repetitions(args.out, args.dataset, args.algorithm, args.goal, args.times))


def run_repetition(args, server_class, data, signature: dict, index: int) -> None:
    started = time.time()
    name = result_name(args.dataset, args.algorithm, args.goal, index)
    run_dir = os.path.join(args.out, name)
    store = CheckpointStore(run_dir, keep=args.ckpt_keep)
    state, damaged = None, []
    if args.resume:
        finished = store.finished()
        if finished:
            check_finished_run(finished, args, signature, store.folder)
            with RunLock(run_dir):
                report_finished(args, store, finished, name, index)
            return
        state, damaged = load_resume_state(store, args, signature)
        if state is None:
            print(f"[{name}] no checkpoint in {store.folder}: starting from round 0")
    server = server_class(args, index, data)
    server.data_signature_cache = signature
    try:
        with RunLock(run_dir):
            server.set_aside_damaged(damaged)
            server.begin(state)
            write_json(os.path.join(args.out, name + ".config.json"), vars(args))
            server.train()
    finally:
        server.close()
    print(f"repetition {index} took {time.time() - started:.1f} s")


def report_finished(args, store: CheckpointStore, finished: dict, name: str, index: int) -> None:
    """`--resume` of a finished run: say where its results are, rebuilding a deleted h5 from
    the series the finished mark keeps."""
    if not args.ckpt_keep_final:
        store.remove_rounds()  # left behind by a kill between the finished mark and their removal
    results = os.path.join(args.out, name + ".h5")
    if not os.path.exists(results):
        if "series" not in finished:
            raise UserError(f"{results} is missing and {store.folder} holds no copy of its series (written by an "
                            f"older version): drop --resume to run it again")
        variant = get_server_class(args.algorithm).variant(args)
        write_results(results, finished["series"], results_config(args, index, variant))
        print(f"[{name}] {results} was missing: rebuilt from {os.path.join(store.folder, FINISHED)}")
    print(f"{name} already finished after {finished['rounds_done']} round(s): results in {results}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as error:
        print(f"error: {respell(str(error))}", file=sys.stderr)  # flags named as the user typed them
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: results up to the last evaluation are in {args.out}; the same command "
              f"with --resume continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
