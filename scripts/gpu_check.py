#!/usr/bin/env python
"""Exercise every CUDA path of the library on one GPU and print a compact report.

    python scripts/gpu_check.py                                  # checks 2-6 (1 is skipped)
    python scripts/gpu_check.py --stylegan_utils ~/stylegan3     # all six
    python scripts/gpu_check.py --only offload,resume --out /tmp/gc

Checks, each in its own process under a time budget (seconds, on an H100/H200-class GPU;
all six fit in 8 minutes; a check that overruns is killed and FAILs, the next one runs):

  1 stylegan  (160) a small random StyleGAN3 generator built with NVlabs' code from
                    --stylegan_utils, run by FedKTL-stylegan-3 for one round with the CUDA
                    plugins (reported: built or fell back), then with nvcc hidden and an empty
                    TORCH_EXTENSIONS_DIR: must still finish and print the fallback warning
  2 sd_fp16    (40) a tiny Stable Diffusion pipeline saved as fp16 weights, one round of
                    FedKTL-stable-diffusion --sd_fp16; finite accuracies, UNet/VAE/text
                    encoder in float16 when loaded through the library's loader
  3 offload    (70) two rounds of HtFE8 on 8 clients with and without --offload: equal
                    rs_test_acc, and a lower peak_gpu_mib with --offload
  4 oom        (30) GeneratorAdapter.generate under torch.cuda.set_per_process_memory_fraction
                    so that all latents at once do not fit (a real out-of-memory; simulated,
                    and said so, if none happens): halves, prints its message, and returns
                    what one unchunked call returns
  5 resume     (60) -gr 3 --ckpt_every 1 uninterrupted vs killed (SIGKILL) after its first
                    checkpoint and resumed with --resume: equal rs_test_acc
  6 timing     (90) one HtFE8 FedKTL round, 20 clients, Cifar100-shaped data: median seconds
                    per phase, round seconds and peak GPU memory

Checks 1-5 use sklearn's digits at 16x16 ("Tiny4", "Tiny8": 4 and 8 clients); check 6 the
Cifar100 partition of scripts/communication_table.py with --images_per_class training
images per (client, class). Runs compared for equality (3, 5) use cuDNN's deterministic
kernels and torch.use_deterministic_algorithms(warn_only=True); accuracies must then be
equal element for element, or within ACC_TOLERANCE if torch warned that an op has no
deterministic CUDA implementation. The table is printed at the end and written to
--out/gpu_check.json; runs, logs and data stay under --out/work. Exit status: 0 if every
check that ran passed, 1 otherwise, 2 without CUDA.
"""
import argparse
import contextlib
import glob
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")
for path in (SCRIPTS_DIR, SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

THIS_FILE = os.path.abspath(__file__)
NO_CUDA_MESSAGE = "error: this check needs a CUDA GPU (torch.cuda.is_available() is False)"
#: the whole check's budget on a GPU, seconds (the checks' budgets below sum to less)
TOTAL_BUDGET_S = 470
#: name -> (title, budget in seconds on an H100/H200-class GPU)
CHECKS = {
    "stylegan": ("NVlabs plugins: StyleGAN3, built and forced fallback", 160),
    "sd_fp16": ("Stable Diffusion in float16 (--sd_fp16)", 40),
    "offload": ("--offload equals no offload, lower peak GPU memory", 70),
    "oom": ("generate() halves on CUDA out-of-memory", 30),
    "resume": ("SIGKILL + --resume equals an uninterrupted run", 60),
    "timing": ("one HtFE8 FedKTL round, Cifar100-shaped, 20 clients", 90),
}
#: CPU debugging (--device cpu) is this many times slower, and has no total budget
CPU_BUDGET_SCALE = 10
#: accuracies of runs that should be equal may differ by this much (absolute) only if torch
#: warned that a CUDA op without a deterministic implementation ran
ACC_TOLERANCE = 0.02
#: generate() output vs one unchunked synthesize: kernels differ with the batch size
IMAGE_TOLERANCE = 1e-3
#: GPU memory (MiB) left to generate() above what is in use when the real-OOM check starts
OOM_BUDGET_MIB = 256
NONDETERMINISTIC_WARNING = "does not have a deterministic implementation"
PLUGIN_LINE = re.compile(r'Setting up PyTorch plugin "([^"]+)"\.\.\.\s*(Done\.|Failed!)')
FALLBACK_LINE = re.compile(r"warning: NVlabs' CUDA ops (.+?) could not be built")
STATUSES = ("PASS", "FAIL", "SKIP")


class CheckFailed(Exception):
    """The check ran and found something wrong."""


class CheckSkipped(Exception):
    """The check cannot run here; the message says why."""


# ---- command line ----------------------------------------------------------------------------


def parse_only(text: str) -> list:
    """`--only` as a list of check names in the report's order: names or numbers 1-6,
    comma-separated (spaces allowed); unknown or empty raises argparse.ArgumentTypeError."""
    names = list(CHECKS)
    chosen = set()
    for word in (part.strip() for part in str(text).split(",")):
        if not word:
            continue
        if word.isdigit() and 1 <= int(word) <= len(names):
            chosen.add(names[int(word) - 1])
        elif word.lower() in CHECKS:
            chosen.add(word.lower())
        else:
            raise argparse.ArgumentTypeError(
                f"unknown check {word!r}: choose from {', '.join(names)} (or their numbers 1-{len(names)})")
    if not chosen:
        raise argparse.ArgumentTypeError(f"--only needs at least one of {', '.join(names)}")
    return [name for name in names if name in chosen]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stylegan_utils", default=None, metavar="CLONE",
                   help="a clone of NVlabs/stylegan3 or autonomousvision/stylegan-xl (check 1 is skipped without)")
    p.add_argument("--out", default=os.path.join("results", "gpu_check"),
                   help="folder for gpu_check.json and the runs (default results/gpu_check)")
    p.add_argument("--only", type=parse_only, default=list(CHECKS), metavar="NAMES",
                   help=f"comma-separated subset: {', '.join(CHECKS)} (or 1-{len(CHECKS)})")
    p.add_argument("--images_per_class", type=int, default=10, metavar="N",
                   help="timing check: training images kept per (client, class) of the Cifar100 partition, "
                        "test images half that (default 10: about 1/9 of Cifar100's; the paper's layout "
                        "needs 450)")
    # Debugging the plumbing without a GPU: `--device cpu` runs the checks on the CPU at
    # tiny size, with CPU expectations (no float16, no real out-of-memory, peak GPU 0).
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help=argparse.SUPPRESS)
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_budget", type=float, default=None, help=argparse.SUPPRESS)
    return p


