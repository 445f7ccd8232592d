"""Flag parsing: HtFLlib's flags keep their meaning, booleans parse, defaults layer correctly."""
import json
import os

import pytest

from cli import apply_algorithm_defaults, parse_args, validate
from flcore.registry import get_server_class, get_spec
from utils.errors import UserError


@pytest.mark.parametrize("word,value", [("False", False), ("false", False), ("0", False),
                                        ("True", True), ("1", True), ("yes", True)])
def test_bool_flags_parse_false_as_false(word, value):
    assert parse_args(["-ab", word]).auto_break is value


def test_bare_bool_flag_means_true_and_bad_word_is_rejected(capsys):
    assert parse_args(["--ktl_fixed_proj"]).ktl_fixed_proj is True
    with pytest.raises(SystemExit) as exc:
        parse_args(["-ab", "maybe"])
    assert exc.value.code == 2
    assert "expected true/false/1/0" in capsys.readouterr().err


def test_htfllib_short_flags_map_to_their_meaning():
    args = parse_args("-data Cifar10 -nb 10 -m HtFE8 -algo FedKTL -gr 7 -nc 5 -jr 0.5 -lbs 32 -lr 0.1 "
                      "-ls 2 -t 3 -go g -dev cpu -did 1 -fd 256 -eg 2 -slr 0.2 -sbs 50 -se 10 -lam 0.1 "
                      "-mu 5 -GPath x.pkl -gbs 8 -prompt dog".split())
    assert (args.dataset, args.num_classes, args.model_family, args.global_rounds) == ("Cifar10", 10, "HtFE8", 7)
    assert (args.num_clients, args.join_ratio, args.batch_size, args.local_learning_rate) == (5, 0.5, 32, 0.1)
    assert (args.local_epochs, args.times, args.goal, args.device, args.device_id) == (2, 3, "g", "cpu", "1")
    assert (args.feature_dim, args.eval_gap, args.server_learning_rate) == (256, 2, 0.2)
    assert (args.server_batch_size, args.server_epochs, args.lamda, args.mu) == (50, 10, 0.1, 5.0)
    assert (args.generator_path, args.gen_batch_size, args.stable_diffusion_prompt) == ("x.pkl", 8, "dog")
    assert parse_args(["-ncl", "100"]).num_classes == 100


def test_algorithm_defaults_fill_only_unset_flags():
    args = parse_args(["-lam", "0.3"])
    apply_algorithm_defaults(args)
    assert args.lamda == 0.3
    assert args.mu == get_spec("FedKTL").option_defaults["mu"]
    assert args.server_epochs == 100


def test_config_file_round_trips_and_flags_override(tmp_path):
    first = parse_args(["-gr", "3", "-lr", "0.05", "--seed", "9"])
    path = tmp_path / "run.config.json"
    path.write_text(json.dumps(vars(first)))
    again = parse_args(["--config", str(path), "-gr", "4"])
    assert again.local_learning_rate == 0.05 and again.seed == 9
    assert again.global_rounds == 4


@pytest.mark.parametrize("flags,message", [(["-gr", "0"], "-gr"), (["-jr", "1.5"], "-jr"),
                                           (["-sbs", "1"], "-sbs"), (["-t", "2", "-pv", "2"], "-pv")])
def test_validate_rejects_bad_values(flags, message):
    args = parse_args(flags)
    apply_algorithm_defaults(args)
    with pytest.raises(UserError, match=message):
        validate(args)


def test_unknown_algorithm_lists_choices_and_suggests_case():
    with pytest.raises(UserError, match="choose one of") as exc:
        get_server_class("NoSuchAlgo")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="did you mean FedKTL"):
        get_server_class("fedktl")


# The three FedKTL lines of the original run_me.sh, flags exactly as written there.
ORIGINAL_RUN_ME = {
    "FedKTL-stylegan-xl": "-t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -nb 100 -data Cifar100 -m HtM10 "
                          "-fd 512 -did 5 -algo FedKTL-stylegan-xl -slr 0.01 -sbs 100 -se 100 -lam 1 -mu 50",
    "FedKTL-stylegan-3": "-t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -nb 100 -data Cifar100 -m HtM10 "
                         "-fd 512 -did 2 -algo FedKTL-stylegan-3 -slr 0.01 -sbs 100 -se 100 -lam 0.1 -mu 50 "
                         "-GPath stylegan/stylegan-3-models/Benches-512.pkl",
    "FedKTL-stable-diffusion": "-t 3 -ab 1 -lr 0.01 -jr 1 -lbs 10 -ls 1 -nc 20 -nb 100 -data Cifar100 -m HtM10 "
                               "-fd 512 -did 1 -algo FedKTL-stable-diffusion -slr 0.1 -sbs 100 -se 100 "
                               "-lam 0.01 -mu 100 -GPath stable-diffusion/v1.5",
}


