#!/usr/bin/env python
"""Entry point: flags -> config -> server class -> run `-t` repetitions.

    python system/main.py                       # FedKTL, built-in generator, MNIST5k, 20 clients
    python system/main.py -algo Local -gr 10    # the local-training reference
"""
import json
import os
import sys
import time

SYSTEM_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SYSTEM_DIR)
for path in (SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from cli import apply_algorithm_defaults, parse_args, validate  # noqa: E402
from flcore.registry import get_server_class  # noqa: E402
from utils.checkpoints import CheckpointStore  # noqa: E402
from utils.data_utils import load_federated_dataset  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.result_utils import result_name, summarize_repetitions  # noqa: E402


def choose_device(args) -> None:
    if args.device == "cuda":
        if torch.cuda.is_available():
            args.device = f"cuda:{args.device_id}"
        else:
            print("CUDA is not available: running on CPU")
            args.device = "cpu"


def run(args) -> None:
    server_class = get_server_class(args.algorithm)
    apply_algorithm_defaults(args, server_class)
    validate(args)
    server_class.check_args(args)
    choose_device(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_federated_dataset(args.dataset, args.num_clients, args.num_classes, args.data_root)
    args.num_classes = data.num_classes
    os.makedirs(args.out, exist_ok=True)
    print(f"{args.algorithm} on {args.dataset}: {args.num_clients} clients ({args.model_family}), "
          f"{args.num_classes} classes, {args.global_rounds} rounds, device {args.device}, seed {args.seed}")
    for index in range(args.prev, args.times):
        started = time.time()
        name = result_name(args.dataset, args.algorithm, args.goal, index)
        store = CheckpointStore(os.path.join(args.out, name))
        finished = store.finished() if args.resume else None
        if finished:
            if not args.ckpt_keep_final:
                store.remove_rounds()  # left behind by a kill between the finished mark and their removal
            print(f"{name} already finished after {finished['rounds_done']} round(s): results in "
                  f"{finished['results']}")
            continue
        with open(os.path.join(args.out, name + ".config.json"), "w") as f:
            json.dump(vars(args), f, indent=2, sort_keys=True)
        server = server_class(args, index, data)
        try:
            server.train()
        finally:
            server.close()
        print(f"repetition {index} took {time.time() - started:.1f} s")
    print(summarize_repetitions(args.out, args.dataset, args.algorithm, args.goal, args.times))


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: results up to the last evaluation are in {args.out}; the same command "
              f"with --resume continues from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
