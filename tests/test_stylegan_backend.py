"""StyleGAN3 / StyleGAN-XL backend: NVlabs-style pickles that need their utilities on the path."""
import contextlib
import importlib
import importlib.util
import os
import subprocess
import sys
import types
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


# --- pickles whose other entries (StyleGAN-XL's D) need packages that are missing -------

# What the pickling process sees: timm 0.4.12's layout, with timm.models.layers.conv2d_same.
OLD_TIMM = {
    "timm/__init__.py": "__version__ = '0.4.12'\n",
    "timm/models/__init__.py": "",
    "timm/models/layers/__init__.py": "",
    "timm/models/layers/conv2d_same.py": "import torch\n\n\nclass Conv2dSame(torch.nn.Conv2d):\n    pass\n",
}
# An installed newer timm, which has no timm/models/layers/conv2d_same.py any more.
NEW_TIMM = {
    "timm/__init__.py": "__version__ = '0.9.16'\n",
    "timm/models/__init__.py": "",
    "timm/models/layers/__init__.py": "",
    "timm-0.9.16.dist-info/METADATA": "Metadata-Version: 2.1\nName: timm\nVersion: 0.9.16\n",
}
# Like StyleGAN-XL's pg_modules/discriminator.py: a plain (not persistent) class whose module
# imports timm, holding timm layers and persistent NVlabs layers.
DISCRIMINATOR_SOURCE = '''
import torch
from timm.models.layers.conv2d_same import Conv2dSame

from torch_utils.tiny_stylegan import TinyStyleGAN


class ProjectedDiscriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Conv2dSame(3, 4, 3)
        self.stem = TinyStyleGAN()
        self.head = torch.nn.Linear(4, 1)
'''
# A persistent class whose pickled module source imports timm (fails when it is executed).
TIMM_BLOCK_SOURCE = '''
import timm
import torch

from torch_utils import persistence


@persistence.persistent_class
class TimmBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
'''
# dill (StyleGAN-XL's training pickles with dill.dump) as the pickling process sees it, and one
# that cannot rebuild what the first stored (as for a function pickled under another Python).
PICKLING_DILL = {"dill/__init__.py": "", "dill/_dill.py": "import types\n\n\ndef _create_code(*args):\n    pass\n\n\n"
                 "def _load_type(name):\n    return getattr(types, name)\n"}
BROKEN_DILL = {"dill/__init__.py": "", "dill/_dill.py": "import types\n\n\ndef _create_code(*args):\n"
               "    raise TypeError('code() argument 13 must be str, not int')\n\n\n"
               "def _load_type(name):\n    return getattr(types, name)\n"}
# Objects pickled as dill does it: a code object by value, and a type looked up by name and
# then called.
DILL_OBJECTS = '''
import dill._dill as dd


class CodeByValue:
    def __reduce__(self):
        return dd._create_code, (3, "co_code")


class TypeByName:
    def __call__(self, *args):
        pass

    def __reduce__(self):
        return dd._load_type, ("SimpleNamespace",)


class MadeFromType:
    def __reduce__(self):
        return TypeByName(), ()
'''
NOT_INSTALLED = "needs timm, which is not installed"
WRONG_VERSION = "needs timm.models.layers.conv2d_same, which timm 0.9.16 does not have"


