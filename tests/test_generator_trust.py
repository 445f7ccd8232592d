"""Generator files are loaded, and NVlabs folders put on sys.path, only when the user names
them: nothing planted at a default path is ever executed, and named paths that do not
exist are refused before any data is loaded."""
import os
import pickle
import subprocess
import sys
import textwrap

import pytest

from cli import apply_algorithm_defaults, parse_args
from flcore.registry import ALGORITHMS, get_server_class, get_spec
from tests.helpers import make_stylegan_pickle, make_stylegan_utils, write_files
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, "system", "main.py")
#: flags that name a file to unpickle, weights to load or a folder to import from
TRUSTED_FLAGS = ("generator_path", "stylegan_utils", "prompt_model")


class Marker:
    """Unpickling this creates the file `path` (as a hostile pickle could run anything)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def plant_pickle(path, marker):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(Marker(str(marker)), f)


def plant_utils(folder, marker):
    """A `torch_utils` package whose import creates `marker`."""
    return write_files(str(folder), {"torch_utils/__init__.py": f"open({str(marker)!r}, 'w').close()\n",
                                     "dnnlib/__init__.py": ""})


def run_main(cwd, *flags):
    return subprocess.run([sys.executable, MAIN, "-dev", "cpu", "-nc", "4", "-gr", "1", *flags],
                          capture_output=True, text=True, cwd=str(cwd), timeout=600)


def assert_one_error_line(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def tiny_stylegan(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_stylegan")
    utils = make_stylegan_utils(str(root / "utils"))
    return utils, make_stylegan_pickle(utils, str(root / "sg3.pkl"))


# ---- defaults ----------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_no_algorithm_defaults_a_path_that_is_loaded(algorithm):
    get_server_class(algorithm)
    assert not set(TRUSTED_FLAGS) & {dest for dest, value in get_spec(algorithm).option_defaults.items()
                                      if value is not None}
    args = parse_args(["-algo", algorithm])
    apply_algorithm_defaults(args)
    assert all(getattr(args, flag, None) is None for flag in TRUSTED_FLAGS)


# ---- planted files in the working directory ------------------------------------------------------

def test_planted_stylegan_xl_pickle_is_never_unpickled(tmp_path, data_root):
    marker = tmp_path / "marker"
    plant_pickle(str(tmp_path / "stylegan" / "stylegan-xl-models" / "imagenet64.pkl"), marker)
    result = run_main(tmp_path, "-algo", "FedKTL-stylegan-xl", "-data", "Tiny", "--data_root", data_root,
                      "--out", str(tmp_path / "out"))
    assert not marker.exists()
    err = assert_one_error_line(result, "needs -GPath", "stylegan/stylegan-xl-models/imagenet64.pkl",
                                "stylegan/download_weights.sh")
    assert "--stylegan_utils stylegan/stylegan-utils" in err
    assert "loading StyleGAN network pickle" not in result.stdout


def test_planted_stable_diffusion_folder_is_never_loaded(tmp_path, data_root):
    write_files(str(tmp_path / "stable-diffusion" / "v1.5"), {"model_index.json": "{}"})
    result = run_main(tmp_path, "-algo", "FedKTL-stable-diffusion", "-data", "Tiny", "--data_root", data_root,
                      "--out", str(tmp_path / "out"))
    assert_one_error_line(result, "needs -GPath", "-GPath stable-diffusion/v1.5",
                          "python stable-diffusion/download_weights.py")
    assert "loading Stable Diffusion pipeline" not in result.stdout


def test_planted_stylegan_utils_in_the_working_directory_is_never_imported(tmp_path, data_root, tiny_stylegan):
    _, pickle_path = tiny_stylegan
    marker = tmp_path / "marker"
    plant_utils(tmp_path / "stylegan" / "stylegan-utils", marker)
    result = run_main(tmp_path, "-algo", "FedKTL-stylegan-3", "-GPath", pickle_path, "-data", "Tiny",
                      "--data_root", data_root, "--out", str(tmp_path / "out"))
    assert not marker.exists()
    assert_one_error_line(result, "torch_utils", "--stylegan_utils")
    assert f"loading StyleGAN network pickle {pickle_path}\n" in result.stdout


# Loads a pickle without --stylegan_utils in a fresh process (so no torch_utils is imported
# yet), with the repository root moved to a folder holding a hostile stylegan/stylegan-utils.
LOAD_WITHOUT_UTILS = textwrap.dedent("""
    import sys
    sys.path[:0] = [sys.argv[1]]
    from flcore.generators import stylegan_pickle
    from utils.errors import UserError
    stylegan_pickle.REPO_ROOT = sys.argv[2]
    try:
        stylegan_pickle.load_stylegan_pickle(sys.argv[3], None)
    except UserError as error:
        print(error)