# ---- report ----------------------------------------------------------------------------------


def exit_status(results: list) -> int:
    """0 when every check that ran passed (skipped ones do not count), else 1."""
    return 1 if any(r["status"] != "PASS" and r["status"] != "SKIP" for r in results) else 0


def format_report(results: list, header: str = "", width: int = 100) -> str:
    """The table: one row per check (status, seconds against its budget, what it measured),
    long results wrapped under their row, then the overall line."""
    lines = [header] if header else []
    lines.append(f"{'#':>2}  {'check':<9} {'status':<6} {'seconds':>12}  result")
    indent = " " * 35
    for index, r in enumerate(results, 1):
        seconds = f"{r.get('seconds', 0):.1f}/{r.get('budget_s', 0):.0f}"
        words = (r.get("detail") or "").split()
        rows, current = [], ""
        for word in words:
            if current and len(indent) + len(current) + 1 + len(word) > width:
                rows.append(current)
                current = word
            else:
                current = f"{current} {word}" if current else word
        rows.append(current)
        lines.append(f"{index:>2}  {r['name']:<9} {r['status']:<6} {seconds:>12}  {rows[0]}")
        lines.extend(indent + row for row in rows[1:])
    counts = {status: sum(r["status"] == status for r in results) for status in STATUSES}
    overall = "PASS" if exit_status(results) == 0 else "FAIL"
    total = sum(r.get("seconds", 0) for r in results)
    lines.append(f"overall {overall}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
                 f"in {total:.0f} s")
    return "\n".join(lines)


# ---- running things in child processes -------------------------------------------------------


