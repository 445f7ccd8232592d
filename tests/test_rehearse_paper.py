"""rehearse_paper.py's pure parts: clone checks, run_me.sh parsing, h5 growth, the disk estimate."""
import os

import numpy as np
import pytest

from scripts import rehearse_paper as rp

SUITE = {"algorithms": ["FedProto", "FedKTL-stylegan-xl"], "settings": [("Cifar100-dir", 100), ("Flowers102-pat", 102)],
         "repetitions": 3, "auto_break": True, "max_rounds": 2000, "common_flags": []}
MEASURED = {"h5_fixed_bytes": 10_000, "h5_bytes_per_round": 160, "config_bytes": 2_000, "finished_bytes": 100,
            "png_bytes_per_pixel": 2.0, "checkpoint_bytes": 1_000_000, "dataset_bytes_per_value": 4.0,
            "generator_bytes": {"FedKTL-stylegan-xl": 5_000}}


def rows_by_start(rows):
    return {row["item"].split(",")[0].split(":")[0]: row for row in rows}


def test_disk_estimate_arithmetic():
    rows = rows_by_start(rp.estimate_paper_disk(SUITE, MEASURED, grids=12))
    runs = 2 * 2 * 3
    assert rows["results h5"]["bytes"] == runs * (10_000 + 160 * 2000)
    assert rows["config json"]["bytes"] == runs * 2_000
    assert rows["checkpoints/finished.json"]["bytes"] == runs * 100
    # one FedKTL algorithm: 3 repetitions x 12 grids x (100 x 32^2 + 102 x 64^2 pixels) x 2 B
    assert rows["image grids"]["bytes"] == pytest.approx(3 * 12 * 2.0 * (100 * 32 ** 2 + 102 * 64 ** 2))
    assert rows["datasets"]["bytes"] == pytest.approx(4.0 * 3 * (60000 * 32 ** 2 + 8189 * 64 ** 2))
    assert rows["generator weights"]["bytes"] == 5_000
    assert rows["while running"]["bytes"] == 2 * 1_000_000
    assert rows["with --ckpt_keep_final (not the default)"]["optional"]
    totals = rp.disk_totals(list(rows.values()))
    kept = sum(rows[k]["bytes"] for k in ("results h5", "config json", "checkpoints/finished.json", "image grids",
                                          "datasets", "generator weights"))
    assert totals == {"after_the_suite": kept, "peak_while_running": kept + 2 * 1_000_000}


def test_image_grids_follow_the_default_schedule():
    assert rp.image_grids_per_run(2000) == 12  # 0, 1, 2, 5, ..., 1000 and the last
    assert rp.image_grids_per_run(2) == 2


def test_h5_layout_counts_per_round_series_and_the_fixed_rest():
    series = {"round_seconds": np.zeros(2), "rs_test_acc": np.zeros(3), "setup_bytes_down": np.zeros(1),
              "phase_seconds": {"generation": np.zeros(2), "alignment": np.zeros(2)}}
    layout = rp.h5_layout(series, rounds=2, file_bytes=1_000)
    assert layout["growing_series"] == 4 and layout["bytes_per_round"] == 32
    assert layout["fixed_bytes"] == 1_000 - 8 * (2 + 3 + 1 + 2 + 2)


def test_reads_run_me_paper_suite():
    suite = rp.read_paper_suite()
    assert len(suite["algorithms"]) * len(suite["settings"]) * suite["repetitions"] == 240
    assert suite["auto_break"] and suite["max_rounds"] == 2000
    flags = rp.paper_flags(suite, rounds=2, threads=2)
    assert "-t" not in flags and "--out" not in flags
    assert flags[flags.index("-m") + 1] == "HtFE8" and flags[flags.index("-gr") + 1] == "2"


