"""scripts/gpu_check.py: its CPU-side logic (no-CUDA error, report, exit status, --only, the
per-check time budget), and, in the GPU tier, the whole check on a CUDA device."""
import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from scripts import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.py")


def result(name, status, seconds=1.0, detail="measured things"):
    return {"name": name, "status": status, "seconds": seconds, "budget_s": gpu_check.CHECKS[name][1],
            "detail": detail, "figures": {}}


def test_without_cuda_it_prints_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert (done.stdout + done.stderr).strip() == gpu_check.NO_CUDA_MESSAGE
    assert not (tmp_path / "out").exists()


def test_exit_status_counts_only_checks_that_ran():
    assert gpu_check.exit_status([result("stylegan", "SKIP"), result("oom", "PASS")]) == 0
    assert gpu_check.exit_status([result("stylegan", "SKIP")]) == 0
    assert gpu_check.exit_status([result("oom", "PASS"), result("resume", "FAIL")]) == 1
    assert gpu_check.exit_status([]) == 0


def test_report_has_a_row_per_check_and_the_overall_line():
    results = [result("stylegan", "SKIP", 0.0, "needs --stylegan_utils CLONE"),
               result("offload", "PASS", 41.25, "rs_test_acc equal; peak GPU 900 -> 300 MiB " + "word " * 40),
               result("resume", "FAIL", 12.0, "rs_test_acc differs: max abs diff 0.0100")]
    report = gpu_check.format_report(results, header="gpu_check on a fake GPU")
    lines = report.splitlines()
    assert lines[0] == "gpu_check on a fake GPU"
    rows = {line.split()[1]: line for line in lines[2:] if line[:2].strip().isdigit()}
    assert set(rows) == {"stylegan", "offload", "resume"}
    assert rows["stylegan"].split()[2] == "SKIP" and rows["resume"].split()[2] == "FAIL"
    assert "41.2/70" in rows["offload"] or "41.3/70" in rows["offload"]
    assert all(len(line) <= 100 for line in lines[1:-1])  # long results wrap under their row
    assert lines[-1].startswith("overall FAIL: 1 passed, 1 failed, 1 skipped")
    passing = gpu_check.format_report([result("oom", "PASS"), result("stylegan", "SKIP")])
    assert passing.splitlines()[-1].startswith("overall PASS: 1 passed, 0 failed, 1 skipped")


