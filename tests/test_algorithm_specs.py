"""The algorithm specs: what the command line, the tests, run_me.sh and the README read from them."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from cli import apply_algorithm_defaults, build_parser, parse_args, validate
from flcore.registry import ALGORITHMS, SPECS, declarations, get_server_class
from flcore.servers.serverbase import Server
from flcore.spec import AlgorithmSpec, Option
from tests.helpers import ALGORITHM_FLAGS
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme(page: str = "README.md") -> str:
    """The README, or another page of the documentation (a path from the repository root)."""
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def table_rows(text: str, heading: str) -> list:
    """The rows (lists of cells) of the first table under `heading`."""
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # after the header and its rule


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_every_spec_names_a_server_with_a_client(spec):
    server_class = get_server_class(spec.name)
    assert issubclass(server_class, Server) and server_class.client_class is not None
    assert spec.summary and (spec.test_flags is not None or spec.untested)


def test_every_declaration_of_a_flag_agrees_and_the_parser_holds_each_once():
    found = declarations()  # raises when two algorithms spell or type one flag differently
    actions = {action.dest: action for action in build_parser()._actions}
    for dest, pairs in found.items():
        assert actions[dest].option_strings == list(pairs[0][1].flags), dest


def test_a_flag_spelled_two_ways_is_refused():
    from flcore import registry

    one = AlgorithmSpec(name="A", server="m:A", summary="a", test_flags=(),
                        options=(Option(("-x", "--x_weight"), float, 1.0, "x"),))
    other = AlgorithmSpec(name="B", server="m:B", summary="b", test_flags=(),
                          options=(Option(("--x_weight",), float, 1.0, "x"),))
    original = registry.SPECS
    registry.SPECS = (one, other)
    try:
        with pytest.raises(TypeError, match="--x_weight"):
            registry.declarations()
    finally:
        registry.SPECS = original


def test_specs_refuse_a_check_without_its_message_and_an_algorithm_without_test_settings():
    with pytest.raises(ValueError, match="must"):
        Option(("--y",), int, 1, "y", check=lambda v: v > 0)
    with pytest.raises(ValueError, match="test_flags"):
        AlgorithmSpec(name="C", server="m:C", summary="c")


@pytest.mark.parametrize("spec", [spec for spec in SPECS if spec.test_flags is not None], ids=lambda s: s.name)
def test_every_tested_algorithm_is_in_the_contract_tests_with_flags_that_validate(spec):
    assert ALGORITHM_FLAGS[spec.name] == list(spec.test_flags)
    args = parse_args(["-algo", spec.name, *spec.test_flags])
    apply_algorithm_defaults(args)
    validate(args)


def test_each_algorithm_gets_its_own_defaults_and_meaning_of_a_shared_flag():
    values = {}
    for name in ("FedKTL", "FedKTL-stylegan-3", "FedProto", "FD", "Local"):
        args = parse_args(["-algo", name])
        apply_algorithm_defaults(args)
        values[name] = vars(args)["lamda"]  # what its config records
    assert values == {"FedKTL": 1.0, "FedKTL-stylegan-3": 0.1, "FedProto": 10.0, "FD": 1.0, "Local": 1.0}
    lam = next(action for action in build_parser()._actions if action.dest == "lamda")
    for meaning in ("FedKTL/FedKTL-stylegan-xl/FedKTL-stylegan-3/FedKTL-stable-diffusion: weight of the MSE "
                    "between mapped prototypes and their class centroids", "FD: weight of the MSE to the global "
                    "logits (1.0)", "FedProto/FedTGP: weight of the MSE to the global prototypes (10.0)"):
        assert meaning in lam.help


def test_an_algorithm_reads_only_its_own_options():
    args = parse_args(["-algo", "Local", "-lam", "3"])
    apply_algorithm_defaults(args)
    assert args.local_learning_rate == 0.01 and vars(args)["lamda"] == 3.0
    with pytest.raises(AttributeError, match=r"^Local reads --lamda, which its spec does not declare: add it to "
                                             r"the options in flcore/algorithms/local.py$"):
        args.lamda
    assert getattr(args, "lamda", "unread") == "unread"
    fedproto = parse_args(["-algo", "FedProto"])
    apply_algorithm_defaults(fedproto)
    assert fedproto.lamda == 10.0
    with pytest.raises(AttributeError, match="FedProto reads --mu"):
        fedproto.mu


@pytest.mark.parametrize("algorithm,refused", [("FedKTL", True), ("FedKTL-stylegan-xl", True), ("FedGH", False),
                                               ("FedTGP", False), ("DeepInversion", False)])
def test_only_fedktl_needs_two_prototypes_per_server_batch(algorithm, refused):
    # FedKTL's feature transformer has a BatchNorm; the others train on batches of one fine.
    args = parse_args(["-algo", algorithm, "-sbs", "1"])
    apply_algorithm_defaults(args)
    if refused:
        with pytest.raises(UserError, match=r"^-sbs must be at least 2 \(the feature transformer uses BatchNorm\)$"):
            validate(args)
    else:
        validate(args)
        args.server_batch_size = 0
        with pytest.raises(UserError, match="^-sbs must be at least 1$"):
            validate(args)


def test_an_option_is_checked_only_for_the_algorithm_that_reads_it():
    args = parse_args(["-algo", "Local", "--di_batches", "0"])
    apply_algorithm_defaults(args)
    validate(args)
    args = parse_args(["-algo", "DeepInversion", "--di_batches", "0"])
    apply_algorithm_defaults(args)
    with pytest.raises(UserError, match="--di_batches must be at least 1"):
        validate(args)


def test_list_algorithms_prints_the_tested_ones_for_run_me():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "--list_algorithms"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [spec.name for spec in SPECS if spec.test_flags is not None]


def test_run_me_takes_its_list_from_the_specs_and_names_only_known_algorithms():
    with open(os.path.join(ROOT, "run_me.sh")) as f:
        script = f.read()
    assert 'ALGORITHMS=$(python system/main.py --list_algorithms)' in script
    named = set(re.findall(r'"\$1" = ([\w-]+)', script)) | set(re.findall(r"\[([\w-]+)\]=", script))
    named |= set(re.search(r"for algo in ([^;]+); do\n\s+read", script).group(1).split())
    assert named and named <= set(ALGORITHMS), named - set(ALGORITHMS)


def test_readme_algorithm_table_lists_every_algorithm():
    rows = table_rows(readme(), "## Algorithms")
    listed = set()
    for row in rows:
        listed |= set(re.findall(r"`([^`]+)`", row[0]))
    assert listed == set(ALGORITHMS)


def test_readme_flag_table_lists_every_algorithm_option_and_only_real_flags():
    rows = table_rows(readme("docs/command_line.md"), "## Every flag")
    in_readme = {flag for row in rows for flag in re.findall(r"`(-[\w-]+)`", row[0])}
    options = {spec_option.flag for pairs in declarations().values() for _, spec_option in pairs}
    assert options <= in_readme, options - in_readme
    spellings = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert in_readme <= spellings, in_readme - spellings


def test_readme_short_flag_table_names_only_real_flags():
    rows = table_rows(readme(), "## Command line")
    named = {flag for row in rows for flag in re.findall(r"`(-[\w-]+)`", row[0])}
    spellings = {flag for action in build_parser()._actions for flag in action.option_strings}
    assert named and named <= spellings, named - spellings


def test_readme_install_step_is_what_ci_installs():
    section = readme().split("## Install", 1)[1].split("\n## ", 1)[0]
    steps = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1).split(" && ")
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        installs = [re.sub(r"^python -m |--quiet ", "", line.strip()) for line in f
                    if "pip install" in line and not line.lstrip().startswith("#") and "--upgrade pip" not in line]
    assert steps == installs


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_and_docs_links_reach_their_files_and_headings():
    pages = ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs"))
                                   if name.endswith(".md"))
    texts = {page: re.sub(r"```.*?```", "", readme(page), flags=re.S) for page in pages}
    anchors = {page: {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
               for page, text in texts.items()}
    for page, text in texts.items():
        for link in re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img src="([^"]+)"', text):
            if link.startswith(("http://", "https://")):
                continue
            target, _, anchor = link.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
            assert os.path.exists(os.path.join(ROOT, path)), (page, link)
            assert not anchor or anchor in anchors.get(path, ()), (page, link)


# ---- the README's worked example: a new algorithm in its own files ------------------------------
def example_files() -> dict:
    """{path: source} of the files the worked example in docs/adding_an_algorithm.md writes."""
    page = readme("docs/adding_an_algorithm.md")
    return dict(re.findall(r"`(system/[\w/]+\.py)`:\n\n```python\n(.*?)```", page, flags=re.S))


def test_the_readme_example_touches_only_new_files():
    files = example_files()
    assert len(files) == 2
    for path in files:
        assert not os.path.exists(os.path.join(ROOT, path)), path


@pytest.mark.slow
def test_the_readme_example_joins_the_cli_and_the_contract_tests(tmp_path):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("results", ".git", "__pycache__", ".pytest_cache", "*.h5")
    for name in ("system", "tests", "dataset"):
        shutil.copytree(os.path.join(ROOT, name), copy / name, ignore=ignore)
    shutil.copy(os.path.join(ROOT, "pytest.ini"), copy / "pytest.ini")
    for path, source in example_files().items():
        (copy / path).write_text(source)
    listed = subprocess.run([sys.executable, "system/main.py", "--list_algorithms"], cwd=copy,
                            capture_output=True, text=True, timeout=120)
    assert "FedProto-EMA" in listed.stdout.split(), listed.stderr
    shown = subprocess.run([sys.executable, "system/main.py", "-h"], cwd=copy, capture_output=True, text=True,
                           timeout=120)
    assert "--proto_momentum" in shown.stdout
    refused = subprocess.run([sys.executable, "system/main.py", "-algo", "FedProto-EMA", "--proto_momentum", "1"],
                             cwd=copy, capture_output=True, text=True, timeout=120)
    assert (refused.returncode, refused.stderr) == (2, "error: --proto_momentum must be in [0, 1)\n")
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "tests/test_executors.py"],
                               cwd=copy, capture_output=True, text=True, timeout=300)
    assert "test_ray_gives_the_in_process_metrics[FedProto-EMA]" in collected.stdout
    resumed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_checkpoint.py",
                              "-k", "resumed_run_equals and FedProto-EMA"], cwd=copy, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0 and "1 passed" in resumed.stdout, resumed.stdout[-2000:]
