#!/usr/bin/env python
"""Rounds per hour and peak memory against the number of clients and the executor.

    python scripts/benchmark_scale.py                                  # 20/50/100/200 clients, in-process and Ray
    python scripts/benchmark_scale.py --clients 20 200 --executors inprocess ray:2 -- -algo Local -gr 4

For every number of clients N it writes MNIST5k split over N clients (Dirichlet 0.1, the
default split) under `--work`/data, then runs `main.py` in a fresh process for every
executor: `inprocess` (clients one after another; `inprocess+offload` parks idle clients
in host memory) or `ray:K` (K Ray actors on a local Ray). Flags after `--` go to main.py
(default: FedKTL on HtFE-cpu, 3 rounds). Printed per run: median seconds per round
(round 0 left out), rounds per hour, the peak host memory of all processes holding
clients (resident set; Ray actors included, Ray's own daemons not) and the peak GPU
memory held by tensors, and the median checkpoint write time.
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")
sys.path.insert(0, SYSTEM_DIR)
sys.path.insert(0, REPO_ROOT)

from utils.result_utils import read_results  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = ""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages * page_size / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} x {cpu}{memory}, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def dataset_for(data_root: str, num_clients: int) -> str:
    name = f"MNIST5k-nc{num_clients}"
    folder = os.path.join(data_root, name)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        from dataset import generate_MNIST5k
        generate_MNIST5k.generate(folder, num_clients=num_clients)
    return name


def executor_flags(executor: str) -> list:
    if executor == "inprocess":
        return []
    if executor == "inprocess+offload":
        return ["--offload"]
    if executor.startswith("ray:") and executor[4:].isdigit():
        return ["--executor", "ray", "--ray_actors", executor[4:]]
    raise SystemExit(f"error: unknown executor {executor!r}: use inprocess, inprocess+offload or ray:K")


def run(num_clients: int, executor: str, flags: list, work: str) -> dict:
    data_root = os.path.join(work, "data")
    name = dataset_for(data_root, num_clients)
    out = os.path.join(work, "runs", f"{num_clients}_{executor.replace(':', '')}")
    command = [sys.executable, os.path.join(SYSTEM_DIR, "main.py"), "-data", name, "--data_root", data_root,
               "-nc", str(num_clients), "--out", out, "--save_generated_every", "0", "--ckpt_every", "1",
               *executor_flags(executor), *flags]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    found = [f for f in os.listdir(out) if f.endswith(".h5")]
    series, _ = read_results(os.path.join(out, found[0]))
    rounds = np.asarray(series["round_seconds"], dtype=float)
    per_round = float(np.median(rounds[1:] if len(rounds) > 1 else rounds))
    checkpoints = series.get("checkpoint_seconds")
    return {"clients": num_clients, "executor": executor, "seconds_per_round": per_round,
            "rounds_per_hour": 3600 / per_round, "peak_host_mib": float(series["peak_host_mib"][-1]),
            "peak_gpu_mib": float(series["peak_gpu_mib"][-1]),
            "checkpoint_seconds": float(np.median(checkpoints)) if checkpoints is not None and len(checkpoints) else 0.0,
            "wall_seconds": time.perf_counter() - start}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 50, 100, 200])
    parser.add_argument("--executors", nargs="+", default=["inprocess", "ray:1", "ray:2"])
    parser.add_argument("--work", default=os.path.join(REPO_ROOT, "results", "benchmark_scale"))
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="main.py flags, after --")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    if "-gr" not in flags:
        flags += ["-gr", "3"]
    for executor in args.executors:
        executor_flags(executor)  # refuse a bad name before any run
    print(f"machine: {machine()}")
    print(f"main.py flags: {' '.join(flags)}")
    header = (f"{'clients':>7}  {'executor':<18}  {'s/round':>8}  {'rounds/hour':>11}  {'peak host MiB':>13}  "
              f"{'peak GPU MiB':>12}  {'ckpt s':>6}")
    print(header)
    for num_clients in args.clients:
        for executor in args.executors:
            row = run(num_clients, executor, flags, args.work)
            print(f"{row['clients']:>7}  {row['executor']:<18}  {row['seconds_per_round']:>8.2f}  "
                  f"{row['rounds_per_hour']:>11.0f}  {row['peak_host_mib']:>13.0f}  {row['peak_gpu_mib']:>12.0f}  "
                  f"{row['checkpoint_seconds']:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