def tail(text: str, lines: int = 1) -> str:
    kept = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def run_child(command: list, budget_s: float, log_path: str, result_path: str, env=None) -> dict:
    """Run `command` in its own process group with stdout+stderr to `log_path`, SIGKILLing the
    group after `budget_s`; the child writes {"status", "detail", "figures"} to `result_path`.
    Returns that dict with "seconds" added, or a FAIL saying what went wrong."""
    if os.path.exists(result_path):
        os.remove(result_path)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                   start_new_session=True)
        try:
            process.wait(timeout=budget_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    seconds = time.perf_counter() - start
    result = None
    if os.path.exists(result_path):
        with contextlib.suppress(ValueError, OSError):
            with open(result_path) as f:
                result = json.load(f)
    if timed_out:
        figures = (result or {}).get("figures", {})
        result = {"status": "FAIL", "figures": figures,
                  "detail": f"exceeded its budget of {budget_s:.0f} s and was killed (log {log_path})"}
    elif result is None:
        with open(log_path) as f:
            last = tail(f.read(), 2)
        result = {"status": "FAIL", "figures": {},
                  "detail": f"exited with {process.returncode} without a result: {last} (log {log_path})"}
    result["seconds"] = round(seconds, 1)
    return result


class MainRun:
    """One main.py run: exit code, combined output, its series (None if it failed), seconds."""

    def __init__(self, argv, returncode, output, series, seconds, log_path):
        self.argv, self.returncode, self.output, self.series = argv, returncode, output, series
        self.seconds, self.log_path = seconds, log_path

    @property
    def command(self) -> str:
        return "python system/main.py " + shlex.join(self.argv)

    def require(self, what: str) -> dict:
        if self.returncode != 0 or self.series is None:
            raise CheckFailed(f"{what} exited with {self.returncode}: {tail(self.output, 2)} (log {self.log_path})")
        return self.series


def _jsonable(value):
    import numpy as np

    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return np.asarray(value, dtype=float).tolist()


def wrapped_main(argv: list) -> int:
    """`gpu_check.py --_main SERIES_JSON [--_deterministic] -- MAIN_FLAGS`: main.py's run (via
    benchmark_round.run_and_read_series), its first repetition's series written as JSON."""
    series_path, rest = argv[0], argv[1:]
    deterministic = rest[:1] == ["--_deterministic"]
    rest = rest[1:] if deterministic else rest
    rest = rest[1:] if rest[:1] == ["--"] else rest
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
        import torch

        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    from benchmark_round import run_and_read_series

    series = run_and_read_series(rest)
    with open(series_path + ".tmp", "w") as f:
        json.dump(_jsonable(series), f)
    os.replace(series_path + ".tmp", series_path)
    return 0


class Context:
    """What a check gets: its work folder, the device, its deadline, the options, and
    `figures`, where it records what it measures (kept even when it fails)."""

    def __init__(self, name: str, options, budget_s: float):
        self.name = name
        self.options = options
        self.device = options.device
        self.cuda = options.device == "cuda"
        self.out = os.path.abspath(options.out)
        self.work = os.path.join(self.out, "work", name)
        self.data_root = os.path.join(self.out, "work", "data")
        self.deadline = time.monotonic() + budget_s - 2.0  # leave time to write the result
        self.figures = {}
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(self.data_root, exist_ok=True)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise CheckFailed("ran out of its time budget")
        return left

    def main_command(self, label: str, argv: list, deterministic: bool = False) -> tuple:
        series_path = os.path.join(self.work, label + ".series.json")
        if os.path.exists(series_path):
            os.remove(series_path)
        command = [sys.executable, THIS_FILE, "--_main", series_path]
        if deterministic:
            command.append("--_deterministic")
        return command + ["--", *argv], series_path, os.path.join(self.work, label + ".log")

    def run_main(self, label: str, argv: list, deterministic: bool = False, env: dict = None) -> MainRun:
        """main.py with `argv` (plus `--out WORK/label` unless given) in a fresh process."""
        if "--out" not in argv:
            argv = [*argv, "--out", os.path.join(self.work, label)]
        command, series_path, log_path = self.main_command(label, argv, deterministic)
        start = time.perf_counter()
        with open(log_path, "w") as log:
            try:
                done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                      env=env, timeout=self.remaining())
                returncode = done.returncode
            except subprocess.TimeoutExpired:
                returncode = "timeout"
        with open(log_path) as f:
            output = f.read()
        series = None
        if returncode == 0 and os.path.exists(series_path):
            with open(series_path) as f:
                series = json.load(f)
        run = MainRun(argv, returncode, output, series, time.perf_counter() - start, log_path)
        self.figures.setdefault("commands", {})[label] = run.command
        if returncode == "timeout":
            raise CheckFailed(f"{label} run ran out of the check's time budget (log {log_path})")
        return run


# ---- data ------------------------------------------------------------------------------------


def tiny_dataset(data_root: str, num_clients: int) -> str:
    """sklearn's 8x8 digits upsampled to 16x16, 3 channels, Dirichlet 0.5 over `num_clients`,
    written with the library's dataset code; returns the dataset's name under `data_root`."""
    name = f"Tiny{num_clients}"
    folder = os.path.join(data_root, name)
    if os.path.exists(os.path.join(folder, "config.json")):  # written last: the folder is complete
        return name
    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from dataset.generate_common import build_dataset

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = (x.repeat(1, 3, 1, 1) - 0.5) / 0.5
    build_dataset(folder, x.numpy().astype(np.float32), digits.target.astype(np.int64),
                  [str(i) for i in range(10)], num_clients=num_clients, niid=True, balance=False,
                  partition_name="dir", alpha=0.5, class_per_client=2, seed=0)
    return name