@pytest.mark.parametrize("algorithm", sorted(ORIGINAL_RUN_ME))
def test_original_run_me_lines_parse_and_validate(algorithm):
    args = parse_args(ORIGINAL_RUN_ME[algorithm].split())
    get_server_class(args.algorithm)
    apply_algorithm_defaults(args)
    validate(args)
    assert args.algorithm == algorithm and args.auto_break is True and args.times == 3
    assert (args.num_classes, args.model_family, args.device_id) == (100, "HtM10", args.device_id)
    # the StyleGAN-XL line gives no -GPath: a file that is unpickled is only ever the one the user names
    assert args.generator_path == {"FedKTL-stylegan-xl": None,
                                   "FedKTL-stylegan-3": "stylegan/stylegan-3-models/Benches-512.pkl",
                                   "FedKTL-stable-diffusion": "stable-diffusion/v1.5"}[algorithm]


@pytest.mark.parametrize("algorithm,expected", [
    ("FedKTL-stylegan-xl", (0.01, 100, 100, 1.0, 50.0, None)),
    ("FedKTL-stylegan-3", (0.01, 100, 100, 0.1, 50.0, None)),
    ("FedKTL-stable-diffusion", (0.1, 100, 100, 0.01, 100.0, None)),
])
def test_generator_variants_default_to_the_papers_server_settings(algorithm, expected):
    args = parse_args(["-algo", algorithm])
    apply_algorithm_defaults(args)
    assert (args.server_learning_rate, args.server_batch_size, args.server_epochs, args.lamda, args.mu,
            args.generator_path) == expected
    overridden = parse_args(["-algo", algorithm, "-lam", "3", "-GPath", "mine"])
    apply_algorithm_defaults(overridden)
    assert (overridden.lamda, overridden.generator_path) == (3.0, "mine")


def test_relative_generator_paths_fall_back_to_the_repository_root(tmp_path, monkeypatch):
    from flcore.generators import paths, registry

    (tmp_path / "stylegan").mkdir()
    (tmp_path / "stylegan" / "G.pkl").write_bytes(b"x")
    monkeypatch.setattr(paths, "REPO_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path / "stylegan")  # e.g. `cd system` before running the original lines
    assert registry.resolve_path("stylegan/G.pkl") == str(tmp_path / "stylegan" / "G.pkl")
    assert registry.resolve_path("G.pkl") == str(tmp_path / "stylegan" / "G.pkl")
    assert registry.resolve_path("stylegan/none.pkl") is None


def test_rounds_default_to_htfllibs_2000_only_with_auto_break():
    for flags, rounds in ((["-ab", "1"], 2000), ([], 50), (["-ab", "1", "-gr", "7"], 7), (["-ab", "0"], 50)):
        args = parse_args(flags)
        apply_algorithm_defaults(args)
        assert args.global_rounds == rounds, flags


def test_every_registered_algorithm_resolves_to_a_server_with_a_client():
    from flcore.registry import ALGORITHMS
    from flcore.servers.serverbase import Server

    assert {"FedProto", "FD", "FedDistill", "LG-FedAvg", "FML", "FedKD", "FedGen", "FedGH", "FedTGP"} <= set(ALGORITHMS)
    for name in ALGORITHMS:
        server_class = get_server_class(name)
        assert issubclass(server_class, Server) and server_class.client_class is not None, name
        assert set(get_spec(name).option_defaults) <= {action for action in vars(parse_args([]))}, name


def test_parser_mistakes_are_one_line_without_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["-gr", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == ("error: argument -gr/--global_rounds: invalid int value: 'abc'; "
                   "python system/main.py -h lists the flags\n")


def validated(flags):
    args = parse_args(flags)
    apply_algorithm_defaults(args)
    validate(args)
    return args


@pytest.mark.parametrize("flag", ["-go", "-data"])
@pytest.mark.parametrize("name", ["a/b", "/abs", "..", ".", "", "a\0b"])
def test_names_that_become_file_names_must_be_plain(tmp_path, flag, name):
    with pytest.raises(UserError, match=f"^{flag} must be a plain name"):
        validated([flag, name, "--out", str(tmp_path)])


def test_plain_names_pass(tmp_path):
    args = validated(["-go", "run.1", "-data", "Cifar10", "--out", str(tmp_path)])
    assert (args.goal, args.dataset) == ("run.1", "Cifar10")


def test_unknown_single_model_is_refused_by_validate(tmp_path):
    with pytest.raises(UserError, match="unknown model family 'ResNet999'"):
        validated(["-m", "ResNet999", "--out", str(tmp_path)])
    assert validated(["-m", "ResNet8", "--out", str(tmp_path)]).model_family == "ResNet8"


def test_out_is_checked_without_creating_anything(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        validated(["--out", str(tmp_path / "file")])
    with pytest.raises(UserError, match=r"is not writable: .*file is not a folder"):
        validated(["--out", str(tmp_path / "file" / "a" / "b")])
    validated(["--out", str(tmp_path / "new" / "deeper")])  # creatable: fine
    args = parse_args(["--out", str(tmp_path / "new" / "deeper")])
    apply_algorithm_defaults(args)
    import cli

    # a read-only folder (faked: the tests may run as root, who may write anywhere)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: os.path.abspath(path) != str(tmp_path))
    with pytest.raises(UserError, match=f"^--out .* is not writable: no write permission in {tmp_path}"):
        validate(args)
    assert sorted(os.listdir(tmp_path)) == ["file"]