@pytest.fixture(scope="module")
def timm_files(tmp_path_factory):
    from tests.helpers import write_files

    root = tmp_path_factory.mktemp("timm")
    utils = make_stylegan_utils(str(root / "utils"), modules={
        "pg_modules/__init__.py": "", "pg_modules/discriminator.py": DISCRIMINATOR_SOURCE,
        "torch_utils/timm_block.py": TIMM_BLOCK_SOURCE})
    old, new = write_files(str(root / "old"), {**OLD_TIMM, **PICKLING_DILL}), write_files(str(root / "new"), NEW_TIMM)

    def pickled(name, setup, content):
        return make_stylegan_pickle(utils, str(root / name), content, setup=setup, extra_path=old)

    return SimpleNamespace(
        utils=utils, new_timm=new, broken_dill=write_files(str(root / "broken_dill"), BROKEN_DILL),
        d_dill=pickled("d_dill.pkl", DILL_OBJECTS + "D = torch.nn.Module()\nD.code = CodeByValue()\n"
                                                    "D.made = MadeFromType()", "{'G_ema': G, 'D': D}"),
        g_ema_dill=pickled("g_dill.pkl", DILL_OBJECTS + "G.code = CodeByValue()", "{'G_ema': G}"),
        reference=make_stylegan_pickle(utils, str(root / "reference.pkl")),
        # G and G_ema as training writes them; D, and a persistent entry whose source
        # imports timm, nested (two objects of one failing source).
        xl=pickled("xl.pkl", "import copy\nfrom pg_modules.discriminator import ProjectedDiscriminator\n"
                             "from torch_utils.timm_block import TimmBlock\n"
                             "D = ProjectedDiscriminator()\nP = TimmBlock()\nP.inner = TimmBlock()",
                   "{'G': G, 'D': D, 'G_ema': copy.deepcopy(G), 'augment_pipe': P}"),
        g_ema_timm_layer=pickled("g_layer.pkl", "from timm.models.layers.conv2d_same import Conv2dSame\n"
                                                "G.extra = Conv2dSame(3, 3, 3)", "{'G_ema': G, 'D': None}"),
        g_ema_timm_source=pickled("g_source.pkl", "from torch_utils.timm_block import TimmBlock\n"
                                                  "G.blocks = torch.nn.ModuleList([TimmBlock()])",
                                  "{'G_ema': G, 'D': None}"),
    )


def forget(package):
    """Unload `package`, and the persistent sources that imported it (cached by source, as
    NVlabs does), so each test sees only its own version of it."""
    persistence = sys.modules.get("torch_utils.persistence")
    for source in [src for src in getattr(persistence, "_src_to_module_dict", {}) if f"import {package}" in src]:
        persistence._module_to_src_dict.pop(persistence._src_to_module_dict.pop(source), None)
    return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == package}


@contextlib.contextmanager
def only_package(package, folder=None):
    """`package` importable only from `folder` (None: not at all), whatever is installed here."""
    saved = forget(package)
    if folder:
        sys.path.insert(0, folder)
    elif importlib.util.find_spec(package) is not None:
        sys.modules[package] = None  # hides a really installed one: importing it then fails
    importlib.invalidate_caches()
    try:
        yield
    finally:
        if folder:
            sys.path.remove(folder)
        forget(package)
        sys.modules.update(saved)
        importlib.invalidate_caches()


@pytest.fixture
def timm_absent():
    with only_package("timm"):
        yield


@pytest.fixture
def timm_wrong_version(timm_files):
    with only_package("timm", timm_files.new_timm):
        yield


def loading(path, utils):
    """The line a load prints first: which file, with which NVlabs code."""
    return f"loading StyleGAN network pickle {path} with NVlabs' code from {utils}\n"


def images_of(path, utils):
    adapter = load_generator("stylegan", flags(path, utils), "cpu")
    return adapter.synthesize(adapter.sample_latents(6, torch.Generator().manual_seed(3)))


def test_discriminator_needing_a_missing_package_is_skipped_and_g_ema_synthesizes(timm_files, timm_absent, capsys):
    expected = images_of(timm_files.reference, timm_files.utils)
    assert capsys.readouterr().out == loading(timm_files.reference, timm_files.utils)
    images = images_of(timm_files.xl, timm_files.utils)
    assert images.shape == (6, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, expected)  # G_ema is the generator the pickle holds, intact
    note = (f"note: -GPath {timm_files.xl!r}: skipped D ({NOT_INSTALLED}), augment_pipe ({NOT_INSTALLED}); "
            f"FedKTL only uses G_ema\n")
    assert capsys.readouterr().out == loading(timm_files.xl, timm_files.utils) + note
    # A failed source leaves nothing half-imported behind: loading it again skips the same way.
    G = load_stylegan_pickle(timm_files.xl, timm_files.utils)
    assert capsys.readouterr().out == loading(timm_files.xl, timm_files.utils) + note
    assert G.w_dim == 24 and not any(p.requires_grad for p in G.parameters())


def test_discriminator_needing_another_timm_version_is_skipped(timm_files, timm_wrong_version, capsys):
    G = load_stylegan_pickle(timm_files.xl, timm_files.utils)
    # The installed (newer) timm imports, so only D's conv2d_same is missing.
    assert capsys.readouterr().out == loading(timm_files.xl, timm_files.utils) + (
        f"note: -GPath {timm_files.xl!r}: skipped D ({WRONG_VERSION}); FedKTL only uses G_ema\n")
    assert G.synthesis(G.mapping(torch.zeros(2, 16), None), noise_mode="const").shape == (2, 3, 8, 8)