def test_missing_or_incomplete_clone_is_a_one_line_error(tmp_path, capsys):
    assert rp.main_cli(["--variants", "FedKTL-stylegan-3", "--nvlabs", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --nvlabs") and "is not a folder" in err and "\n" not in err
    (tmp_path / "dnnlib").mkdir()
    (tmp_path / "dnnlib" / "__init__.py").write_text("")
    assert rp.main_cli(["--variants", "FedKTL-stylegan-xl", "--stylegan_xl", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks" in err and "in_embeddings/tf_efficientnet_lite0.pkl" in err and "\n" not in err
    assert rp.main_cli(["--variants", "FedKTL-stylegan-3"]) == 2
    assert "--nvlabs is required" in capsys.readouterr().err


def test_unknown_variant_is_an_error(capsys):
    assert rp.main_cli(["--variants", "FedAvg"]) == 2
    assert "unknown --variants FedAvg" in capsys.readouterr().err


def test_bytes_by_kind():
    files = [("a.h5", 10), ("a.config.json", 2), (os.path.join("a", "generated_round_0000.png"), 5),
             (os.path.join("a", "checkpoints", "round_000002.pt"), 100),
             (os.path.join("a", "checkpoints", "finished.json"), 1)]
    kinds = rp.bytes_by_kind(files)
    assert kinds["checkpoint"] == {"files": 1, "bytes": 100} and kinds["other"]["bytes"] == 1
    assert kinds["png"]["bytes"] == 5 and kinds["results_h5"]["bytes"] == 10


def run_me_main_lines(suite: str, tmp_path) -> list:
    """The main.py argument lists `bash run_me.sh SUITE` hands its runner, from its print-only
    mode (`--print`). A stand-in `python` on PATH records any other call: print mode must
    generate, train and load nothing."""
    import subprocess
    import sys

    log, shim = tmp_path / "calls.log", tmp_path / "bin"
    shim.mkdir()
    log.write_text("")
    # run_me.sh asks main.py for its list of algorithms: that call alone runs for real
    (shim / "python").write_text(f"#!/bin/sh\n[ \"$2\" = --list_algorithms ] && exec {sys.executable} \"$@\"\n"
                                 f"printf '%s\\n' \"$*\" >> {log}\n")
    (shim / "python").chmod(0o755)
    done = subprocess.run(["bash", os.path.join(rp.REPO_ROOT, "run_me.sh"), suite, "--print"],
                          env={**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == ""
    return [line.split()[2:] for line in done.stdout.splitlines() if line.startswith("python system/main.py ")]


@pytest.mark.parametrize("suite", ["paper", "cpu", "claims"])
def test_run_me_names_every_generator_file_it_loads(suite, tmp_path):
    from cli import apply_algorithm_defaults, parse_args
    from flcore.registry import get_server_class

    lines = run_me_main_lines(suite, tmp_path)
    assert lines
    algorithms = set()
    for argv in lines:
        args = parse_args(argv)
        server_class = get_server_class(args.algorithm)
        apply_algorithm_defaults(args)
        algorithms.add(args.algorithm)
        if getattr(server_class, "generator_kind", "builtin") != "builtin":
            assert args.generator_path, argv
        if getattr(server_class, "generator_kind", None) == "stylegan":
            assert args.stylegan_utils, argv
    if suite == "paper":
        assert "FedKTL-stylegan-xl" in algorithms
        xl = next(argv for argv in lines if "FedKTL-stylegan-xl" in argv)
        assert xl[xl.index("-GPath") + 1] == "stylegan/stylegan-xl-models/imagenet64.pkl"
        assert xl[xl.index("--stylegan_utils") + 1] == "stylegan/stylegan-utils"


def test_run_me_claims_runs_every_algorithm_and_the_ablation_on_both_data_sets(tmp_path):
    from cli import apply_algorithm_defaults, parse_args, validate
    from flcore.registry import ALGORITHMS, SPECS

    lines = run_me_main_lines("claims", tmp_path)
    runs = set()
    for argv in lines:
        args = parse_args(argv)
        apply_algorithm_defaults(args)
        validate(args)
        assert args.times == 2 and args.seed == 0
        ktl = args.algorithm == "FedKTL"
        runs.add((args.dataset, args.algorithm, getattr(args, "generator", None),
                  getattr(args, "generator_weights", None), args.mu if ktl else None, args.out))
        # each variant writes to its own folder: the result files of one algorithm share a name
        assert args.out.startswith("results/claims/")
    tested = {spec.name for spec in SPECS if spec.test_flags is not None}
    for data in ("MNIST5k-dir", "MNIST5k-hard-dir"):
        assert {algorithm for (d, algorithm, *_) in runs if d == data} == tested
    outs = {}
    for data, algorithm, generator, weights, mu, out in runs:
        if algorithm == "FedKTL":
            outs.setdefault(out, set()).add((generator, weights, mu == 0))
    # one folder per ablation row, on every data set
    assert all(len(rows) == 1 for rows in outs.values())
    rows = {next(iter(r)) for r in outs.values()}
    assert {(g, w) for g, w, off in rows if not off} == {("builtin", "pretrained"), ("builtin", "random"),
                                                         ("faces", "pretrained"), ("faces", "random")}
    assert any(off for *_, off in rows)
    few_shot = {args for args in runs if args[0].endswith("shot")}
    assert {d for d, *_ in few_shot} == {f"{name}-{n}shot" for name in ("MNIST5k", "MNIST5k-hard") for n in (2, 5, 20)}
    assert "Local" in {a for _, a, *_ in few_shot} and set(ALGORITHMS) >= {a for _, a, *_ in few_shot}


def test_run_me_paper_runs_fedgh_as_htfllibs_table_while_the_default_is_htfllibs_main(tmp_path):
    from cli import apply_algorithm_defaults, parse_args

    default = parse_args(["-algo", "FedGH"])
    apply_algorithm_defaults(default)
    assert default.server_epochs == 100 and default.server_learning_rate == 0.01
    fedgh = [argv for argv in run_me_main_lines("paper", tmp_path) if "FedGH" in argv]
    assert len(fedgh) == 8
    for argv in fedgh:
        args = parse_args(argv)
        apply_algorithm_defaults(args)
        assert args.server_epochs == 1 and args.server_learning_rate == 0.01  # total.sh's -slr 0.01 -se 1
