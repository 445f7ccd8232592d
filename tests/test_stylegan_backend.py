"""StyleGAN3 / StyleGAN-XL backend: NVlabs-style pickles that need their utilities on the path."""
import os
import subprocess
import sys
from types import SimpleNamespace

import h5py
import json
import pytest
import torch

from flcore.generators.registry import load_generator
from flcore.generators.stylegan_pickle import load_stylegan_pickle
from tests.helpers import make_stylegan_pickle, make_stylegan_utils
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDING = os.path.join("in_embeddings", "embedding.txt")


@pytest.fixture(scope="module")
def stylegan_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stylegan")
    utils = make_stylegan_utils(str(root / "utils"), in_embeddings=True)
    return SimpleNamespace(
        root=root, utils=utils,
        unconditional=make_stylegan_pickle(utils, str(root / "sg3.pkl")),
        conditional=make_stylegan_pickle(utils, str(root / "sgxl.pkl"), c_dim=6, read_on_load=EMBEDDING),
        no_g_ema=make_stylegan_pickle(utils, str(root / "d_only.pkl"), content="{'D': G}"),
        bare_module=make_stylegan_pickle(utils, str(root / "bare.pkl"), content="G"),
    )


def flags(path, utils, **extra):
    return SimpleNamespace(generator_path=path, stylegan_utils=utils, **extra)


def test_unconditional_pickle_gives_w_latents_and_images_in_unit_range(stylegan_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    adapter = load_generator("stylegan", flags(stylegan_files.unconditional, stylegan_files.utils), "cpu")
    assert adapter.latent_dim == 24
    gen = torch.Generator().manual_seed(0)
    w = adapter.sample_latents(7, gen)
    assert w.shape == (7, 24)
    assert torch.equal(w, adapter.sample_latents(7, torch.Generator().manual_seed(0)))
    images = adapter.synthesize(w)
    assert images.shape == (7, 3, 8, 8)
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.01
    assert os.getcwd() == str(tmp_path)


def test_conditional_pickle_gets_one_hot_classes_and_loads_from_any_cwd(stylegan_files, tmp_path, monkeypatch):
    # The pickle opens in_embeddings/... relative to the working directory while it is
    # unpickled (as StyleGAN-XL's mapping network does); loading must still work here.
    monkeypatch.chdir(tmp_path)
    G = load_stylegan_pickle(stylegan_files.conditional, stylegan_files.utils)
    assert G.c_dim == 6 and not any(p.requires_grad for p in G.parameters())
    adapter = load_generator("stylegan", flags(stylegan_files.conditional, stylegan_files.utils), "cpu")
    w = adapter.sample_latents(5, torch.Generator().manual_seed(1))  # the mapping asserts one-hot c
    assert w.shape == (5, 24)
    assert os.getcwd() == str(tmp_path)


@pytest.mark.parametrize("which,expected", [
    ("no_g_ema", "no 'G_ema' generator (found: D)"),
    ("bare_module", "no 'G_ema' generator"),
])
def test_pickle_without_g_ema_is_refused(stylegan_files, which, expected):
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_stylegan_pickle(getattr(stylegan_files, which), stylegan_files.utils)


def test_not_a_pickle_and_missing_paths_are_refused(stylegan_files, tmp_path):
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(UserError, match="not a readable StyleGAN network pickle"):
        load_stylegan_pickle(str(junk), stylegan_files.utils)
    with pytest.raises(UserError, match="does not exist"):
        load_stylegan_pickle(str(tmp_path / "missing.pkl"), stylegan_files.utils)
    with pytest.raises(UserError, match="needs -GPath"):
        load_stylegan_pickle(None, stylegan_files.utils)
    with pytest.raises(UserError, match="has no torch_utils or dnnlib/"):
        load_stylegan_pickle(stylegan_files.unconditional, str(tmp_path))
    with pytest.raises(UserError, match="is not a folder"):
        load_stylegan_pickle(stylegan_files.unconditional, str(tmp_path / "nowhere"))


def run_main(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_missing_nvlabs_utilities_is_one_line_naming_the_flag(stylegan_files, data_root, tmp_path):
    result = run_main("-algo", "FedKTL-stylegan-3", "-GPath", stylegan_files.unconditional, "-data", "Tiny",
                      "-nc", "4", "--data_root", data_root, "--out", str(tmp_path), "-gr", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "torch_utils" in result.stderr and "--stylegan_utils" in result.stderr


@pytest.mark.parametrize("algorithm,pickle_name,lam", [
    ("FedKTL-stylegan-3", "unconditional", 0.1),
    ("FedKTL-stylegan-xl", "conditional", 1.0),
])
def test_stylegan_variants_run_a_round_end_to_end(stylegan_files, data_root, tmp_path, algorithm, pickle_name, lam):
    out = tmp_path / "out"
    # Started from another working directory, as a user running the original `cd system` lines.
    result = run_main("-algo", algorithm, "-GPath", getattr(stylegan_files, pickle_name),
                      "--stylegan_utils", stylegan_files.utils, "-data", "Tiny", "-nc", "4",
                      "--data_root", data_root, "--out", str(out), "-gr", "1", "-se", "2", "-lbs", "16",
                      cwd=os.path.join(ROOT, "system"))
    assert result.returncode == 0, result.stderr
    with h5py.File(out / f"Tiny_{algorithm}_test_0.h5") as f:
        assert len(f["rs_test_acc"]) == 2
        assert f["floats_up"][0] > 0
        # The projection layer sent at setup maps 512 features to the generator's w (24 wide).
        assert f["setup_floats_down"][0] == 4 * (10 * 10 + 512 * 24 + 24)
    with open(out / f"Tiny_{algorithm}_test_0.config.json") as f:
        config = json.load(f)
    assert config["lamda"] == lam and config["mu"] == 50.0 and config["server_learning_rate"] == 0.01
    assert (out / f"Tiny_{algorithm}_test_0" / "generated_round_0000.png").exists()
