"""scripts/htfllib_parity.py: its pure parts, on fake files (no HtFLlib checkout, no training)."""
import csv
import importlib.util
import os
import sys

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "htfllib_parity.py")

spec = importlib.util.spec_from_file_location("htfllib_parity", SCRIPT)
parity = importlib.util.module_from_spec(spec)
sys.modules["htfllib_parity"] = parity
spec.loader.exec_module(parity)

# Just enough of HtFLlib's files (at e959261) to hold every anchor, in its own layout.
FAKE_MAIN = '''#!/usr/bin/env python
import torch
import numpy as np
import warnings
from flcore.servers.serverl2g_feat import FedL2G as FedL2G_feat
from flcore.servers.serverl2g_logit import FedL2G as FedL2G_logit

warnings.simplefilter("ignore")
torch.manual_seed(0)

def run(args):
    for i in range(1):
        if args.model_family == "HtFE-img-2":
            args.models = []

        elif args.model_family == "HtFE-img-3":
            args.models = []
'''
FAKE_MEM_UTILS = "from math import isnan\nfrom calmsize import size as calmsize\n"
FAKE_CLIENTBASE = '''import os
import torch

def load_item(role, item_name, item_path=None):
    return torch.load(os.path.join(item_path, role + "_" + item_name + ".pt"))
'''
FAKE_TOTAL_SH = """nohup python -u main.py -t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -ncl 100 -data Cifar100 -m HtFE-img-8 -fd 512 -did 0 -algo Local > total-Local.out 2>&1 &
nohup python -u main.py -t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -ncl 100 -data Cifar100 -m HtFE-img-8 -fd 512 -did 1 -algo FedProto -lam 10 > total-FedProto.out 2>&1 &
nohup python -u main.py -t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -ncl 100 -data Cifar100 -m HtFE-img-8 -fd 512 -did 3 -algo FedGH -slr 0.01 -se 1 > total-FedGH.out 2>&1 &
nohup python -u main.py -t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -ncl 100 -data Cifar100 -m HtFE-img-8 -fd 512 -did 4 -algo FedTGP -lam 10 -se 100 -mart 100 > total-FedTGP.out 2>&1 &
"""


def fake_htfllib(folder, main=FAKE_MAIN, total_sh=FAKE_TOTAL_SH):
    files = {"system/main.py": main, "system/total.sh": total_sh, "system/utils/mem_utils.py": FAKE_MEM_UTILS,
             "system/flcore/clients/clientbase.py": FAKE_CLIENTBASE}
    for path, text in files.items():
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
    return str(folder)


def read(folder, path):
    with open(os.path.join(folder, path)) as f:
        return f.read()


# --- edits ----------------------------------------------------------------------------------------

def test_an_edit_replaces_its_anchor_and_names_itself_when_the_anchor_is_missing():
    edit = parity.Edit("demo", "a.py", "x = 1\n", "x = 2\n", why="a test")
    assert edit.apply("y = 0\nx = 1\n") == "y = 0\nx = 2\n"
    with pytest.raises(parity.EditError, match=r"edit 'demo'.*found 0 time\(s\) in a\.py"):
        edit.apply("y = 0\n")
    with pytest.raises(parity.EditError, match=r"found 2 time\(s\)"):
        edit.apply("x = 1\nx = 1\n")
    assert "[demo] a.py: a test" in edit.describe()
    assert "- x = 1" in edit.describe() and "+ x = 2" in edit.describe()


