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


# ---- help, -algo's choices, messages that name the flag as typed, HtFLlib's flags, --out, --tensorboard ----

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def help_actions():
    from cli import build_parser

    parser = build_parser()
    return parser, [(group.title, action) for group in parser._action_groups for action in group._group_actions]


def test_every_flag_has_a_help_text_and_the_run_flags_say_their_default():
    import argparse

    _, actions = help_actions()
    assert len(actions) > 60
    for title, action in actions:
        assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, action.option_strings
        if title in ("run", "execution", "checkpoints") or title.startswith("the original code"):
            if action.dest not in ("help", "list_algorithms"):
                assert "default" in action.help, action.option_strings


def test_algorithm_flag_has_choices_listed_in_help(capsys):
    from flcore.registry import ALGORITHMS

    _, actions = help_actions()
    algo = next(action for _, action in actions if action.dest == "algorithm")
    assert sorted(algo.choices) == sorted(ALGORITHMS)
    with pytest.raises(SystemExit):
        parse_args(["-h"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in ALGORITHMS)


def test_usage_is_short_and_the_description_points_to_the_readme():
    parser, _ = help_actions()
    usage = parser.format_usage().strip().splitlines()
    assert 1 <= len(usage) <= 3 and usage[0].startswith("usage: python system/main.py [-h]")
    assert "README" in parser.description
    assert all(len(line) <= 80 for line in usage)


@pytest.mark.parametrize("argv,expected", [
    (["-algo", "FedNope"], "unknown algorithm 'FedNope'"),
    (["-algo", "fedktl"], "did you mean FedKTL?"),
    (["-algo", "FedKLT"], "did you mean FedKTL"),
    (["-algo", "FedMRL"], "FedMRL is HtFLlib's"),
])
def test_unknown_algorithm_is_one_parser_line_naming_the_choices(capsys, argv, expected):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument -algo/--algorithm: ")
    assert expected in err and "choose one of" in err and "LG-FedAvg" in err


@pytest.mark.parametrize("family", ["ResNet", "HtFE-img-5", "HtFE-txt-2", "Res34-HtC-img-4"])
def test_unknown_model_lists_families_and_model_names(tmp_path, family):
    from trainmodel.families import FAMILIES, FAMILY_ALIASES
    from trainmodel.models import MODEL_NAMES

    with pytest.raises(UserError) as exc:
        validated(["-m", family, "--out", str(tmp_path)])
    message = str(exc.value)
    assert "\n" not in message and repr(family) in message
    assert all(name in message for name in (*FAMILIES, *FAMILY_ALIASES, *MODEL_NAMES))


@pytest.mark.parametrize("typed", ["-nb", "-ncl", "--num_classes", "--num_cla"])
def test_validation_names_the_flag_as_typed(tmp_path, typed):
    expected = "--num_classes" if typed.startswith("--") else typed  # an abbreviation is named in full
    with pytest.raises(UserError, match=f"^{expected} must be at least 1"):
        validated([typed, "0", "--out", str(tmp_path)])
    with pytest.raises(UserError, match=f"^{expected} must be at least 1"):
        validated([f"{typed}=0", "--out", str(tmp_path)])


def test_long_spellings_reach_every_check(tmp_path):
    with pytest.raises(UserError, match=r"^--times must be at least 1 and -pv below --times"):
        validated(["--times", "0", "--out", str(tmp_path)])
    with pytest.raises(UserError, match=r"^--local_learning_rate must be a finite number"):
        validated(["--local_learning_rate", "nan", "--out", str(tmp_path)])
    with pytest.raises(UserError, match=r"^-gr must be at least 1"):  # no flag typed twice: the short one
        validated(["-gr", "0", "--out", str(tmp_path)])


def test_respell_names_flags_in_other_modules_messages_as_typed():
    from cli import respell

    parse_args(["-ncl", "7", "--global_rounds", "3"])
    message = "-nb 7 does not match dataset 'X', which has 10 classes: drop -nb or pass -nb 10; -gr -nbx -nc"
    assert respell(message) == ("-ncl 7 does not match dataset 'X', which has 10 classes: drop -ncl or pass -ncl 10; "
                                "--global_rounds -nbx -nc")
    parse_args(["-nb", "7"])
    assert respell(message) == message


def test_htfllib_only_flags_are_not_flags_here():
    from cli import HTFLLIB_ONLY_FLAGS, option_strings

    ours = {spelling for spellings in option_strings().values() for spelling in spellings}
    assert {"-fs", "-cdr", "-tsr", "-ssr", "-ts", "-sfn", "-sfd"} <= set(HTFLLIB_ONLY_FLAGS)
    for short, (long, meaning, advice) in HTFLLIB_ONLY_FLAGS.items():
        assert short not in ours and long not in ours and meaning and advice


@pytest.mark.parametrize("short", ["-fs", "-cdr", "-tsr", "-ssr", "-ts", "-tth", "-sfn", "-mfn", "-vs", "-ml",
                                   "-sfd", "-mdb", "-mqb", "-wu"])
def test_each_htfllib_only_flag_is_one_line_saying_what_it_was(capsys, short):
    from cli import HTFLLIB_ONLY_FLAGS

    long = HTFLLIB_ONLY_FLAGS[short][0]
    for argv in ([short, "1"], ["-gr", "2", f"{long}=1"]):
        with pytest.raises(SystemExit) as exc:
            parse_args(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {short} is HtFLlib's {long} (")
        assert "not supported here" in err and "unrecognized" not in err


def test_out_defaults_to_the_repositorys_results_folder_from_any_directory(tmp_path, monkeypatch):
    assert parse_args([]).out == os.path.join(ROOT, "results")
    monkeypatch.chdir(os.path.join(ROOT, "system"))
    assert parse_args([]).out == os.path.join(ROOT, "results")
    monkeypatch.chdir(tmp_path)
    assert parse_args([]).out == os.path.join(ROOT, "results")
    assert parse_args(["--out", "mine"]).out == "mine"


def test_a_run_from_system_writes_to_the_repositorys_results(tmp_path, data_root):
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "repo"  # a copy of the code, so that the real results/ folder is left alone
    shutil.copytree(os.path.join(ROOT, "system"), copy / "system",
                    ignore=shutil.ignore_patterns("results", "__pycache__", "*.h5"))
    shutil.copytree(os.path.join(ROOT, "dataset"), copy / "dataset",
                    ignore=lambda folder, names: [name for name in names if not name.endswith(".py")])
    done = subprocess.run([sys.executable, "main.py", "-gr", "1", "-nc", "2", "--threads", "1", "-dev", "cpu",
                           "-algo", "Local", "-data", "Tiny", "--data_root", data_root],
                          cwd=copy / "system", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (copy / "results" / "Tiny_Local_test_0.h5").is_file()
    assert not (copy / "system" / "results").exists()


def test_tensorboard_flag_is_off_by_default_and_checked(tmp_path, monkeypatch):
    import cli

    assert parse_args([]).tensorboard is False
    assert parse_args(["--tensorboard"]).tensorboard is True
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "tensorboard" else real(name, *rest))
    with pytest.raises(UserError) as exc:
        validated(["--tensorboard", "--out", str(tmp_path)])
    assert str(exc.value) == ("--tensorboard needs TensorBoard: pip install 'tensorboard>=2.14,<3' "
                              "(or drop --tensorboard)")
    validated(["--out", str(tmp_path)])  # without the flag TensorBoard is not needed
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name, *rest: object())
    assert validated(["--tensorboard", "--out", str(tmp_path)]).tensorboard is True