def cifar100_shaped_dataset(data_root: str, train_per_class: int) -> str:
    """communication_table.write_shaped_dataset's data (Cifar100's real Dirichlet-0.1 partition
    over 20 clients, random 3x32x32 pixels) with `train_per_class` training and half as many
    test images per (client, class) instead of its 2 and 1."""
    name = f"Cifar100Shaped{train_per_class}"
    folder = os.path.join(data_root, name)
    if os.path.exists(os.path.join(folder, "config.json")):
        return name
    import communication_table

    test_per_class = max(1, train_per_class // 2)
    # write_shaped_dataset thins each client's split with keep_per_class(..., 2) for training
    # and (..., 1) for testing; the same writer with other limits:
    original = communication_table.keep_per_class
    limits = {2: train_per_class, 1: test_per_class}
    communication_table.keep_per_class = lambda idx, labels, limit: original(idx, labels, limits.get(limit, limit))
    try:
        communication_table.write_shaped_dataset(folder)
    finally:
        communication_table.keep_per_class = original
    return name


def tiny_flags(ctx: Context, num_clients: int = 4) -> list:
    return ["-data", tiny_dataset(ctx.data_root, num_clients), "--data_root", ctx.data_root,
            "-nc", str(num_clients), "-se", "10", "--save_generated_every", "0", "-dev", ctx.device]


def finite_accuracies(series: dict, what: str) -> list:
    values = [float(v) for v in series["rs_test_acc"]]
    if not values or not all(math.isfinite(v) for v in values):
        raise CheckFailed(f"{what}: rs_test_acc not finite: {values}")
    return values


def compare_accuracies(expected: list, got: list, output: str) -> tuple:
    """(ok, how): equal element for element, or within ACC_TOLERANCE when torch warned about
    a nondeterministic CUDA op in `output`."""
    if len(expected) != len(got):
        return False, f"{len(got)} evaluations instead of {len(expected)}"
    diff = max((abs(a - b) for a, b in zip(expected, got)), default=0.0)
    if diff == 0:
        return True, f"rs_test_acc equal element for element ({len(got)} values)"
    if NONDETERMINISTIC_WARNING in output and diff <= ACC_TOLERANCE:
        return True, (f"rs_test_acc within {ACC_TOLERANCE} (max abs diff {diff:.4f}; torch reported an op "
                      f"without a deterministic CUDA implementation)")
    return False, f"rs_test_acc differs: max abs diff {diff:.4f} ({expected} vs {got})"


# ---- the checks ------------------------------------------------------------------------------

BUILD_STYLEGAN3 = """
import os, pickle, sys
clone, path, system_dir = sys.argv[1:4]
sys.path[:0] = [clone, system_dir]
os.chdir(clone)  # StyleGAN-XL's mapping network reads in_embeddings/ from the working directory
from flcore.generators.stylegan_pickle import provide_pkg_resources
provide_pkg_resources()  # NVlabs' torch_utils imports pkg_resources, gone from recent setuptools
import torch
torch.manual_seed(0)
from training.networks_stylegan3 import Generator
G = Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3,
              channel_base=2048, channel_max=64).eval().requires_grad_(False)
with open(path, "wb") as f:
    pickle.dump({"G_ema": G}, f)
print(f"w_dim {G.w_dim} num_ws {G.num_ws} resolution {G.img_resolution} "
      f"parameters {sum(p.numel() for p in G.parameters())}")
"""


def without_nvcc_env(work: str) -> dict:
    """The environment with no CUDA compiler to be found: PATH without the folders that hold
    nvcc, CUDA_HOME/CUDA_PATH an empty folder (torch looks there before PATH), and an empty
    TORCH_EXTENSIONS_DIR so no plugin built earlier is reused."""
    env = dict(os.environ)
    folders = [d for d in env.get("PATH", "").split(os.pathsep)
               if d and not os.path.exists(os.path.join(d, "nvcc"))]
    env["PATH"] = os.pathsep.join(folders)
    empty_cuda = tempfile.mkdtemp(prefix="no_cuda_home_", dir=work)
    env["CUDA_HOME"] = env["CUDA_PATH"] = empty_cuda
    env["TORCH_EXTENSIONS_DIR"] = tempfile.mkdtemp(prefix="torch_extensions_", dir=work)
    return env


def plugin_report(output: str) -> tuple:
    """(plugins built, plugins failed, ops named by the library's fallback warning)."""
    built = sorted({m.group(1) for m in PLUGIN_LINE.finditer(output) if m.group(2) == "Done."})
    failed = sorted({m.group(1) for m in PLUGIN_LINE.finditer(output) if m.group(2) != "Done."})
    fallback = FALLBACK_LINE.search(output)
    return built, failed, ([op.strip() for op in fallback.group(1).split(",")] if fallback else [])


def check_stylegan(ctx: Context) -> str:
    clone = ctx.options.stylegan_utils
    if not clone:
        raise CheckSkipped("needs --stylegan_utils CLONE (a clone of NVlabs/stylegan3 or autonomousvision/stylegan-xl)")
    clone = os.path.abspath(os.path.expanduser(clone))
    network = os.path.join(clone, "training", "networks_stylegan3.py")
    if not (os.path.isdir(os.path.join(clone, "torch_utils")) and os.path.exists(network)):
        raise CheckFailed(f"--stylegan_utils {clone} has no torch_utils/ or training/networks_stylegan3.py: "
                          f"give a stylegan3 or stylegan-xl clone")
    pickle_path = os.path.join(ctx.work, "stylegan3_tiny.pkl")
    built = subprocess.run([sys.executable, "-c", BUILD_STYLEGAN3, clone, pickle_path, SYSTEM_DIR],
                           capture_output=True, text=True, timeout=min(120, ctx.remaining()))
    if built.returncode != 0:
        raise CheckFailed(f"building a StyleGAN3 generator with {clone} failed: {tail(built.stderr, 2)}")
    ctx.figures["generator"] = tail(built.stdout)
    argv = tiny_flags(ctx) + ["-algo", "FedKTL-stylegan-3", "-GPath", pickle_path, "--stylegan_utils", clone,
                              "-gr", "1"]
    fast = ctx.run_main("plugins", argv)
    fast_series = fast.require("the run with NVlabs' plugins")
    fast_acc = finite_accuracies(fast_series, "the run with NVlabs' plugins")
    plugins, plugin_failures, fast_fallback = plugin_report(fast.output)
    ctx.figures.update(plugins_built=plugins, plugins_failed=plugin_failures, fallback_ops=fast_fallback,
                       fast_rs_test_acc=fast_acc, fast_round_seconds=fast_series["round_seconds"])
    forced = ctx.run_main("fallback", argv, env=without_nvcc_env(ctx.work))
    forced_series = forced.require("the run without nvcc")
    forced_acc = finite_accuracies(forced_series, "the run without nvcc")
    _, _, forced_fallback = plugin_report(forced.output)
    ctx.figures.update(forced_fallback_ops=forced_fallback, forced_rs_test_acc=forced_acc,
                       forced_round_seconds=forced_series["round_seconds"])
    seconds = f"round {max(fast_series['round_seconds']):.1f} s vs {max(forced_series['round_seconds']):.1f} s"
    if not ctx.cuda:  # NVlabs' ops take their reference path off CUDA: nothing to build or warn about
        if forced_fallback:
            raise CheckFailed(f"fallback warning printed on the CPU: {forced_fallback}")
        return f"CPU: both runs finished, no plugins, no warning ({seconds})"
    if not forced_fallback:
        raise CheckFailed(f"the run without nvcc finished but printed no fallback warning (log {forced.log_path})")
    if fast_fallback:
        state = f"fast plugins NOT built (fell back: {', '.join(fast_fallback)}; log {fast.log_path})"
    else:
        state = f"fast plugins built ({', '.join(plugins) or 'cached'})"
    return (f"{state}; without nvcc: finished, warning names {', '.join(forced_fallback)}; {seconds} "
            f"(plugins vs fallback)")


def save_fp16_pipeline(folder: str) -> str:
    import inspect

    import torch

    from tiny_diffusion import build_tiny_stable_diffusion, save_tiny_stable_diffusion

    if "variant" in inspect.signature(save_tiny_stable_diffusion).parameters:
        return save_tiny_stable_diffusion(folder, variant="fp16")
    pipe = build_tiny_stable_diffusion()
    pipe.to(torch.float16)
    pipe.save_pretrained(folder, variant="fp16")
    return folder


def check_sd_fp16(ctx: Context) -> str:
    import torch

    import main
    from flcore.generators.registry import load_generator

    folder = save_fp16_pipeline(os.path.join(ctx.work, "tiny_sd_fp16"))
    fp16_files = sorted(os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "*", "*.fp16.*")))
    ctx.figures["fp16_weight_files"] = fp16_files
    if not fp16_files:
        raise CheckFailed(f"save_pretrained(variant='fp16') wrote no *.fp16.* weights in {folder}")
    argv = tiny_flags(ctx) + ["-algo", "FedKTL-stable-diffusion", "-GPath", folder, "--sd_fp16", "--sd_steps", "2",
                              "-gr", "1"]
    run = ctx.run_main("sd_fp16", argv)
    accuracies = finite_accuracies(run.require("the --sd_fp16 run"), "the --sd_fp16 run")
    ctx.figures.update(rs_test_acc=accuracies, round_seconds=run.series["round_seconds"],
                       peak_gpu_mib=max(run.series["peak_gpu_mib"]))
    if ctx.cuda and "--sd_fp16 needs CUDA" in run.output:
        raise CheckFailed("the run fell back to float32 (--sd_fp16 needs CUDA)")
    args = main.parse_args(argv + ["--out", os.path.join(ctx.work, "loader")])
    adapter = load_generator("stable-diffusion", args, ctx.device)
    dtypes = {part: str(getattr(adapter.pipe, part).dtype).replace("torch.", "")
              for part in ("unet", "vae", "text_encoder")}
    ctx.figures["dtypes"] = dtypes
    expected = "float16" if ctx.cuda else "float32"
    if set(dtypes.values()) != {expected}:
        raise CheckFailed(f"loaded pipeline dtypes {dtypes}, expected {expected} throughout")
    images = adapter.synthesize(adapter.sample_latents(2, torch.Generator().manual_seed(0)))
    ctx.figures["images"] = f"{tuple(images.shape)} {str(images.dtype).replace('torch.', '')}"
    if not bool(torch.isfinite(images).all()):
        raise CheckFailed(f"float16 synthesis gave non-finite images ({ctx.figures['images']})")
    return (f"acc {', '.join(f'{a:.3f}' for a in accuracies)} finite; unet/vae/text encoder {expected}; "
            f"images {ctx.figures['images']} finite; peak GPU {ctx.figures['peak_gpu_mib']:.0f} MiB")


