"""--config: a file of hyperparameters, checked; paths and run control come from the command line only."""
import json
import os
import pickle

import pytest

from cli import COMMAND_LINE_ONLY, apply_algorithm_defaults, parse_args
from flcore.registry import ALGORITHMS
from tests.helpers import make_stylegan_utils
from tests.test_bad_input import run_main


class WritesMarker:
    """Unpickling this creates the file `path`: stands for any code a pickle can run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture
def planted(tmp_path):
    """A pickle that would create `marker` when loaded, and a --stylegan_utils folder whose
    torch_utils would create `imported` when imported."""
    marker, imported = tmp_path / "unpickled", tmp_path / "imported"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(WritesMarker(str(marker))))
    utils = make_stylegan_utils(str(tmp_path / "utils"), modules={
        "torch_utils/__init__.py": f"open({str(imported)!r}, 'w').close()\n"})
    return {"marker": marker, "imported": imported, "pickle": str(evil), "utils": utils}


def write_config(folder, content) -> str:
    path = os.path.join(folder, "run.config.json")
    with open(path, "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))
    return path


def parse_with_config(tmp_path, content, *flags):
    return parse_args(["--config", write_config(str(tmp_path), content), *flags])


def test_a_config_cannot_name_the_generator_a_run_loads(data_root, tmp_path, planted):
    out = tmp_path / "out"
    config = write_config(str(tmp_path), {
        "algorithm": "FedKTL", "generator_path": planted["pickle"], "stylegan_utils": planted["utils"],
        "out": str(tmp_path / "elsewhere"), "run_index": 3})
    result = run_main("--config", config, "-algo", "FedKTL", "-data", "Tiny", "--data_root", data_root, "-nc", "4",
                      "-gr", "1", "--out", str(out), "-se", "3", "--save_generated_every", "0")
    assert result.returncode == 0, result.stderr
    assert not planted["marker"].exists() and not planted["imported"].exists()
    assert not (tmp_path / "elsewhere").exists()
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: --config")]
    assert len(notes) == 1 and "generator_path, out, stylegan_utils" in notes[0] and "run_index" in notes[0]
    with open(out / "Tiny_FedKTL_test_0.config.json") as f:
        saved = json.load(f)
    assert saved["generator_path"] is None and saved["stylegan_utils"] is None
    # what a run saves runs again from its config file
    again = parse_args(["--config", str(out / "Tiny_FedKTL_test_0.config.json")])
    assert (again.algorithm, again.dataset, again.global_rounds, again.server_epochs) == ("FedKTL", "Tiny", 1, 3)


def test_a_config_cannot_make_a_stylegan_run_unpickle_a_file(data_root, tmp_path, planted):
    config = write_config(str(tmp_path), {"algorithm": "FedKTL-stylegan-3", "generator_path": planted["pickle"],
                                          "stylegan_utils": planted["utils"]})
    result = run_main("--config", config, "-data", "Tiny", "--data_root", data_root, "-nc", "4", "-gr", "1",
                      "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "-GPath" in errors[0]  # the algorithm came from the config, the path did not
    assert not planted["marker"].exists() and not planted["imported"].exists()


def test_command_line_only_keys_and_unknown_keys_are_ignored_with_one_note(tmp_path, capsys):
    config = {"generator_path": "g.pkl", "stylegan_utils": "u", "prompt_model": "t5", "config": "old.json",
              "resume": True, "out": "o", "data_root": "d", "ray_address": "auto", "run_index": 2,
              "algorithm": "FedProto", "global_rounds": 7, "lamda": 3, "auto_break": True, "device": "cpu"}
    args = parse_with_config(tmp_path, config)
    defaults = parse_args([])
    for dest in COMMAND_LINE_ONLY - {"config"}:
        assert getattr(args, dest) == getattr(defaults, dest), dest
    assert (args.algorithm, args.global_rounds, args.lamda, args.auto_break, args.device) == \
        ("FedProto", 7, 3, True, "cpu")
    assert not hasattr(args, "run_index")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"note: --config {tmp_path / 'run.config.json'}: ")
    assert ("ignored data_root, generator_path, out, prompt_model, ray_address, resume, stylegan_utils: these are "
            "taken from the command line only, give them there; ignored run_index: not flags of this version") in err


def test_command_line_only_flags_still_work_on_the_command_line(tmp_path, capsys):
    args = parse_with_config(tmp_path, {"generator_path": "from_file.pkl", "global_rounds": 4},
                             "-GPath", "mine.pkl", "--prompt_model", "t5", "--out", "o")
    assert (args.generator_path, args.prompt_model, args.out, args.global_rounds) == ("mine.pkl", "t5", "o", 4)
    assert "generator_path" in capsys.readouterr().err


def test_no_note_when_nothing_was_left_out(tmp_path, capsys):
    parse_with_config(tmp_path, {"global_rounds": 3, "generator_path": None, "out": "results", "config": None})
    assert capsys.readouterr().err == ""


def test_a_list_config_is_one_error_line(tmp_path):
    config = write_config(str(tmp_path), "[1, 2]")
    result = run_main("--config", config, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == (f"error: --config {config} must hold a JSON object of flag names and values, "
                             f"e.g. {{\"global_rounds\": 10}}, got a list\n")
    assert sorted(os.listdir(tmp_path)) == ["run.config.json"]


@pytest.mark.parametrize("content,expected", [
    ("3", "must hold a JSON object of flag names and values, e.g. {\"global_rounds\": 10}, got a number"),
    ("\"text\"", "got a string"),
    ("null", "got null"),
    ("{\"global_rounds\": ", "is not valid JSON (Expecting value: line 1 column 19 (char 18))"),
    ("", "is not valid JSON"),
    (b"\xff\xfe{", "is not valid JSON"),
    (None, "cannot read --config"),
])
def test_a_config_that_is_not_a_json_object_is_refused(tmp_path, capsys, content, expected):
    path = str(tmp_path / "run.config.json")
    if isinstance(content, bytes):
        (tmp_path / "run.config.json").write_bytes(content)
    elif content is not None:
        write_config(str(tmp_path), content)
    with pytest.raises(SystemExit) as exc:
        parse_args(["--config", path])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and path in err and expected in err


@pytest.mark.parametrize("key,value,expected", [
    ("global_rounds", "abc", "'global_rounds' must be an integer, got \"abc\""),
    ("global_rounds", True, "'global_rounds' must be an integer, got true"),
    ("num_clients", 4.0, "'num_clients' must be an integer, got 4.0"),
    ("num_clients", None, "'num_clients' must be an integer, got null"),
    ("local_learning_rate", "0.1", "'local_learning_rate' must be a number, got \"0.1\""),
    ("join_ratio", False, "'join_ratio' must be a number, got false"),
    ("auto_break", "yes", "'auto_break' must be true or false, got \"yes\""),
    ("auto_break", 1, "'auto_break' must be true or false, got 1"),
    ("resize_antialias", None, "'resize_antialias' must be true or false, got null"),
    ("goal", 5, "'goal' must be a string, got 5"),
    ("dataset", ["Tiny"], "'dataset' must be a string, got [\"Tiny\"]"),
    ("device", "gpu", "'device' must be one of \"cpu\", \"cuda\", got \"gpu\""),
    ("recipe", "best", "'recipe' must be one of \"library\", \"paper\", got \"best\""),
    ("di_teacher_mode", None, "'di_teacher_mode' must be one of \"cycle\", \"sampling\", got null"),
])
def test_a_wrong_typed_value_is_one_line_naming_the_key(tmp_path, capsys, key, value, expected):
    # the ignored entries would make a note: a refused file makes only the error line
    with pytest.raises(SystemExit) as exc:
        parse_with_config(tmp_path, {"out": "o", "run_index": 1, key: value})
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: --config {tmp_path / 'run.config.json'}: {expected}\n"


def test_a_wrong_typed_value_through_main(tmp_path):
    config = write_config(str(tmp_path), {"global_rounds": "abc"})
    result = run_main("--config", config, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == f"error: --config {config}: 'global_rounds' must be an integer, got \"abc\"\n"


def test_values_of_the_right_type_are_taken(tmp_path):
    args = parse_with_config(tmp_path, {"global_rounds": None, "local_learning_rate": 1, "lamda": 0.5,
                                        "num_classes": None, "ray_gpus_per_actor": 0, "goal": "g",
                                        "device": "cuda:1", "di_teacher_mode": "sampling", "ktl_fixed_proj": True})
    assert (args.global_rounds, args.local_learning_rate, args.lamda, args.num_classes) == (None, 1, 0.5, None)
    assert (args.ray_gpus_per_actor, args.goal, args.device) == (0, "g", "cuda")  # a saved cuda:N is cuda
    assert (args.di_teacher_mode, args.ktl_fixed_proj) == ("sampling", True)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithms_saved_config_parses_again(tmp_path, capsys, algorithm):
    """As main.py saves it: every dest, algorithm defaults filled, the device it chose."""
    args = parse_args(["-algo", algorithm, "-gr", "3", "--out", str(tmp_path / "out"), "-data", "Tiny"])
    apply_algorithm_defaults(args)
    args.device, args.num_classes = "cuda:0", 10
    saved = vars(args)
    again = parse_with_config(tmp_path, saved, "--out", str(tmp_path / "out"))
    for dest, value in saved.items():
        if dest not in COMMAND_LINE_ONLY | {"device"}:
            assert getattr(again, dest) == value, dest
    assert again.device == "cuda"
    assert capsys.readouterr().err == ""  # its --out is given again: nothing differs


def test_recipe_of_the_saved_run_keeps_its_overrides(tmp_path):
    saved = vars(parse_args(["--recipe", "paper", "--ktl_fixed_proj", "false"]))
    again = parse_with_config(tmp_path, saved)
    assert (again.recipe, again.stored_order, again.ktl_fixed_proj) == ("paper", True, False)


def test_recipe_given_on_the_command_line_overrides_the_config(tmp_path):
    saved = vars(parse_args([]))
    args = parse_with_config(tmp_path, saved, "--recipe", "paper")
    assert (args.recipe, args.stored_order, args.ktl_fixed_proj, args.resize_antialias) == ("paper", True, True, False)
    args = parse_with_config(tmp_path, {"recipe": "paper"})
    assert (args.stored_order, args.vit_mlp_head) == (True, True)
    args = parse_with_config(tmp_path, {"recipe": "paper"}, "--stored_order", "false")
    assert (args.stored_order, args.vit_mlp_head) == (False, True)
