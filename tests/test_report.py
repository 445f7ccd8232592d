"""system/report.py: tables, CSV, communication table and curves from fake result files."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

import report
from utils.report_utils import (Run, assign_settings, format_cell, format_group, format_millions, format_rounds,
                                length_warnings, list_rounds, mean_curve, names_from_file, order_algorithms,
                                rounds_trained)
from utils.result_utils import result_name, write_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_data_root(root, dataset, partition):
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"non_iid": partition != "iid",
                                                    "partition": None if partition == "iid" else partition}))
    return str(root)


def write_run(out, dataset, algorithm, index, accuracies, data_root, goal="test", family="HtFE-cpu",
              floats_up=(0, 0), floats_down=(0, 0), variant=None, extra=None):
    os.makedirs(out, exist_ok=True)
    series = {"rs_test_acc": list(accuracies), "eval_rounds": list(range(len(accuracies))),
              "floats_up": list(floats_up), "floats_down": list(floats_down), **(extra or {})}
    config = {"dataset": dataset, "algorithm": algorithm, "goal": goal, "model_family": family,
              "data_root": data_root, "run_index": index}
    if variant is not None:
        config["variant"] = variant
    path = os.path.join(out, result_name(dataset, algorithm, goal, index) + ".h5")
    write_results(path, series, config)
    return path


@pytest.fixture
def sweep(tmp_path):
    """MNIST5k (Dirichlet): FedGen twice (best 50%, 60%), Local once (best 70%);
    Cifar10 (pathological), in a second folder: FedGen once (best 40%). Every run trained 2 rounds."""
    data_root = tmp_path / "data"
    make_data_root(data_root, "MNIST5k", "dir")
    make_data_root(data_root, "Cifar10", "pat")
    first, second = str(tmp_path / "results"), str(tmp_path / "more")
    write_run(first, "MNIST5k", "FedGen", 0, [0.1, 0.5, 0.4], str(data_root),
              floats_up=(1e6, 3e6), floats_down=(7e6, 9e6))
    write_run(first, "MNIST5k", "FedGen", 1, [0.2, 0.3, 0.6], str(data_root),
              floats_up=(2e6, 2e6), floats_down=(8e6, 8e6))
    write_run(first, "MNIST5k", "Local", 0, [0.1, 0.7, 0.65], str(data_root))
    write_run(second, "Cifar10", "FedGen", 0, [0.2, 0.4, 0.3], str(data_root), floats_up=(5e3, 5e3))
    return first, second, tmp_path / "report"


def read_table(path):
    lines = path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in table]


def test_table_cells_are_mean_and_std_of_best_accuracies_with_runs_and_rounds(sweep, capsys):
    first, second, out = sweep
    assert report.main([first, second, "--out", str(out)]) == 0
    rows = read_table(out / "table.md")
    assert rows[0] == ["Algorithm", "Cifar10 pat", "MNIST5k dir"]
    # One run: its value alone, no "± 0.00"; several: mean ± std. Each cell says how many
    # runs it summarises and how many rounds they trained.
    assert rows[2] == ["Local", "–", "70.00 (n=1, 2 rounds)"]
    assert rows[3] == ["FedGen", "40.00 (n=1, 2 rounds)", "55.00 ± 5.00 (n=2, 2 rounds)"]
    text = (out / "table.md").read_text()
    assert "n: runs (repetitions), rounds: rounds of training per run" in text
    # Runs of one length everywhere: no warning, in the file or on stderr.
    assert "warning" not in text and "warning" not in capsys.readouterr().err


def test_csv_has_one_record_per_setting_and_algorithm_with_runs_and_rounds_columns(sweep):
    first, second, out = sweep
    assert report.main([first, second, "--out", str(out)]) == 0
    with open(out / "table.csv") as f:
        reader = csv.DictReader(f)
        records = list(reader)
    assert reader.fieldnames == ["setting", "algorithm", "runs", "rounds", "mean", "std"]
    assert records == [
        {"setting": "Cifar10 pat", "algorithm": "FedGen", "runs": "1", "rounds": "2", "mean": "40.00",
         "std": "0.00"},
        {"setting": "MNIST5k dir", "algorithm": "Local", "runs": "1", "rounds": "2", "mean": "70.00", "std": "0.00"},
        {"setting": "MNIST5k dir", "algorithm": "FedGen", "runs": "2", "rounds": "2", "mean": "55.00",
         "std": "5.00"},
    ]


def test_communication_table_has_mean_million_floats_per_round(sweep):
    first, second, out = sweep
    assert report.main([first, second, "--out", str(out)]) == 0
    rows = read_table(out / "comm.md")
    assert rows[0][1:] == ["Cifar10 pat (M floats up / down per round)", "MNIST5k dir (M floats up / down per round)"]
    assert rows[2] == ["Local", "–", "0.00 / 0.00"]
    assert rows[3] == ["FedGen", "0.005 / 0.00", "2.00 / 8.00"]


def test_one_valid_png_per_setting(sweep):
    first, second, out = sweep
    assert report.main([first, second, "--out", str(out)]) == 0
    for name in ("curves_MNIST5k_dir.png", "curves_Cifar10_pat.png"):
        path = out / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] > 100 and image.size[1] > 100


def test_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([str(empty), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: no result files (*.h5) in {empty}"
    assert report.main([str(tmp_path / "absent"), "--out", str(tmp_path / "report")]) == 2
    assert "results folder not found" in capsys.readouterr().err


def test_unreadable_file_is_skipped_with_a_warning_naming_it(sweep, capsys):
    first, second, out = sweep
    bad = os.path.join(first, "MNIST5k_FedKD_test_0.h5")
    with open(bad, "wb") as f:
        f.write(b"not an h5 file")
    assert report.main([first, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipping {bad}" in err
    assert "FedKD" not in [row[0] for row in read_table(out / "table.md")]
    assert f"- left out {bad}: " in (out / "table.md").read_text()


def test_a_diverged_run_is_left_out_of_the_table_with_a_warning(sweep, capsys):
    first, second, out = sweep
    data_root = str(out.parent / "data")
    path = write_run(first, "MNIST5k", "FedKD", 0, [0.1, 0.95], data_root)
    series = {"rs_test_acc": [0.1, 0.95], "eval_rounds": [0, 1], "diverged_after_round": [2]}
    write_results(path, series, {"dataset": "MNIST5k", "algorithm": "FedKD", "data_root": data_root})
    assert report.main([first, "--out", str(out)]) == 0
    assert "training diverged after round 2" in capsys.readouterr().err
    text = (out / "table.md").read_text()
    assert "FedKD" not in [row[0] for row in read_table(out / "table.md")]
    # ... and marked under the table, so the table says what it leaves out.
    assert f"- left out {path}: training diverged after round 2" in text


def test_only_unreadable_files_is_an_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "X_Local_test_0.h5").write_bytes(b"junk")
    assert report.main([str(tmp_path / "r"), "--out", str(tmp_path / "report")]) == 2
    assert "error: no readable result files" in capsys.readouterr().err


# ---- the pure pieces ----------------------------------------------------------------------

def run(**kw):
    defaults = dict(path="x.h5", dataset="MNIST5k", algorithm="Local", goal="test", model_family="HtFE-cpu",
                    partition="dir")
    return Run(**{**defaults, **kw})


def test_setting_rule_goal_tag_partition_and_family():
    runs = [run(), run(goal="pat20"), run(goal="shared"), run(dataset="Cifar10", goal="shared"),
            run(partition="")]
    assign_settings(runs)
    assert [r.setting for r in runs] == ["MNIST5k dir", "pat20", "MNIST5k shared", "Cifar10 shared", "MNIST5k"]
    several = [run(), run(), run(model_family="HtFE8")]
    assign_settings(several)
    assert [r.setting for r in several] == ["MNIST5k dir"] * 3
    assert [r.algorithm for r in several] == ["Local", "Local", "Local (HtFE8)"]
    named = [run(dataset="MNIST5k-pat", partition="pat")]
    assign_settings(named)
    assert named[0].setting == "MNIST5k-pat"


def test_an_algorithm_on_another_family_gets_its_own_row_not_its_own_column():
    runs = [run(), run(algorithm="FD"), run(algorithm="FedLoGe", model_family="ResNet8")]
    assign_settings(runs)
    assert [r.setting for r in runs] == ["MNIST5k dir"] * 3
    assert [r.algorithm for r in runs] == ["Local", "FD", "FedLoGe (ResNet8)"]


def test_formatting_and_ordering():
    assert format_cell([0.5, 0.6]) == "55.00 ± 5.00"
    assert format_cell([0.123456]) == "12.35"  # one run: no "± 0.00"
    assert format_cell(np.array([0.5])) == "50.00"
    assert format_rounds([20, 20]) == "20 rounds" and format_rounds([1]) == "1 round"
    assert format_rounds([3, 1, 3]) == "1–3 rounds"
    assert list_rounds([3, 1, 3]) == "1 and 3 rounds" and list_rounds([2, 1, 3]) == "1, 2 and 3 rounds"
    assert list_rounds([1]) == "1 round"
    assert format_group([run(best=0.8123, rounds_trained=20)]) == "81.23 (n=1, 20 rounds)"
    assert format_group([run(best=0.81, rounds_trained=20), run(best=0.82, rounds_trained=20),
                         run(best=0.83, rounds_trained=20)]) == "82.00 ± 0.82 (n=3, 20 rounds)"
    assert format_millions(7.66e6) == "7.66" and format_millions(0) == "0.00" and format_millions(3.6e3) == "0.0036"
    assert order_algorithms(["FedKTL", "Zeta", "FedProto", "Local", "FedKTL-stylegan-3"]) == \
        ["Local", "FedProto", "Zeta", "FedKTL", "FedKTL-stylegan-3"]


def test_mean_curve_averages_runs_that_reached_each_round():
    a = run(rounds=np.array([0.0, 1.0, 2.0]), values=np.array([0.1, 0.3, 0.5]))
    b = run(rounds=np.array([0.0, 1.0]), values=np.array([0.3, 0.5]))
    rounds, means, stds = mean_curve([a, b])
    assert list(rounds) == [0, 1, 2]
    assert np.allclose(means, [0.2, 0.4, 0.5]) and np.allclose(stds, [0.1, 0.1, 0.0])


def test_names_from_file_for_files_without_config():
    assert names_from_file("/r/Cifar100_FedProto_my_goal_3.h5") == \
        {"dataset": "Cifar100", "algorithm": "FedProto", "goal": "my_goal"}



# ---- FedKTL's ablation: variants as rows, and what the generator adds ----------------------

def test_variants_get_their_own_rows_with_their_labels():
    runs = [run(algorithm="FedKTL", variant={"generator": "faces"}),
            run(algorithm="FedKTL", variant={"generator": "faces", "weights": "random init"}),
            run(algorithm="FedKTL", variant={"transfer": "-mu 0"}, model_family="ResNet8"),
            run(), run()]
    assign_settings(runs)
    assert [r.algorithm for r in runs] == ["FedKTL (faces)", "FedKTL (faces, random init)",
                                           "FedKTL (-mu 0, ResNet8)", "Local", "Local"]
    assert [r.base for r in runs] == ["FedKTL", "FedKTL", "FedKTL (ResNet8)", "Local", "Local"]


def test_ablation_table_sets_pretrained_random_and_no_transfer_side_by_side(tmp_path):
    data_root = make_data_root(tmp_path / "data", "MNIST5k", "dir")
    out = str(tmp_path / "results")
    # Separate folders per variant, as `bash run_me.sh claims` writes them (same file names).
    cases = [("faces", {"generator": "faces"}, [[0.5, 0.90], [0.5, 0.92]]),
             ("faces_random", {"generator": "faces", "weights": "random init"}, [[0.5, 0.85], [0.5, 0.87]]),
             ("builtin", {"generator": "builtin"}, [[0.5, 0.80]]),
             ("mu0", {"transfer": "-mu 0"}, [[0.5, 0.88], [0.5, 0.88]])]
    for folder, variant, repetitions in cases:
        for index, accuracies in enumerate(repetitions):
            write_run(os.path.join(out, folder), "MNIST5k", "FedKTL", index, accuracies, data_root,
                      variant=variant)
    write_run(os.path.join(out, "local"), "MNIST5k", "Local", 0, [0.5, 0.70], data_root)
    folders = [os.path.join(out, name) for name in ("faces", "faces_random", "builtin", "mu0", "local")]
    assert report.main([*folders, "--out", str(tmp_path / "report")]) == 0
    rows = read_table(tmp_path / "report" / "ablation.md")
    assert rows[0] == ["Setting", "Algorithm", "Generator", "pre-trained", "random init", "no transfer (-mu 0)",
                       "Local", "pre-training adds", "transfer adds", "over Local"]
    assert rows[2:] == [
        ["MNIST5k dir", "FedKTL", "builtin", "80.00 (n=1, 1 round)", "–", "88.00 ± 0.00 (n=2, 1 round)",
         "70.00 (n=1, 1 round)", "–", "-8.00", "+10.00"],
        ["MNIST5k dir", "FedKTL", "faces", "91.00 ± 1.00 (n=2, 1 round)", "86.00 ± 1.00 (n=2, 1 round)",
         "88.00 ± 0.00 (n=2, 1 round)", "70.00 (n=1, 1 round)", "+5.00", "+3.00", "+21.00"]]
    assert "warning" not in (tmp_path / "report" / "ablation.md").read_text()
    table = read_table(tmp_path / "report" / "table.md")
    assert [row[0] for row in table[2:]] == ["Local", "FedKTL (-mu 0)", "FedKTL (builtin)", "FedKTL (faces)",
                                             "FedKTL (faces, random init)"]


def test_no_ablation_table_without_ablation_runs(sweep):
    first, second, out = sweep
    assert report.main([first, second, "--out", str(out)]) == 0
    assert not (out / "ablation.md").exists()


# ---- runs of different lengths side by side -------------------------------------------------

def test_rounds_trained_from_round_times_else_from_the_last_evaluation():
    # This library's files: one round_seconds entry per round trained, even when the last
    # round was not evaluated (the original auto-break rule stops before evaluating).
    assert rounds_trained({"round_seconds": [1.0, 1.0, 1.0]}, np.array([0.0, 1.0, 2.0])) == 3
    # HtFLlib's: evaluations before each round and after the last.
    assert rounds_trained({}, np.array([0.0, 1.0, 2.0, 3.0])) == 3
    assert rounds_trained({}, np.array([0.0, 5.0, 10.0])) == 10


def test_a_cell_mixing_run_lengths_is_warned_about_in_table_md_and_on_stderr(tmp_path, capsys):
    data_root = make_data_root(tmp_path / "data", "MNIST5k", "dir")
    out = str(tmp_path / "results")
    write_run(out, "MNIST5k", "FedKTL", 0, [0.1, 0.5], data_root)  # 1 round (auto-break)
    write_run(out, "MNIST5k", "FedKTL", 1, [0.1, 0.5, 0.6, 0.7], data_root,
              extra={"round_seconds": [1.0, 1.0, 1.0]})  # 3 rounds
    write_run(out, "MNIST5k", "Local", 0, [0.1, 0.5, 0.6, 0.7], data_root)  # 3 rounds
    assert report.main([out, "--out", str(tmp_path / "report")]) == 0
    err = capsys.readouterr().err
    text = (tmp_path / "report" / "table.md").read_text()
    rows = read_table(tmp_path / "report" / "table.md")
    assert rows[2:] == [["Local", "70.00 (n=1, 3 rounds)"], ["FedKTL", "60.00 ± 10.00 (n=2, 1–3 rounds)"]]
    cell = "warning: FedKTL on MNIST5k dir mixes runs of 1 and 3 rounds"
    assert f"- {cell}\n" in text and text.index(cell) > text.index("| FedKTL |")  # under the table
    # Local's 3 rounds are among FedKTL's: the cell's own warning says it all.
    assert [line for line in text.splitlines() if "warning" in line] == [f"- {cell}"]
    assert [line for line in err.splitlines() if "warning" in line] == [cell]
    with open(tmp_path / "report" / "table.csv") as f:
        records = {r["algorithm"]: r for r in csv.DictReader(f)}
    assert records["FedKTL"]["rounds"] == "1;3" and records["Local"]["rounds"] == "3"


def test_a_column_of_cells_of_different_lengths_is_warned_about(tmp_path, capsys):
    data_root = make_data_root(tmp_path / "data", "MNIST5k", "dir")
    out = str(tmp_path / "results")
    write_run(out, "MNIST5k", "FedKTL", 0, [0.1, 0.5], data_root)
    write_run(out, "MNIST5k", "FedKTL", 1, [0.1, 0.6], data_root)
    write_run(out, "MNIST5k", "Local", 0, [0.1, 0.5, 0.6, 0.7], data_root)
    assert report.main([out, "--out", str(tmp_path / "report")]) == 0
    line = "warning: column MNIST5k dir compares runs of different lengths: 3 rounds for Local; 1 round for FedKTL"
    assert f"- {line}\n" in (tmp_path / "report" / "table.md").read_text()
    assert line in capsys.readouterr().err.splitlines()


def test_a_row_across_settings_of_different_lengths_is_warned_about():
    runs = [run(algorithm="FedGen", rounds_trained=20), run(algorithm="FedGen", dataset="Cifar10",
                                                           rounds_trained=5),
            run(algorithm="Local", rounds_trained=20), run(algorithm="Local", dataset="Cifar10", rounds_trained=5)]
    assign_settings(runs)
    assert length_warnings(runs) == [
        "warning: row Local mixes lengths across settings: 5 rounds on Cifar10 dir; 20 rounds on MNIST5k dir",
        "warning: row FedGen mixes lengths across settings: 5 rounds on Cifar10 dir; 20 rounds on MNIST5k dir"]
    same = [run(rounds_trained=20), run(rounds_trained=20), run(algorithm="FD", rounds_trained=20)]
    assign_settings(same)
    assert length_warnings(same) == []


def test_an_ablation_row_of_different_lengths_is_warned_about(tmp_path, capsys):
    data_root = make_data_root(tmp_path / "data", "MNIST5k", "dir")
    out = str(tmp_path / "results")
    write_run(os.path.join(out, "faces"), "MNIST5k", "FedKTL", 0, [0.5, 0.9, 0.9], data_root,
              variant={"generator": "faces"})
    write_run(os.path.join(out, "random"), "MNIST5k", "FedKTL", 0, [0.5, 0.8], data_root,
              variant={"generator": "faces", "weights": "random init"})
    assert report.main([os.path.join(out, "faces"), os.path.join(out, "random"),
                        "--out", str(tmp_path / "report")]) == 0
    line = ("warning: FedKTL (faces) on MNIST5k dir compares runs of different lengths: 2 rounds for pre-trained; "
            "1 round for random init")
    assert f"- {line}\n" in (tmp_path / "report" / "ablation.md").read_text()
    assert line in capsys.readouterr().err.splitlines()