def check_offload(ctx: Context) -> str:
    if ctx.cuda:  # eight big clients, so that parking the idle ones matters
        argv = tiny_flags(ctx, 8) + ["-m", "HtFE8", "-gr", "2"]
    else:
        argv = tiny_flags(ctx, 4) + ["-gr", "2"]
    plain = ctx.run_main("resident", argv, deterministic=True)
    plain_acc = finite_accuracies(plain.require("the run without --offload"), "the run without --offload")
    parked = ctx.run_main("offload", argv + ["--offload"], deterministic=True)
    parked_acc = finite_accuracies(parked.require("the --offload run"), "the --offload run")
    peaks = (max(plain.series["peak_gpu_mib"]), max(parked.series["peak_gpu_mib"]))
    ctx.figures.update(rs_test_acc=plain_acc, offload_rs_test_acc=parked_acc, peak_gpu_mib=peaks[0],
                       offload_peak_gpu_mib=peaks[1], seconds=[round(plain.seconds, 1), round(parked.seconds, 1)])
    ok, how = compare_accuracies(plain_acc, parked_acc, plain.output + parked.output)
    if not ok:
        raise CheckFailed(f"--offload changed the run: {how}")
    memory = f"peak GPU {peaks[0]:.0f} -> {peaks[1]:.0f} MiB with --offload"
    if ctx.cuda and not peaks[1] < peaks[0]:
        raise CheckFailed(f"{how}, but --offload did not lower the peak: {memory}")
    return f"{how}; {memory}"