def test_the_edits_apply_to_htfllib_files_and_leave_valid_python(tmp_path):
    root = fake_htfllib(tmp_path)
    parity.apply_edits(root, parity.htfllib_edits(seed=3, threads=1))
    main = read(root, "system/main.py")
    assert "torch.set_num_threads(1)" in main
    assert "torch.manual_seed(3)" in main and "np.random.seed(3)" in main
    assert 'elif args.model_family == "HtFE-cpu"' in main
    assert "'resnet4(num_classes=args.num_classes)'" in main and "'resnet8(num_classes=args.num_classes)'" in main
    assert "FedAvgCNN(in_features=3, num_classes=args.num_classes, dim=1600)" in main
    assert main.index('"HtFE-cpu"') < main.index('"HtFE-img-3"')
    assert "weights_only=False" in read(root, "system/flcore/clients/clientbase.py")
    assert "except ImportError" in read(root, "system/utils/mem_utils.py")
    for path in ("system/main.py", "system/utils/mem_utils.py", "system/flcore/clients/clientbase.py"):
        compile(read(root, path), path, "exec")


def test_a_missing_anchor_stops_every_edit_before_any_file_is_written(tmp_path):
    root = fake_htfllib(tmp_path, main=FAKE_MAIN.replace('warnings.simplefilter("ignore")\n', ""))
    with pytest.raises(parity.EditError, match="'threads'"):
        parity.apply_edits(root, parity.htfllib_edits())
    assert read(root, "system/main.py") == FAKE_MAIN.replace('warnings.simplefilter("ignore")\n', "")
    assert read(root, "system/flcore/clients/clientbase.py") == FAKE_CLIENTBASE


def test_a_dry_run_checks_the_anchors_but_writes_nothing(tmp_path):
    root = fake_htfllib(tmp_path)
    parity.apply_edits(root, parity.htfllib_edits(), dry_run=True)
    assert read(root, "system/main.py") == FAKE_MAIN


# --- flags and commands ---------------------------------------------------------------------------

def test_total_sh_gives_each_algorithm_its_own_flags_only():
    found = parity.parse_total_sh(FAKE_TOTAL_SH)
    assert found == {"Local": (), "FedProto": ("-lam", "10"), "FedGH": ("-slr", "0.01", "-se", "1"),
                     "FedTGP": ("-lam", "10", "-se", "100", "-mart", "100")}
    for name, flags in found.items():
        assert parity.TOTAL_SH_FLAGS[name] == flags


def test_total_sh_wins_over_the_built_in_table_and_says_so():
    flags, notes = parity.algorithm_flags(["FedGH", "FML"], FAKE_TOTAL_SH.replace("-se 1 >", "-se 5 >"))
    assert flags["FedGH"] == ("-slr", "0.01", "-se", "5")
    assert flags["FML"] == parity.TOTAL_SH_FLAGS["FML"]
    assert any("FedGH" in n and "using total.sh's" in n for n in notes)
    assert any("FML: not in total.sh" in n for n in notes)


@pytest.mark.parametrize("algorithm", parity.DEFAULT_ALGORITHMS)
def test_both_libraries_get_the_same_flags(algorithm):
    own = parity.TOTAL_SH_FLAGS[algorithm]
    theirs = parity.htfllib_command("python", algorithm, 7, own)
    ours = parity.library_command("python", algorithm, 7, own, seed=0, threads=1, data_root="/d", out="/o")
    assert theirs[:3] == ["python", "-u", "main.py"]
    assert ours[:3] == ["python", "-u", os.path.join(ROOT, "system", "main.py")]
    library_only = ["--seed", "0", "--threads", "1", "--data_root", "/d", "--out", "/o"]
    assert ours[3:] == theirs[3:] + library_only
    shared = theirs[3:]
    for flag, value in zip(parity.COMMON_FLAGS[::2], parity.COMMON_FLAGS[1::2]):
        assert shared[shared.index(flag) + 1] == value
    assert shared[shared.index("-gr") + 1] == "7" and shared[shared.index("-algo") + 1] == algorithm
    assert shared[shared.index("-m") + 1] == "HtFE-cpu" and shared[shared.index("-dev") + 1] == "cpu"
    assert tuple(shared[-len(own):]) == own if own else True