""")


def test_repository_stylegan_utils_is_suggested_but_never_imported(tmp_path, tiny_stylegan):
    _, pickle_path = tiny_stylegan
    marker = tmp_path / "marker"
    repository = tmp_path / "repository"
    clone = plant_utils(repository / "stylegan" / "stylegan-utils", marker)
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_UTILS, os.path.join(ROOT, "system"),
                           str(repository), pickle_path], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    message = done.stdout.strip().splitlines()[-1]
    assert "no --stylegan_utils was given" in message and f"pass --stylegan_utils {clone} " in message


# ---- named paths: checked before the data is loaded ----------------------------------------------

@pytest.mark.parametrize("algorithm,flags,expected", [
    ("FedKTL-stylegan-3", ["-GPath", "missing.pkl"], "-GPath 'missing.pkl' does not exist"),
    ("FedKTL-stylegan-xl", ["-GPath", "missing.pkl"], "-GPath 'missing.pkl' does not exist"),
    ("FedKTL-stable-diffusion", ["-GPath", "missing-sd"], "-GPath 'missing-sd' does not exist"),
    ("FedKTL-stable-diffusion", [], "FedKTL-stable-diffusion needs -GPath"),
    ("FedKTL-stylegan-3", [], "FedKTL-stylegan-3 needs -GPath"),
    ("FedKTL", ["-GPath", "missing.pt"], "-GPath 'missing.pt' does not exist"),
    ("GPT-FL", ["-GPath", "missing-sd"], "-GPath 'missing-sd' does not exist"),
    ("GPT-FL", ["--prompt_model", "missing-t5"], "--prompt_model 'missing-t5' does not exist"),
])
def test_missing_named_paths_are_refused_before_the_data_is_loaded(tmp_path, monkeypatch, capsys, algorithm, flags,
                                                                  expected):
    import main

    monkeypatch.chdir(tmp_path)
    # The data root does not exist either: the error must still be about the path.
    assert main.main(["-dev", "cpu", "-algo", algorithm, *flags, "-data", "Tiny", "--data_root",
                      str(tmp_path / "no-data-here"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err


def test_named_stylegan_utils_and_kinds_of_paths_are_checked_before_the_data(tmp_path, tiny_stylegan):
    _, pickle_path = tiny_stylegan
    no_data = ["-data", "Tiny", "--data_root", str(tmp_path / "no-data-here"), "--out", str(tmp_path / "out")]
    result = run_main(tmp_path, "-algo", "FedKTL-stylegan-3", "-GPath", pickle_path, "--stylegan_utils",
                      "missing-utils", *no_data)
    assert_one_error_line(result, "--stylegan_utils 'missing-utils' is not a folder")
    (tmp_path / "folder").mkdir()
    result = run_main(tmp_path, "-algo", "FedKTL-stylegan-3", "-GPath", "folder", *no_data)
    assert_one_error_line(result, "-GPath 'folder' is a folder")
    result = run_main(tmp_path, "-algo", "FedKTL-stable-diffusion", "-GPath", pickle_path, *no_data)
    assert_one_error_line(result, "is a file: give the Stable Diffusion folder")


def test_named_paths_fall_back_to_the_repository_root(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from flcore.generators import paths, registry

    write_files(str(tmp_path / "repository"), {"stylegan/G.pkl": "x"})
    monkeypatch.setattr(paths, "REPO_ROOT", str(tmp_path / "repository"))
    monkeypatch.chdir(tmp_path)  # e.g. `cd system` before running a line of run_me.sh
    args = SimpleNamespace(algorithm="FedKTL-stylegan-3", generator_path="stylegan/G.pkl", stylegan_utils=None)
    registry.check_generator_flags("stylegan", args, "stylegan/G.pkl")
    args.generator_path = "stylegan/none.pkl"
    with pytest.raises(UserError, match="does not exist"):
        registry.check_generator_flags("stylegan", args, "stylegan/G.pkl")


def test_the_loaded_pickle_is_named_by_its_absolute_path(tiny_stylegan, tmp_path, monkeypatch, capsys):
    from flcore.generators.stylegan_pickle import load_stylegan_pickle

    utils, pickle_path = tiny_stylegan
    monkeypatch.chdir(os.path.dirname(pickle_path))
    G = load_stylegan_pickle(os.path.basename(pickle_path), utils)
    assert G.w_dim == 24
    assert capsys.readouterr().out == (f"loading StyleGAN network pickle {pickle_path} with NVlabs' code from "
                                       f"{os.path.abspath(utils)}\n")