def _unit_finish(images):
    import torch.nn.functional as F

    # what the server does to generated images: the clients' size, normalised
    return (F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False) - 0.5) / 0.5


def generate_capturing(adapter, latents, batch_size: int = 0) -> tuple:
    """(adapter.generate(latents, finish, batch_size), the out-of-memory lines it printed)."""
    from flcore.generators import base

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = adapter.generate(latents, _unit_finish, batch_size=batch_size)
    marker = base.OOM_MESSAGE.partition("{size}")[0].replace("{stage}", "").strip()  # "ran out of ... with"
    messages = [line for line in buffer.getvalue().splitlines() if marker in line]
    return result, messages


def real_oom(ctx: Context, adapter, torch) -> tuple:
    """generate() with the process limited to what is in use plus OOM_BUDGET_MIB, on enough
    latents to need about four times that: (latents, result, messages, final chunk size)."""
    probe = adapter.sample_latents(64, torch.Generator().manual_seed(1))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    _unit_finish(adapter.synthesize(probe))
    torch.cuda.synchronize()
    per_image = max(1, torch.cuda.max_memory_allocated() - before) / len(probe)
    budget = OOM_BUDGET_MIB * 2**20
    n = int(min(65536, max(256, math.ceil(4 * budget / per_image))))
    latents = adapter.sample_latents(n, torch.Generator().manual_seed(0))
    del probe
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    fraction = (torch.cuda.memory_reserved() + budget) / total
    ctx.figures.update(latents=n, per_image_mib=round(per_image / 2**20, 3), limit_mib=round(fraction * total / 2**20),
                       all_at_once_mib=round(n * per_image / 2**20))
    adapter.auto_batch_size = None
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        result, messages = generate_capturing(adapter, latents)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    return latents, result, messages, adapter.auto_batch_size


def simulated_oom(adapter, torch, n: int = 64, fits: int = 12) -> tuple:
    """generate() with synthesize raising torch.cuda.OutOfMemoryError above `fits` latents."""
    real_synthesize = adapter.synthesize

    def synthesize(latents):
        if len(latents) > fits:
            raise torch.cuda.OutOfMemoryError(f"simulated: {len(latents)} images per call do not fit ({fits} do)")
        return real_synthesize(latents)

    latents = adapter.sample_latents(n, torch.Generator().manual_seed(0))
    adapter.auto_batch_size = None
    adapter.synthesize = synthesize
    try:
        result, messages = generate_capturing(adapter, latents)
    finally:
        del adapter.synthesize  # back to the class's method
    return latents, result, messages, adapter.auto_batch_size


