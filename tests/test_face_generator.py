"""The face DCGAN backend (`-algo FedKTL --generator faces`), random generator weights and the
ablation's `-mu 0`: tiny random DCGANs of the package's layout, and its real weights when the
package is installed (the README's install step and CI install it)."""
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import h5py
import pytest
import torch

from flcore.generators import face_dcgan
from flcore.generators.base import randomly_initialised
from flcore.generators.face_dcgan import DCGANGenerator, FaceDCGANAdapter, load_face_dcgan
from flcore.generators.registry import check_generator_flags, load_generator
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = importlib.util.find_spec("gan_face_generate") is not None


def tiny_dcgan_file(path, seed=0, z_dim=8, width=2):
    """A random DCGAN of the package's layout, saved as the package saves its weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = DCGANGenerator(z_dim=z_dim, width=width)
    torch.save({"netG_state_dict": generator.state_dict()}, path)
    return str(path)


def flags(**changes):
    values = dict(generator_path=None, generator_weights="pretrained", algorithm="FedKTL")
    values.update(changes)
    return SimpleNamespace(**values)


def run_main(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_tiny_dcgan_gives_64px_images_in_unit_range(tmp_path):
    adapter = load_generator("faces", flags(generator_path=tiny_dcgan_file(tmp_path / "g.tar")), "cpu")
    assert isinstance(adapter, FaceDCGANAdapter) and adapter.latent_dim == 8
    latents = adapter.sample_latents(5, torch.Generator().manual_seed(0))
    # z ~ N(0, I): the distribution the DCGAN was trained on, the MMD's target
    assert latents.shape == (5, 8)
    assert torch.equal(latents, torch.randn(5, 8, generator=torch.Generator().manual_seed(0)))
    images = adapter.synthesize(latents)
    assert images.shape == (5, 3, 64, 64)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, adapter.synthesize(latents))  # eval mode: no batch statistics


def test_a_file_of_another_layout_is_one_line(tmp_path):
    torch.save({"netG_state_dict": {"main.0.weight": torch.zeros(3)}}, tmp_path / "bad.tar")
    with pytest.raises(UserError, match="is not a face DCGAN state dict"):
        load_face_dcgan(str(tmp_path / "bad.tar"))
    with pytest.raises(UserError, match="is a folder"):
        check_generator_flags("faces", flags(generator_path=str(tmp_path)))


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(face_dcgan.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps gan-face-generate"):
        check_generator_flags("faces", flags())


def test_missing_package_on_the_command_line_is_one_line(tmp_path, data_root):
    # A stand-in package of that name, found first, without the weights file.
    shadow = tmp_path / "shadow"
    (shadow / "gan_face_generate").mkdir(parents=True)
    (shadow / "gan_face_generate" / "__init__.py").write_text("")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    result = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                             "print(u.find_spec('gan_face_generate').submodule_search_locations)"],
                            capture_output=True, text=True, env=env)
    assert str(shadow) in result.stdout
    result = subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", "-algo",
                             "FedKTL", "--generator", "faces", "-data", "Tiny", "-nc", "4", "--data_root",
                             data_root, "--out", str(tmp_path / "out"), "-gr", "1"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "missing from the installed gan-face-generate" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not INSTALLED, reason="pip install --no-deps gan-face-generate (the README's install step)")
def test_the_packaged_weights_load_and_give_varied_faces():
    generator = load_face_dcgan()
    assert (generator.z_dim, generator.width, generator.channels) == (100, 64, 3)
    adapter = FaceDCGANAdapter(generator)
    images = adapter.synthesize(adapter.sample_latents(8, torch.Generator().manual_seed(0)))
    assert images.shape == (8, 3, 64, 64)
    # Pre-trained faces: smooth (neighbouring pixels close) and different from one another;
    # a random network of this layout gives pixel noise.
    random = FaceDCGANAdapter(randomly_initialised(lambda: DCGANGenerator(), 0, lambda n, g: torch.randn(n, 100,
                                                                                                       generator=g)))
    noise = random.synthesize(random.sample_latents(8, torch.Generator().manual_seed(0)))

    def roughness(x):
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    assert roughness(images) < 0.5 * roughness(noise)
    assert images.std(dim=0).mean() > 0.1


def test_random_weights_are_seeded_calibrated_and_not_the_pretrained_ones(tmp_path):
    path = tiny_dcgan_file(tmp_path / "g.tar")
    pretrained = load_generator("faces", flags(generator_path=path), "cpu")
    first = load_generator("faces", flags(generator_path=path, generator_weights="random"), "cpu")
    z = pretrained.sample_latents(16, torch.Generator().manual_seed(1))
    random_images = first.synthesize(z)
    assert not torch.allclose(random_images, pretrained.synthesize(z))
    again = randomly_initialised(lambda: DCGANGenerator(8, 2), 0, lambda n, g: torch.randn(n, 8, generator=g))
    assert torch.equal(FaceDCGANAdapter(again).synthesize(z), random_images)
    # Calibrated BatchNorm: images differ from one another; with the constructor's statistics
    # every z gives the same grey (spread below 1e-4 for this network).
    assert random_images.std(dim=0).mean() > 0.02
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        uncalibrated = FaceDCGANAdapter(DCGANGenerator(8, 2))
    assert uncalibrated.synthesize(z).std(dim=0).mean() < 1e-3
    norm = first.G.main[1]
    assert not torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    # The built-in generator's architecture has its own random control too.
    builtin = load_generator("builtin", flags(generator_weights="random"), "cpu")
    trained = load_generator("builtin", flags(), "cpu")
    w = trained.sample_latents(4, torch.Generator().manual_seed(0))
    assert builtin.G.config == trained.G.config
    assert not torch.allclose(builtin.synthesize(w), trained.synthesize(w))


def test_fedktl_with_faces_runs_and_records_its_variant(tmp_path, data_root):
    path = tiny_dcgan_file(tmp_path / "g.tar")
    out = tmp_path / "out"
    result = run_main("-algo", "FedKTL", "--generator", "faces", "--generator_weights", "random", "-GPath", path,
                      "-data", "Tiny", "-nc", "4", "--data_root", data_root, "--out", str(out), "-gr", "2", "-se",
                      "2", "--save_generated_every", "1")
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "Tiny_FedKTL_test_0.h5") as f:
        config = json.loads(f.attrs["config"])
        accuracy = f["rs_test_acc"][()]
        # setup: ETF and a projection to the 8-wide z; then one 16x16 image and one z per class
        assert f["setup_floats_down"][0] == 4 * (10 * 10 + 512 * 8 + 8)
        assert f["floats_down"][1] > 0
    assert config["variant"] == {"generator": "faces", "weights": "random init"}
    assert accuracy[-1] > accuracy[0]
    assert (out / "Tiny_FedKTL_test_0" / "generated_round_0001.png").exists()


def test_mu_zero_generates_nothing_and_is_labelled_as_the_ablation(tmp_path, data_root):
    out = tmp_path / "out"
    result = run_main("-algo", "FedKTL", "-mu", "0", "-data", "Tiny", "-nc", "4", "--data_root", data_root,
                      "--out", str(out), "-gr", "2", "-se", "2", "--save_generated_every", "1")
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "Tiny_FedKTL_test_0.h5") as f:
        config = json.loads(f.attrs["config"])
        assert list(f["floats_down"][()]) == [0.0, 0.0]  # no (image, latent) pairs sent
        assert f["floats_up"][0] > 0  # prototypes still go up
    assert config["variant"] == {"transfer": "-mu 0"}
    assert not list((out / "Tiny_FedKTL_test_0").glob("generated_round_*.png"))


def test_the_variant_of_every_fedktl_flavour():
    from flcore.registry import get_server_class

    fedktl = get_server_class("FedKTL")
    assert fedktl.variant(SimpleNamespace(mu=50.0, generator="builtin", generator_weights="pretrained")) == {
        "generator": "builtin"}
    assert fedktl.variant(SimpleNamespace(mu=0.0, generator="faces", generator_weights="random")) == {
        "transfer": "-mu 0"}
    stylegan = get_server_class("FedKTL-stylegan-3")
    assert stylegan.variant(SimpleNamespace(mu=50.0)) == {}
    assert get_server_class("Local").variant(SimpleNamespace(mu=50.0)) == {}