@pytest.mark.parametrize("algorithm", parity.DEFAULT_ALGORITHMS)
def test_this_library_reads_the_shared_flags_as_htfllib_does(algorithm):
    from cli import apply_algorithm_defaults, parse_args

    ours = parity.library_command("python", algorithm, 7, parity.TOTAL_SH_FLAGS[algorithm], seed=0, threads=1,
                                  data_root="/d", out="/o")
    args = parse_args(ours[3:])
    apply_algorithm_defaults(args)
    assert (args.algorithm, args.global_rounds, args.batch_size, args.local_learning_rate) == (algorithm, 7, 10, 0.01)
    assert (args.num_clients, args.join_ratio, args.feature_dim, args.local_epochs) == (20, 1.0, 512, 1)
    assert (args.model_family, args.device, args.threads, args.dataset) == ("HtFE-cpu", "cpu", 1, "MNIST5k-parity")
    expected = {"FedProto": {"lamda": 10.0}, "FD": {"lamda": 1.0}, "FML": {"alpha": 0.5, "beta": 0.5},
                "FedKD": {"mentee_learning_rate": 0.01, "T_start": 0.95, "T_end": 0.98},
                "FedGen": {"noise_dim": 32, "generator_learning_rate": 0.1, "hidden_dim": 512, "server_epochs": 100},
                "FedGH": {"server_learning_rate": 0.01, "server_epochs": 1},
                "FedTGP": {"lamda": 10.0, "server_epochs": 100, "margin_threthold": 100.0}}
    for dest, value in expected.get(algorithm, {}).items():
        assert getattr(args, dest) == value, dest


def test_extra_library_flags_go_to_this_library_only():
    ours = parity.library_command("python", "Local", 3, (), 0, 1, "/d", "/o", extra=["--stored_order"])
    assert ours[-1] == "--stored_order"
    assert "--stored_order" not in parity.htfllib_command("python", "Local", 3, ())


# --- results, table and curves ----------------------------------------------------------------------

def write_htfllib_h5(path, accuracies):
    """As HtFLlib's Server.save_results writes it."""
    with h5py.File(path, "w") as hf:
        hf.create_dataset("rs_test_acc", data=accuracies)
        hf.create_dataset("rs_test_auc", data=[0.5] * len(accuracies))
        hf.create_dataset("rs_train_loss", data=[])


def test_reads_an_htfllib_result_file(tmp_path):
    path = parity.result_file(str(tmp_path), "FedGH")
    assert os.path.basename(path) == "MNIST5k-parity_FedGH_parity_0.h5"
    write_htfllib_h5(path, [0.1, 0.55, 0.5])
    assert parity.read_accuracy(path) == pytest.approx([0.1, 0.55, 0.5])
    with h5py.File(tmp_path / "other.h5", "w") as hf:
        hf.create_dataset("rs_test_auc", data=[0.5])
    with pytest.raises(KeyError, match="no rs_test_acc"):
        parity.read_accuracy(str(tmp_path / "other.h5"))


def outcomes():
    return [
        parity.Outcome("Local", htfllib=[0.1, 0.70, 0.72], library=[0.1, 0.71, 0.73]),
        parity.Outcome("FedGH", htfllib=[0.1, 0.60, 0.65], library=[0.1, 0.55, 0.62]),
        parity.Outcome("FD", htfllib=[0.1, 0.5, 0.6], failures=["library failed (exit 2): see /w/logs/a|b.log"]),
    ]


def test_the_table_gives_best_accuracies_their_difference_and_notes():
    table = parity.format_table(outcomes(), rounds=2).splitlines()
    assert table[0] == "| algorithm | HtFLlib best % | this library best % | difference | note |"
    local, fedgh, fd = (line.split(" | ") for line in table[2:])
    assert local[:4] == ["| Local", "72.00", "73.00", "+1.00"]
    assert "below" not in local[4]
    assert fedgh[:4] == ["| FedGH", "65.00", "62.00", "-3.00"]
    assert "this library 3.00 points below" in fedgh[4]
    assert fd[:4] == ["| FD", "60.00", "—", "—"]
    assert "library failed (exit 2): see /w/logs/a\\|b.log" in table[4]