@pytest.mark.parametrize("which", ["g_ema_timm_layer", "g_ema_timm_source"])
def test_g_ema_needing_a_missing_package_names_the_pinned_install(timm_files, timm_absent, which):
    path = getattr(timm_files, which)
    with pytest.raises(UserError) as caught:
        load_stylegan_pickle(path, timm_files.utils)
    assert str(caught.value) == (f"unpickling {path!r}: G_ema needs the Python package 'timm', which is not "
                                 f"installed: pip install timm==0.4.12")


def test_g_ema_needing_another_timm_version_says_the_installed_one_is_wrong(timm_files, timm_wrong_version):
    path = timm_files.g_ema_timm_layer
    with pytest.raises(UserError) as caught:
        load_stylegan_pickle(path, timm_files.utils)
    assert str(caught.value) == (
        f"unpickling {path!r}: G_ema needs timm.models.layers.conv2d_same, which the installed timm 0.9.16 does "
        f"not have (No module named 'timm.models.layers.conv2d_same'), so it is the wrong version: "
        f"pip install timm==0.4.12")


def test_g_ema_needing_a_missing_package_is_one_line_from_main(timm_files, data_root, tmp_path):
    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here, so the run would not stop at unpickling")
    result = run_main("-algo", "FedKTL-stylegan-xl", "-GPath", timm_files.g_ema_timm_layer, "--stylegan_utils",
                      timm_files.utils, "-data", "Tiny", "-nc", "4", "--data_root", data_root, "--out", str(tmp_path),
                      "-gr", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "pip install timm==0.4.12" in result.stderr


@pytest.mark.parametrize("dill,reason", [
    (None, "needs dill, which is not installed"),
    ("broken", "dill could not rebuild what it pickled (dill._dill._create_code: TypeError: code() argument 13 "
               "must be str, not int)"),
])
def test_discriminator_that_dill_cannot_rebuild_is_skipped(timm_files, capsys, dill, reason):
    with only_package("dill", timm_files.broken_dill if dill else None):
        G = load_stylegan_pickle(timm_files.d_dill, timm_files.utils)
    note = f"note: -GPath {timm_files.d_dill!r}: skipped D ({reason}); FedKTL only uses G_ema\n"
    assert capsys.readouterr().out == loading(timm_files.d_dill, timm_files.utils) + note
    assert G.w_dim == 24


@pytest.mark.parametrize("dill,expected", [
    (None, "G_ema needs the Python package 'dill', which is not installed: pip install dill"),
    ("broken", "dill could not rebuild what it pickled in G_ema (dill._dill._create_code: TypeError: code() "
               "argument 13 must be str, not int): use the Python and dill versions the pickle was written with"),
])
def test_g_ema_that_dill_cannot_rebuild_is_one_error(timm_files, dill, expected):
    with only_package("dill", timm_files.broken_dill if dill else None), pytest.raises(UserError) as caught:
        load_stylegan_pickle(timm_files.g_ema_dill, timm_files.utils)
    assert str(caught.value) == f"unpickling {timm_files.g_ema_dill!r}: {expected}"


# --- NVlabs' CUDA ops without a compiler ----------------------------------------------

# Dispatches as NVlabs' op modules do: the plugin only when impl='cuda', the input is on
# CUDA and `_init()` (looked up when called) says the plugin is there.
FAKE_OP_SOURCE = '''
calls = 0


def _init():
    global calls
    calls += 1
    if FAILS:
        raise RuntimeError("Ninja is required to load C++ extensions")
    return True


def op(x, impl="cuda"):
    return "plugin" if impl == "cuda" and x.device.type == "cuda" and _init() else "reference"
'''


def fake_op_module(name, fails):
    module = types.ModuleType(name)
    module.FAILS = fails
    exec(FAKE_OP_SOURCE, module.__dict__)
    return module


@pytest.fixture
def fake_ops(monkeypatch):
    modules = {short: fake_op_module(f"torch_utils.ops.{short}", fails)
               for short, fails in (("bias_act", True), ("filtered_lrelu", False), ("upfirdn2d", True))}
    for short, module in modules.items():
        monkeypatch.setitem(sys.modules, f"torch_utils.ops.{short}", module)
    return modules


def test_ops_whose_plugin_cannot_be_built_fall_back_with_one_warning(fake_ops, capsys):
    from flcore.generators.nvlabs_ops import FALLBACK_WARNING, prepare_nvlabs_ops

    on_cuda = SimpleNamespace(device=torch.device("cuda", 0))  # no GPU needed: nothing is moved
    assert prepare_nvlabs_ops(torch.device("cuda", 0)) == ["bias_act", "upfirdn2d"]
    assert capsys.readouterr().out == FALLBACK_WARNING.format(
        ops="bias_act, upfirdn2d", error="RuntimeError: Ninja is required to load C++ extensions",
        cuda=torch.version.cuda or "build") + "\n"
    assert fake_ops["bias_act"].op(on_cuda) == "reference" and fake_ops["upfirdn2d"].op(on_cuda) == "reference"
    assert fake_ops["filtered_lrelu"].op(on_cuda) == "plugin"  # a working plugin is left alone
    calls = {short: module.calls for short, module in fake_ops.items()}
    assert calls == {"bias_act": 1, "filtered_lrelu": 2, "upfirdn2d": 1}  # no rebuild per call
    # Moving the generator again warns no more and retries nothing.
    assert prepare_nvlabs_ops("cuda:1") == [] and capsys.readouterr().out == ""
    assert fake_ops["bias_act"].calls == 1


def test_ops_are_not_touched_off_cuda(fake_ops, capsys):
    from flcore.generators.nvlabs_ops import prepare_nvlabs_ops

    assert prepare_nvlabs_ops("cpu") == [] and prepare_nvlabs_ops(torch.device("cpu")) == []
    assert all(module.calls == 0 for module in fake_ops.values()) and capsys.readouterr().out == ""


def test_stylegan_adapter_prepares_the_ops_for_its_device(stylegan_files, monkeypatch):
    from flcore.generators import nvlabs_ops
    from flcore.generators.stylegan_like import StyleGANLikeAdapter

    devices = []
    monkeypatch.setattr(nvlabs_ops, "prepare_nvlabs_ops", devices.append)
    G = load_stylegan_pickle(stylegan_files.unconditional, stylegan_files.utils)
    adapter = StyleGANLikeAdapter(G, torch.device("cpu"), nvlabs_ops=True).to("cpu")
    assert devices == [torch.device("cpu"), "cpu"]  # on creation and on every move
    StyleGANLikeAdapter(G, "cpu").to("cpu")  # the built-in generator's adapter has no NVlabs ops
    assert devices == [torch.device("cpu"), "cpu"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_nvlabs_ops_on_cuda_match_their_reference(capsys):
    """With a clone in stylegan/stylegan-utils: the plugins build, or fall back with the
    warning; either way the CUDA results equal the reference implementation's."""
    from flcore.generators.nvlabs_ops import _reference_only, prepare_nvlabs_ops
    from flcore.generators.stylegan_pickle import provide_pkg_resources

    clone = os.path.join(ROOT, "stylegan", "stylegan-utils")
    if not os.path.isfile(os.path.join(clone, "torch_utils", "ops", "bias_act.py")):
        pytest.skip("needs a stylegan3 or stylegan-xl clone in stylegan/stylegan-utils")
    if clone not in sys.path:
        sys.path.append(clone)
    provide_pkg_resources()
    from torch_utils.ops import bias_act, filtered_lrelu, upfirdn2d

    fell_back = prepare_nvlabs_ops("cuda")
    out = capsys.readouterr().out
    assert ("warning: NVlabs' CUDA ops" in out) == bool(fell_back)
    for module in (bias_act, filtered_lrelu, upfirdn2d):
        assert (module._init is _reference_only) == (module.__name__.rsplit(".", 1)[-1] in fell_back)
    x = torch.randn(2, 4, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    b = torch.randn(4, device="cuda")
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=torch.device("cuda"))
    torch.testing.assert_close(bias_act.bias_act(x, b, act="lrelu"), bias_act.bias_act(x, b, act="lrelu", impl="ref"))
    torch.testing.assert_close(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl="ref"))
    torch.testing.assert_close(filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3),
                               filtered_lrelu.filtered_lrelu(x, f, f, b, up=2, down=2, padding=3, impl="ref"),
                               rtol=1e-4, atol=1e-4)
