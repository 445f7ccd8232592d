#!/usr/bin/env bash
# Benchmark runs. Each line is a plain main.py call: copy, change flags, sweep.
# Results land in results/ as <dataset>_<algorithm>_<goal>_<repetition>.h5.
set -euo pipefail
cd "$(dirname "$0")"

# --- CPU suite: MNIST5k (generated on first use), 20 clients, Dirichlet 0.1, HtFE-cpu ---
python system/main.py -data MNIST5k -m HtFE-cpu -nc 20 -gr 50 -t 3 --seed 0 -algo Local
python system/main.py -data MNIST5k -m HtFE-cpu -nc 20 -gr 50 -t 3 --seed 0 -algo FedKTL

# --- Seconds per round by phase, FedKTL against Local ---
python system/benchmark_round.py -gr 10 --seed 0