def test_the_table_notes_an_unexpected_number_of_evaluations():
    table = parity.format_table([parity.Outcome("Local", htfllib=[0.1, 0.2], library=[0.1, 0.2, 0.3])], rounds=2)
    assert "HtFLlib: 2 evaluations, expected 3" in table
    assert "library: 3 evaluations" not in table


def test_curves_side_by_side_as_markdown_and_csv(tmp_path):
    header, rows = parity.curve_rows(outcomes())
    assert header == ["evaluation", "Local HtFLlib", "Local library", "FedGH HtFLlib", "FedGH library",
                      "FD HtFLlib", "FD library"]
    assert rows[2] == ["2", "72.00", "73.00", "65.00", "62.00", "60.00", ""]
    markdown = parity.format_curves(outcomes()).splitlines()
    assert markdown[0].startswith("| evaluation | Local HtFLlib")
    assert markdown[-1] == "| 2 | 72.00 | 73.00 | 65.00 | 62.00 | 60.00 | — |"
    path = tmp_path / "curves.csv"
    parity.write_csv(str(path), outcomes())
    with open(path) as f:
        assert list(csv.reader(f))[1] == ["0", "10.00", "10.00", "10.00", "10.00", "10.00", ""]


def test_the_png_of_the_curves(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curves.png"
    assert parity.write_png(str(path), outcomes(), rounds=2) is None
    assert path.stat().st_size > 0


def test_the_data_digest_depends_on_values_and_order():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = np.array([0, 1, 2])
    same = parity.digest_arrays([(x, y)])
    assert same == parity.digest_arrays([(x.astype(np.float64), y.astype(np.int32))])
    assert same != parity.digest_arrays([(x[::-1], y[::-1])])


def test_dry_run_prints_commands_and_edits_and_runs_nothing(tmp_path, capsys):
    root = fake_htfllib(tmp_path / "HtFLlib")
    work = tmp_path / "work"
    code = parity.main(["--htfllib", root, "--algorithms", "FedGH", "Local", "--rounds", "3", "--work", str(work),
                        "--dry_run"])
    out = capsys.readouterr().out
    assert code == 0
    assert not work.exists() and read(root, "system/main.py") == FAKE_MAIN
    for name in ("threads", "seed", "family", "fedl2g-import", "calmsize", "torch-load"):
        assert f"[{name}]" in out
    assert "main.py -data MNIST5k-parity -m HtFE-cpu -ncl 10 -algo FedGH -gr 3" in out
    assert "-slr 0.01 -se 1 --seed 0 --threads 1" in out
    assert "generate_MNIST5k.py noniid - dir --num_clients 20 --alpha 0.1" in out
    assert "trains 4 rounds" in out


def test_flags_for_both_libraries_follow_the_algorithms_own_on_both_sides(tmp_path, capsys):
    root = fake_htfllib(tmp_path / "HtFLlib")
    code = parity.main(["--htfllib", root, "--algorithms", "FedGH", "--rounds", "3", "--work", str(tmp_path / "w"),
                        "--flags", "-se 100", "--dry_run"])
    commands = [line for line in capsys.readouterr().out.splitlines() if "main.py -data" in line]
    assert code == 0 and len(commands) == 2
    for line in commands:  # total.sh's -se 1 first, the later -se 100 wins in both parsers
        assert "-slr 0.01 -se 1 -se 100" in line


def test_a_folder_that_is_not_htfllib_is_refused(tmp_path, capsys):
    assert parity.main(["--htfllib", str(tmp_path), "--dry_run"]) == 2
    assert "no system/main.py" in capsys.readouterr().err


def test_a_checkout_without_an_anchor_is_refused_before_anything_runs(tmp_path, capsys):
    root = fake_htfllib(tmp_path / "HtFLlib", main=FAKE_MAIN.replace("torch.manual_seed(0)\n", ""))
    assert parity.main(["--htfllib", root, "--work", str(tmp_path / "work")]) == 2
    assert "edit 'seed'" in capsys.readouterr().err
    assert not (tmp_path / "work" / "HtFLlib").exists()


HTFLLIB_LOG = """-------------Round number: 0-------------
Averaged Test Accuracy: 0.1122
Averaged Test AUC: 0.5000
-------------Round number: 1-------------
Averaged Test Accuracy: 0.7088
Traceback (most recent call last):
  File "main.py", line 461, in <module>
ValueError: Input contains NaN.
"""
LIBRARY_LOG = """[X] after 0 round(s): test acc 0.0899 (client mean 0.0900 +- 0.1684), auc 0.5126
[X] after 1 round(s): test acc 0.7327 (client mean 0.7373 +- 0.1851), auc 0.9571
error: something went wrong
"""


def test_a_log_gives_the_curve_and_the_error_a_run_ended_on():
    assert parity.accuracy_from_log(HTFLLIB_LOG, "HtFLlib") == [0.1122, 0.7088]
    assert parity.accuracy_from_log(LIBRARY_LOG, "library") == [0.0899, 0.7327]
    assert parity.last_error(HTFLLIB_LOG) == "ValueError: Input contains NaN."
    assert parity.last_error(LIBRARY_LOG) == "error: something went wrong"
    assert parity.last_error("") == "(empty log)"


def test_a_failed_run_is_reported_with_its_log_and_the_others_are_read(tmp_path):
    jobs = []
    for side, log_text in (("HtFLlib", HTFLLIB_LOG), ("library", "all fine\n")):
        log = tmp_path / f"{side}.log"
        log.write_text(log_text)
        jobs.append(parity.Job("FD", side, ["x"], str(tmp_path), str(log), str(tmp_path / f"{side}.h5")))
    write_htfllib_h5(str(tmp_path / "library.h5"), [0.1, 0.8])
    (outcome,) = parity.collect(jobs, {("FD", "HtFLlib"): (1, 3.0), ("FD", "library"): (0, 3.0)}, ["FD"])
    assert outcome.library == pytest.approx([0.1, 0.8])
    assert outcome.htfllib == pytest.approx([0.1122, 0.7088])
    (failure,) = outcome.failures
    assert "HtFLlib failed (exit 1; ValueError: Input contains NaN.) after 2 evaluation(s)" in failure
    assert str(tmp_path / "HtFLlib.log") in failure
    # without exit codes (--report_only), a missing h5 is the failure
    (outcome,) = parity.collect(jobs, {}, ["FD"])
    assert "HtFLlib failed (no results:" in outcome.failures[0]


def test_report_only_rebuilds_the_report_from_the_result_files(tmp_path):
    root = fake_htfllib(tmp_path / "HtFLlib")
    work = tmp_path / "work"
    (work / "HtFLlib" / "results").mkdir(parents=True)
    (work / "library_results").mkdir()
    write_htfllib_h5(parity.result_file(str(work / "HtFLlib" / "results"), "Local"), [0.1, 0.8, 0.9])
    write_htfllib_h5(parity.result_file(str(work / "library_results"), "Local"), [0.1, 0.85, 0.88])
    out = tmp_path / "report" / "parity.md"
    code = parity.main(["--htfllib", root, "--algorithms", "Local", "--rounds", "2", "--work", str(work),
                        "--report_only", "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "| Local | 90.00 | 88.00 | -2.00 | this library 2.00 points below" in text
    assert "[family] system/main.py" in text and "trains 3 rounds" in text
    assert "| 2 | 90.00 | 88.00 |" in text
    assert (tmp_path / "report" / "parity_curves.csv").exists()