def check_oom(ctx: Context) -> str:
    import torch

    import main
    from flcore.generators.registry import load_generator

    args = main.parse_args(["-dev", ctx.device, "--out", ctx.work])
    adapter = load_generator("builtin", args, ctx.device)
    how = "simulated"
    latents = result = None
    if ctx.cuda:
        latents, result, messages, size = real_oom(ctx, adapter, torch)
        if messages:
            how = "real"
        else:
            ctx.figures["real_oom"] = "no out-of-memory under the limit: fell back to a simulated one"
    if how == "simulated":
        latents, result, messages, size = simulated_oom(adapter, torch)
    ctx.figures.update(oom=how, messages=messages[:3], halvings=len(messages), final_batch=size)
    if not messages:
        raise CheckFailed(f"{how} out-of-memory: generate() printed no halving message")
    with torch.no_grad():
        expected = _unit_finish(adapter.synthesize(latents)).cpu()  # one unchunked call, no limit
    if result.shape != expected.shape:
        raise CheckFailed(f"generate() returned {tuple(result.shape)}, one call {tuple(expected.shape)}")
    diff = float((result - expected).abs().max())
    ctx.figures["max_abs_diff"] = diff
    if not diff <= IMAGE_TOLERANCE:
        raise CheckFailed(f"chunked result differs from the unchunked one: max abs diff {diff:.2e}")
    equal = "equal to" if diff == 0 else f"within {IMAGE_TOLERANCE} of (max abs diff {diff:.1e})"
    return (f"{how} OOM ({len(latents)} latents): {len(messages)} halving(s) to {size} per call, message "
            f"printed; result {equal} one unchunked call")


def check_resume(ctx: Context) -> str:
    from utils.checkpoints import PATTERN
    from utils.result_utils import read_results, result_name

    argv = tiny_flags(ctx) + ["-gr", "3", "--ckpt_every", "1"]
    whole = ctx.run_main("uninterrupted", argv, deterministic=True)
    expected = finite_accuracies(whole.require("the uninterrupted run"), "the uninterrupted run")
    ctx.figures["rs_test_acc"] = expected

    out = os.path.join(ctx.work, "interrupted")
    shutil.rmtree(out, ignore_errors=True)
    killed_argv = argv + ["--out", out]
    command, _, log_path = ctx.main_command("killed", killed_argv, deterministic=True)
    name = result_name(argv[argv.index("-data") + 1], "FedKTL", "test", 0)
    folder = os.path.join(out, name, "checkpoints")
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        found = []
        try:
            while process.poll() is None and time.monotonic() < ctx.deadline:
                found = [f for f in (os.listdir(folder) if os.path.isdir(folder) else []) if PATTERN.match(f)]
                if found:
                    process.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.02)
        finally:
            if process.poll() is None and not found:
                process.kill()
            process.wait()
    if not found:
        raise CheckFailed(f"no checkpoint appeared before the run ended (exit {process.returncode}; log {log_path})")
    ctx.figures["killed_after"] = found[0]
    partial_h5 = os.path.join(out, name + ".h5")
    prefix = [float(v) for v in read_results(partial_h5)[0]["rs_test_acc"]] if os.path.exists(partial_h5) else []
    ctx.figures["killed_run_rs_test_acc"] = prefix

    resumed = ctx.run_main("resumed", killed_argv + ["--resume"], deterministic=True)
    got = finite_accuracies(resumed.require("the resumed run"), "the resumed run")
    ctx.figures["resumed_rs_test_acc"] = got
    after = re.search(r"resuming after round (\d+)", resumed.output)
    if not after:
        raise CheckFailed(f"the --resume run did not resume from a checkpoint (log {resumed.log_path})")
    rerun_diff = max((abs(a - b) for a, b in zip(prefix, expected)), default=0.0)
    ctx.figures["rerun_prefix_max_abs_diff"] = rerun_diff
    ok, how = compare_accuracies(expected, got, whole.output + resumed.output)
    if not ok:
        raise CheckFailed(f"killed at {found[0]}, resumed after round {after.group(1)}: {how} (the killed "
                          f"run's first {len(prefix)} evaluations differ from the uninterrupted run's by "
                          f"{rerun_diff:.4f})")
    return f"killed at {found[0]}, resumed after round {after.group(1)}: {how}"