def test_only_takes_names_or_numbers_in_report_order():
    assert gpu_check.parse_only("resume,offload") == ["offload", "resume"]
    assert gpu_check.parse_only(" 6, 1 ,oom,oom") == ["stylegan", "oom", "timing"]
    assert gpu_check.parse_only("SD_FP16") == ["sd_fp16"]
    for bad in ("nope", "7", "0", ",", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            gpu_check.parse_only(bad)
    assert gpu_check.build_parser().parse_args([]).only == list(gpu_check.CHECKS)
    assert gpu_check.build_parser().parse_args(["--only", "2,3"]).only == ["sd_fp16", "offload"]


def test_only_rejects_unknown_names_on_the_command_line():
    done = subprocess.run([sys.executable, SCRIPT, "--only", "offload,bogus"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "unknown check 'bogus'" in done.stderr


def test_budgets_fit_the_total():
    assert sum(budget for _, budget in gpu_check.CHECKS.values()) <= gpu_check.TOTAL_BUDGET_S <= 8 * 60


def test_a_child_over_its_budget_is_killed_and_fails(tmp_path):
    sleeper = [sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"]
    got = gpu_check.run_child(sleeper, 1.5, str(tmp_path / "log"), str(tmp_path / "result.json"))
    assert got["status"] == "FAIL" and "exceeded its budget of 2 s" in got["detail"]
    assert got["seconds"] < 30


def test_a_child_result_is_read_and_a_crash_is_a_failure(tmp_path):
    path = str(tmp_path / "result.json")
    writer = [sys.executable, "-c", f"import json; json.dump({{'status': 'PASS', 'detail': 'ok', 'figures': "
                                    f"{{'x': 1}}}}, open({path!r}, 'w'))"]
    got = gpu_check.run_child(writer, 30, str(tmp_path / "log"), path)
    assert (got["status"], got["detail"], got["figures"]) == ("PASS", "ok", {"x": 1})
    crasher = [sys.executable, "-c", "raise SystemExit('boom went the check')"]
    got = gpu_check.run_child(crasher, 30, str(tmp_path / "log"), path)  # the old result is not reused
    assert got["status"] == "FAIL" and "boom went the check" in got["detail"]


def test_a_check_that_raises_fails_alone(monkeypatch, tmp_path):
    options = gpu_check.build_parser().parse_args(["--out", str(tmp_path), "--device", "cpu"])

    def broken(ctx):
        ctx.figures["before"] = 1
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setitem(gpu_check.CHECK_FUNCTIONS, "oom", broken)
    got = gpu_check.run_check_here("oom", options, 30)
    assert got == {"status": "FAIL", "detail": "RuntimeError: a bug over two lines", "figures": {"before": 1}}
    assert gpu_check.run_check_here("stylegan", options, 30)["status"] == "SKIP"  # no --stylegan_utils


def test_accuracy_comparison_is_exact_unless_torch_warned():
    assert gpu_check.compare_accuracies([0.1, 0.2], [0.1, 0.2], "")[0]
    assert not gpu_check.compare_accuracies([0.1, 0.2], [0.1, 0.21], "")[0]
    warned = "UserWarning: x does not have a deterministic implementation, but you set ..."
    assert gpu_check.compare_accuracies([0.1, 0.2], [0.1, 0.21], warned)[0]
    assert not gpu_check.compare_accuracies([0.1, 0.2], [0.1, 0.3], warned)[0]
    assert not gpu_check.compare_accuracies([0.1], [0.1, 0.2], "")[0]


def test_plugin_and_fallback_lines_are_read():
    output = ('Setting up PyTorch plugin "bias_act_plugin"... Done.\n'
              'Setting up PyTorch plugin "filtered_lrelu_plugin"... Failed!\n'
              "warning: NVlabs' CUDA ops filtered_lrelu, upfirdn2d could not be built (RuntimeError: x); ...\n")
    assert gpu_check.plugin_report(output) == (["bias_act_plugin"], ["filtered_lrelu_plugin"],
                                               ["filtered_lrelu", "upfirdn2d"])
    from flcore.generators import nvlabs_ops

    warning = nvlabs_ops.FALLBACK_WARNING.format(ops="bias_act", error="E", cuda="12.8")
    assert gpu_check.plugin_report(warning)[2] == ["bias_act"]


def test_without_nvcc_env_hides_the_compiler(tmp_path, monkeypatch):
    fake_bin = tmp_path / "cuda" / "bin"
    fake_bin.mkdir(parents=True)
    (fake_bin / "nvcc").write_text("")
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}/usr/bin")
    env = gpu_check.without_nvcc_env(str(tmp_path))
    assert env["PATH"] == "/usr/bin"
    assert env["CUDA_HOME"] == env["CUDA_PATH"]
    assert os.listdir(env["CUDA_HOME"]) == [] and os.listdir(env["TORCH_EXTENSIONS_DIR"]) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_whole_gpu_check_passes(tmp_path):
    command = [sys.executable, SCRIPT, "--out", str(tmp_path)]
    utils = os.path.join(ROOT, "stylegan", "stylegan-utils")
    if os.path.isdir(os.path.join(utils, "training")):
        command += ["--stylegan_utils", utils]
    done = subprocess.run(command, capture_output=True, text=True, timeout=15 * 60)
    with open(tmp_path / "gpu_check.json") as f:
        report = json.load(f)
    assert done.returncode == 0, done.stdout[-4000:]
    assert report["exit_status"] == 0
    assert {c["name"] for c in report["checks"]} == set(gpu_check.CHECKS)
    assert all(c["status"] in ("PASS", "SKIP") for c in report["checks"])
