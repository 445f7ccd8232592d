"""Flag parsing: HtFLlib's flags keep their meaning, booleans parse, defaults layer correctly."""
import json

import pytest

from cli import apply_algorithm_defaults, parse_args, validate
from flcore.registry import get_server_class
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
    server_class = get_server_class("FedKTL")
    args = parse_args(["-lam", "0.3"])
    apply_algorithm_defaults(args, server_class)
    assert args.lamda == 0.3
    assert args.mu == server_class.DEFAULTS["mu"]
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
    apply_algorithm_defaults(args, get_server_class("FedKTL"))
    with pytest.raises(UserError, match=message):
        validate(args)


def test_unknown_algorithm_lists_choices_and_suggests_case():
    with pytest.raises(UserError, match="choose one of") as exc:
        get_server_class("NoSuchAlgo")
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="did you mean FedKTL"):
        get_server_class("fedktl")