def check_timing(ctx: Context) -> str:
    from benchmark_round import PHASES, median_after_first

    per_class = ctx.options.images_per_class if ctx.cuda else min(ctx.options.images_per_class, 2)
    name = cifar100_shaped_dataset(ctx.data_root, per_class)
    family = "HtFE8" if ctx.cuda else "HtFE-cpu"  # the CPU run only proves the plumbing
    argv = ["-algo", "FedKTL", "-data", name, "--data_root", ctx.data_root, "-nb", "100", "-m", family,
            "-fd", "512", "-nc", "20", "-gr", "2", "-dev", ctx.device, "--save_generated_every", "0"]
    run = ctx.run_main("timing", argv)
    series = run.require("the timing run")
    finite_accuracies(series, "the timing run")
    with open(os.path.join(ctx.data_root, name, "config.json")) as f:
        counts = json.load(f)["Size of samples for labels in clients"]
    phases = {phase: round(median_after_first(series["phase_seconds"][phase]), 3)
              for phase in PHASES if phase in series["phase_seconds"]}
    round_s = median_after_first(series["round_seconds"])
    peak = max(series["peak_gpu_mib"])
    ctx.figures.update(model_family=family, images_per_class=per_class,
                       images=int(sum(count for client in counts for _, count in client)),
                       round_seconds=round(round_s, 3), phase_seconds=phases, peak_gpu_mib=round(peak),
                       rs_test_acc=series["rs_test_acc"])
    shown = ", ".join(f"{phase} {seconds:.2f}" for phase, seconds in phases.items())
    return (f"{family}, {ctx.figures['images']} images: round {round_s:.2f} s median of rounds 1.. ({shown}); "
            f"peak GPU {peak:.0f} MiB")


CHECK_FUNCTIONS = {"stylegan": check_stylegan, "sd_fp16": check_sd_fp16, "offload": check_offload,
                   "oom": check_oom, "resume": check_resume, "timing": check_timing}


def run_check_here(name: str, options, budget_s: float) -> dict:
    """Run one check in this process: PASS with its detail, SKIP or FAIL with the reason."""
    ctx = Context(name, options, budget_s)
    try:
        detail = CHECK_FUNCTIONS[name](ctx)
        status = "PASS"
    except CheckSkipped as exc:
        status, detail = "SKIP", str(exc)
    except CheckFailed as exc:
        status, detail = "FAIL", str(exc)
    except Exception as exc:  # a crash is this check's failure, not the script's
        traceback.print_exc()
        status, detail = "FAIL", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return {"status": status, "detail": detail, "figures": ctx.figures}


# ---- driver ----------------------------------------------------------------------------------


def child_main(options) -> int:
    result = run_check_here(options._child, options, options._budget)
    with open(options._result + ".tmp", "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(options._result + ".tmp", options._result)
    print(f"{options._child}: {result['status']}: {result['detail']}")
    return 0


def child_command(name: str, options, budget_s: float, result_path: str) -> list:
    command = [sys.executable, THIS_FILE, "--_child", name, "--_result", result_path, "--_budget", str(budget_s),
               "--out", options.out, "--device", options.device, "--images_per_class", str(options.images_per_class)]
    if options.stylegan_utils:
        command += ["--stylegan_utils", options.stylegan_utils]
    return command


def describe_device(options) -> str:
    import torch

    if options.device != "cuda":
        return f"CPU debugging run (--device cpu), torch {torch.__version__}"
    properties = torch.cuda.get_device_properties(0)
    return (f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--_main"]:
        return wrapped_main(argv[1:])
    parser = build_parser()
    options = parser.parse_args(argv)
    if options.images_per_class < 1:
        parser.error("--images_per_class must be at least 1")
    options.out = os.path.abspath(options.out)
    if options._child:
        return child_main(options)
    import torch

    if options.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    scale = 1 if options.device == "cuda" else CPU_BUDGET_SCALE
    total_budget = TOTAL_BUDGET_S * scale
    work = os.path.join(options.out, "work")
    os.makedirs(work, exist_ok=True)
    header = f"gpu_check on {describe_device(options)}"
    print(header, flush=True)
    started = time.monotonic()
    results = []
    for index, name in enumerate(options.only, 1):
        title, budget = CHECKS[name]
        budget = budget * scale
        left = total_budget - (time.monotonic() - started)
        record = {"name": name, "title": title, "budget_s": budget}
        if left < min(budget, 15 * scale):
            record.update(status="SKIP", seconds=0.0, figures={},
                          detail=f"not started: {left:.0f} s left of the {total_budget} s total budget")
        else:
            budget = min(budget, left)
            record["budget_s"] = budget
            print(f"[{index}/{len(options.only)}] {name}: {title} (budget {budget:.0f} s) ...", flush=True)
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)  # runs of an earlier check
            log_path = os.path.join(work, f"{name}.log")
            result_path = os.path.join(work, f"{name}.result.json")
            record.update(run_child(child_command(name, options, budget, result_path), budget, log_path, result_path))
            record["log"] = log_path
        results.append(record)
        print(f"      {record['status']} in {record['seconds']:.1f} s: {record['detail']}", flush=True)
    status = exit_status(results)
    report = format_report(results, header=f"\n{header}")
    print(report)
    path = os.path.join(options.out, "gpu_check.json")
    with open(path, "w") as f:
        json.dump({"device": describe_device(options), "total_seconds": round(time.monotonic() - started, 1),
                   "exit_status": status, "checks": results}, f, indent=1, default=str)
    print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
