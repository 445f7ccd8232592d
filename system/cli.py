"""Command-line flags: HtFLlib/FedKTL's short flags with their meaning, plus spelled-out new ones.

The run's flags are declared here; every algorithm's options come from its spec in
`flcore/algorithms/`. Flags several algorithms read with their own defaults (`-lam`, `-slr`,
...) default to unset here and are filled from the chosen algorithm's spec, so e.g.
FedKTL-stylegan-3 defaults to lambda 0.1 while any flag the user gives still wins.
"""
import argparse
import difflib
import functools
import importlib.util
import json
import math
import os
import re
import sys
import textwrap

from flcore.registry import ALGORITHMS, MODULE_OF, SPECS, AlgorithmArgs, declarations, fill_defaults, get_spec
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: defaults of the run's flags that an algorithm may set its own default for (FedLoGe's -lr)
COMMON_DEFAULTS = {"local_learning_rate": 0.01}

#: {dest: the option string the user typed} in the last `parse_args` (an abbreviated long flag as its full
#: spelling), so that messages name a flag as typed: `-ncl 0` is told "-ncl must be ...", not "-nb must be ..."
SPELLED = {}

#: HtFLlib's `system/main.py` flags that this library does not have: spelling -> (long spelling, what it
#: does in HtFLlib, what to do here). Told in one line instead of argparse's "unrecognized arguments" (and
#: before argparse reads `-ts` as `-t s`, or `-ml` as `-m l`).
HTFLLIB_ONLY_FLAGS = {
    "-fs": ("--few_shot", "few-shot training: each client keeps at most N training samples per class",
            "make a few-shot dataset instead (a dataset script's --train_per_class N) and pass it with -data; "
            "see docs/datasets.md"),
    "-cdr": ("--client_drop_rate", "the fraction of a round's selected clients that train but whose uploads "
             "are dropped", "drop it (-jr sets the fraction of clients that join a round)"),
    "-tsr": ("--train_slow_rate", "the fraction of clients simulated as slow in local training",
             "drop it: no straggler simulation here"),
    "-ssr": ("--send_slow_rate", "the fraction of clients simulated as slow in receiving the global model",
             "drop it: no straggler simulation here"),
    "-ts": ("--time_select", "selecting clients by their time cost", "drop it: no straggler simulation here"),
    "-tth": ("--time_threthold", "the time cost above which slow clients are dropped",
             "drop it: no straggler simulation here"),
    "-sfn": ("--save_folder_name", "the folder where clients' and the server's models are kept between steps "
             "(temp/)", "drop it: models stay in memory here; results and checkpoints go under --out"),
    "-mfn": ("--models_folder_name", "a folder of pre-trained client models to start from",
             "drop it: clients start from seeded weights here (--resume continues a run from its checkpoint)"),
    "-vs": ("--vocab_size", "the vocabulary size of its text tasks", "drop it: this library runs image tasks"),
    "-ml": ("--max_len", "the sequence length of its text models", "drop it: this library runs image tasks"),
    "-sfd": ("--sub_feature_dim", "FedMRL's sub-feature dimension (its small shared model's feature width)",
             "drop it: FedMRL is not in this library"),
    "-mdb": ("--meta_study_batches", "FedL2G's batches per meta-study step", "drop it: FedL2G is not in this library"),
    "-mqb": ("--meta_quiz_batches", "FedL2G's batches per meta-quiz step", "drop it: FedL2G is not in this library"),
    "-wu": ("--warm_up_rounds", "FedL2G's warm-up rounds", "drop it: FedL2G is not in this library"),
}

#: HtFLlib's `-algo` names that this library does not have: name -> what it is
HTFLLIB_ONLY_ALGORITHMS = {
    "FedMRL": "Federated Model Heterogeneous Matryoshka Representation Learning (NeurIPS 2024), which adds a "
              "small shared model beside each client's own",
    "FedL2G-feat": "FedL2G (adaptive guidance for local training), on features",
    "FedL2G-logit": "FedL2G (adaptive guidance for local training), on logits",
}

#: flag profiles chosen by --recipe: defaults that flags given on the command line still override
RECIPES = {
    "library": {},
    # What the original FedKTL/HtFLlib code computes where the paper's numbers depend on it.
    "paper": {"ktl_separate_forward": True, "ktl_fixed_proj": True, "stored_order": True,
              "original_auto_break": True, "vit_mlp_head": True, "resize_antialias": False,
              "fedgen_htfllib": True, "fedgen_feature_scale": "generator"},
}

DEFAULT_ROUNDS = 50
#: HtFLlib's default: runs with -ab and no -gr end by auto-break, not by the round count
DEFAULT_ROUNDS_AUTO_BREAK = 2000

#: flags a --config file never sets: files that get loaded or put on sys.path, where the run reads and
#: writes, and how it starts; a config file is data, and these must come from the command line
COMMAND_LINE_ONLY = frozenset({"generator_path", "stylegan_utils", "prompt_model", "config", "resume", "out",
                               "data_root", "ray_address"})

TRUE_WORDS = {"1", "true", "t", "yes", "y", "on"}
FALSE_WORDS = {"0", "false", "f", "no", "n", "off"}


def str2bool(text) -> bool:
    """`-ab False` means false (argparse's type=bool would make it true)."""
    if isinstance(text, bool):
        return text
    word = str(text).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/1/0, got {text!r}")


def add_bool(parser, *names, default=False, help=""):
    """A true/false flag: bare it means true; its help says its default unless it already does."""
    if default is not None and "default" not in help:
        help += f" (default {str(default).lower()})"
    parser.add_argument(*names, type=str2bool, nargs="?", const=True, default=default,
                        metavar="BOOL", help=help)


def algorithm_name(name: str) -> str:
    """`-algo`'s type: a registered name, or a one-line error naming the closest ones."""
    if name in ALGORITHMS:
        return name
    choices = ", ".join(sorted(ALGORITHMS))
    if name in HTFLLIB_ONLY_ALGORITHMS:
        raise argparse.ArgumentTypeError(f"{name} is HtFLlib's {HTFLLIB_ONLY_ALGORITHMS[name]}; it is not in this "
                                         f"library: choose one of {choices}")
    lowered = {key.lower(): key for key in ALGORITHMS}
    close = ([lowered[name.lower()]] if name.lower() in lowered
             else difflib.get_close_matches(name, list(ALGORITHMS), n=2, cutoff=0.6))
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise argparse.ArgumentTypeError(f"unknown algorithm {name!r}{hint}: choose one of {choices}")


def fail(message: str):
    """End the run as any user mistake ends: one `error:` line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class HelpFormatter(argparse.HelpFormatter):
    """`-gr, --global_rounds N`: every spelling, then the value's name once (argparse repeats it after each);
    N for a whole number and X for a real one."""

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return ", ".join(action.option_strings) + " " + self._format_args(
            action, self._get_default_metavar_for_optional(action))

    def _get_default_metavar_for_optional(self, action):
        return {int: "N", float: "X"}.get(action.type, action.dest.upper())

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)  # FedKTL-stylegan-3 stays whole

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


class SpelledStore(argparse.Action):
    """argparse's plain store, noting the option string the value came with (`parser.spelled`)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        if option_string is not None and hasattr(parser, "spelled"):
            parser.spelled[self.dest] = option_string


class Parser(argparse.ArgumentParser):
    """argparse, except that a mistake is one line (argparse prints its whole usage first), an HtFLlib
    flag this library lacks is named as such, and the spelling of each flag given is kept in `spelled`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in (None, "store"):  # the default action and its name; argument groups share this registry
            self.register("action", name, SpelledStore)
        self.spelled = {}

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        refuse_htfllib_only_flags(args)
        self.spelled = {}
        return super().parse_known_args(args, namespace)

    def error(self, message):
        fail(f"{' '.join(message.split())}; {self.prog} -h lists the flags")


def refuse_htfllib_only_flags(argv) -> None:
    """One line for HtFLlib's flags this library does not have (`-fs 5`, `--few_shot=5`, ...)."""
    long_names = {long: short for short, (long, _, _) in HTFLLIB_ONLY_FLAGS.items()}
    found = []
    for token in argv:
        if token == "--":
            break
        name = token.split("=", 1)[0] if token.startswith("-") else None
        short = name if name in HTFLLIB_ONLY_FLAGS else long_names.get(name)
        if short is not None and short not in found:
            found.append(short)
    if found:
        fail("; ".join(f"{short} is HtFLlib's {HTFLLIB_ONLY_FLAGS[short][0]} ({HTFLLIB_ONLY_FLAGS[short][1]}) and "
                       f"is not supported here: {HTFLLIB_ONLY_FLAGS[short][2]}" for short in found))


class ListAlgorithms(argparse.Action):
    """`--list_algorithms`: the names run_me.sh's suites loop over (every spec with test settings
    runs on the bundled data and generator)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(" ".join(spec.name for spec in SPECS if spec.test_flags is not None))
        parser.exit()


#: the most-used flags; `-h` lists them all, by group
USAGE = ("%(prog)s [-h] [-algo NAME] [-data NAME] [-m FAMILY]\n"
         + " " * len("usage: python system/main.py ") + "[-nc N] [-gr N] [--out DIR] [more flags]")

DESCRIPTION = ("Heterogeneous federated learning with a server-side pre-trained generator. README.md explains "
               "the flags (section Command line; every flag in docs/command_line.md), the algorithms (Algorithms), "
               "what a run writes, where, and --resume (Results and checkpoints); datasets are in docs/datasets.md.")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python system/main.py", usage=USAGE, description=DESCRIPTION, formatter_class=HelpFormatter,
               epilog="HtFLlib's flags " + ", ".join(HTFLLIB_ONLY_FLAGS) + " are not supported here (each is "
                      "refused with what it did there and what to do); nor are its algorithms "
                      + ", ".join(HTFLLIB_ONLY_ALGORITHMS) + ".")
    g = p.add_argument_group("run")
    names = ", ".join(name for spec in SPECS for name in spec.names)
    g.add_argument("-algo", "--algorithm", default="FedKTL", type=algorithm_name, choices=sorted(ALGORITHMS),
                   metavar="NAME", help=f"algorithm (default FedKTL), one of: {names} (README, Algorithms)")
    g.add_argument("--list_algorithms", action=ListAlgorithms,
                   help="print the algorithms that run without downloaded weights, one line, and exit")
    g.add_argument("-data", "--dataset", default="MNIST5k",
                   help="dataset: a folder under --data_root (default MNIST5k, generated when absent)")
    g.add_argument("-nb", "-ncl", "--num_classes", type=int, default=None,
                   help="number of classes, checked against the dataset (default: read from its config.json)")
    g.add_argument("-m", "--model_family", default="HtFE-cpu",
                   help="model family: HtFE2/3/4/8/9, HtM10, HtFE-cpu (HtFLlib's HtFE-img-N, HtM-img-10 too), or one "
                        "model name such as ResNet8 for every client (default HtFE-cpu)")
    g.add_argument("-fd", "--feature_dim", type=int, default=512,
                   help="feature width of every backbone (default 512)")
    g.add_argument("-nc", "--num_clients", type=int, default=20,
                   help="number of clients, at most the dataset's (default 20)")
    g.add_argument("-jr", "--join_ratio", type=float, default=1.0,
                   help="fraction of clients that join each round (default 1)")
    add_bool(g, "-rjr", "--random_join_ratio",
             help="draw the number of joining clients each round, from -jr's share up to all")
    g.add_argument("-gr", "--global_rounds", type=int, default=None,
                   help=f"global rounds (default {DEFAULT_ROUNDS}; {DEFAULT_ROUNDS_AUTO_BREAK} with -ab, as in "
                        "HtFLlib, where auto-break ends the run)")
    g.add_argument("-ls", "--local_epochs", type=int, default=1,
                   help="epochs each joining client trains on its data per round (default 1)")
    g.add_argument("-lbs", "--batch_size", type=int, default=10, help="clients' training batch size (default 10)")
    g.add_argument("-lr", "--local_learning_rate", type=float, default=None,
                   help=f"client learning rate (default {COMMON_DEFAULTS['local_learning_rate']}"
                        + "".join(f"; {spec.name} {spec.defaults['local_learning_rate']}" for spec in SPECS
                                  if "local_learning_rate" in spec.defaults) + ")")
    add_bool(g, "-ld", "--learning_rate_decay", help="decay the local learning rate by -ldg each round")
    g.add_argument("-ldg", "--learning_rate_decay_gamma", type=float, default=0.99,
                   help="factor -ld multiplies the local learning rate by each round (default 0.99)")
    g.add_argument("-eg", "--eval_gap", type=int, default=1, help="evaluate every this many rounds (default 1)")
    add_bool(g, "-ab", "--auto_break", help="stop when the best accuracy is -tc evaluations old")
    g.add_argument("-tc", "--top_cnt", type=int, default=100,
                   help="-ab stops once this many evaluations have passed without a new best accuracy (default 100)")
    g.add_argument("-t", "--times", type=int, default=1,
                   help="repetitions, seeded --seed, --seed+1, ... (default 1)")
    g.add_argument("-pv", "--prev", type=int, default=0,
                   help="first repetition to run, to continue a series (default 0)")
    g.add_argument("-go", "--goal", default="test", help="tag in result file names (default test)")
    g.add_argument("-dev", "--device", default="cuda", choices=["cpu", "cuda"],
                   help="cpu or cuda; cuda falls back to cpu when no GPU is present (default cuda)")
    g.add_argument("-did", "--device_id", default="0", help="CUDA device index (default 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of Python, NumPy and torch (default 0)")
    g.add_argument("--out", default=os.path.join(REPO_ROOT, "results"),
                   help="results folder (default: the repository's results/, whatever the working directory)")
    g.add_argument("--data_root", default=os.path.join(REPO_ROOT, "dataset"),
                   help="folder holding the datasets (default: the repository's dataset/)")
    g.add_argument("--eval_batch_size", type=int, default=1024,
                   help="batch size of passes without gradients: evaluation, prototypes (default 1024)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    g.add_argument("--config", default=None,
                   help="a saved *.config.json; its hyperparameters become defaults, flags still override "
                        "(paths such as --out, -GPath, --data_root are taken from the command line only; "
                        "default: none)")
    add_bool(g, "--tensorboard",
             help="also write a TensorBoard log (accuracy, loss, traffic, generated images) under "
                  "<out>/tensorboard/<run name>; needs `pip install tensorboard`")
    x = p.add_argument_group("execution")
    x.add_argument("--executor", default="inprocess", choices=["inprocess", "ray"],
                   help="where clients run: in this process one after another, or in Ray actors (default inprocess)")
    x.add_argument("--ray_address", default=None,
                   help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local Ray")
    x.add_argument("--ray_actors", type=int, default=0,
                   help="Ray actors, each holding a fixed block of clients (default 0: one per --ray_cpus_per_actor "
                        "CPUs of the cluster, at most one per client)")
    x.add_argument("--ray_cpus_per_actor", type=float, default=1.0, help="CPUs each Ray actor reserves (default 1)")
    x.add_argument("--ray_gpus_per_actor", type=float, default=None,
                   help="GPUs (or a fraction of one) each Ray actor reserves (default: the cluster's GPUs shared "
                        "equally with -dev cuda, 0 on CPUs)")
    add_bool(x, "--offload", help="park idle clients' models and optimiser states in host memory, so only the "
                                  "client being trained occupies the GPU")
    c = p.add_argument_group("checkpoints")
    add_bool(c, "--resume", help="continue the run found under --out from its newest checkpoint "
                                 "(the same flags otherwise); a finished run is left as it is")
    c.add_argument("--ckpt_every", type=int, default=None,
                   help="write a checkpoint every this many rounds (0: never); default: by time, see --ckpt_minutes")
    c.add_argument("--ckpt_minutes", type=float, default=5.0,
                   help="without --ckpt_every: a checkpoint once this many minutes have passed since the last "
                        "(and never more than 5%% of the run's time spent writing them; default 5)")
    c.add_argument("--ckpt_keep", type=int, default=1,
                   help="checkpoints kept while the run goes on, newest first (default 1)")
    add_bool(c, "--ckpt_keep_final", help="keep the newest --ckpt_keep checkpoints after the run finishes, writing "
                                          "one after the last round (default: a finished run removes them)")

    others = ", ".join(declarations()[dest][0][1].flag for dest in RECIPES["paper"] if dest in declarations())
    o = p.add_argument_group("the original code's computation (README, Fidelity)")
    o.add_argument("--recipe", default="library", choices=sorted(RECIPES),
                   help="library: this library's defaults; paper: compute as the original FedKTL/HtFLlib code "
                        f"did, setting this group's flags and {others}, so `run_me.sh paper` reproduces the "
                        "paper's setting (flags you give still win; default library)")
    add_bool(o, "--stored_order", help="every epoch visits a client's training set in its stored order, dropping "
                                       "the same last partial batch (the original's loader) instead of reshuffling")
    add_bool(o, "--original_auto_break",
             help="auto-break as the original: after a round's training, stop when the best of the evaluations "
                  "so far is -tc evaluations old, with no evaluation after that round")
    add_bool(o, "--vit_mlp_head", help="ViT clients get the original code's head Linear(fd, 768)-Tanh-Linear(768, C) "
                                       "instead of one Linear")
    add_bool(o, "--resize_antialias", default=True,
             help="antialias when resizing generated images to the clients' size (default true; the original "
                  "code's torchvision did not)")
    add_algorithm_options(p)
    return p


def add_algorithm_options(parser) -> None:
    """Every algorithm's options, from the specs: a flag several algorithms read, each with its own
    meaning and default, in one group that says so; the others in their algorithms' groups."""
    found = declarations()
    shared, own = [], {}
    for dest, pairs in found.items():
        modules = {MODULE_OF[spec] for spec, _ in pairs}
        if len(modules) > 1:
            shared.append(dest)
        else:
            title = ", ".join(spec.name for spec in SPECS if MODULE_OF[spec] in modules)
            own.setdefault(title, []).append(dest)
    group = parser.add_argument_group("algorithm options (HtFLlib's flags: meaning and default per algorithm)")
    for dest in shared:
        add_option(group, found[dest])
    for title, dests in own.items():
        group = parser.add_argument_group(title)
        for dest in dests:
            add_option(group, found[dest])


def add_option(group, pairs) -> None:
    option = pairs[0][1]
    defaults = {other.default for _, other in pairs}
    if not option.shared and len(defaults) > 1:
        raise TypeError(f"{option.flags[-1]} has several defaults: declare it from a shared template")
    default = None if option.shared else option.default
    text = option_help(pairs).replace("%", "%%")
    if option.type is bool:
        add_bool(group, *option.flags, default=default, help=text)
    else:
        group.add_argument(*option.flags, type=None if option.type is str else option.type, default=default,
                           choices=option.choices, metavar=option.metavar, help=text)


def option_help(pairs) -> str:
    """One algorithm's help as it wrote it; for a shared flag, what it means and its default per algorithm."""
    option = pairs[0][1]
    if not option.shared and len({other.help for _, other in pairs}) == 1:
        return option.help
    meanings = {}
    for spec, declared in pairs:
        meanings.setdefault(declared.help, {}).setdefault(declared.default, []).append(spec.name)
    parts = []
    for text, by_default in meanings.items():
        names = "/".join(name for group in by_default.values() for name in group)
        if len(by_default) == 1:
            default = next(iter(by_default))
            parts.append(f"{names}: {text}" + ("" if default is None else f" ({default})"))
        else:
            defaults = ", ".join(f"{'/'.join(group)} {default}" for default, group in by_default.items())
            parts.append(f"{names}: {text} ({defaults})")
    return "; ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    SPELLED.clear()
    SPELLED.update(parser.spelled)
    taken, ignored = {}, []
    if args.config:
        taken, ignored = read_config(parser, args.config)
        parser.set_defaults(**taken)
        args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    if recipe:
        if taken.get("recipe") == args.recipe:
            # the file was saved under this recipe: its values already hold it, plus any flag that overrode it
            recipe = {dest: value for dest, value in recipe.items() if dest not in taken}
        parser.set_defaults(**recipe)
        args = parser.parse_args(argv)
    if args.config:
        note_ignored(args, ignored)
    return args


def read_config(parser, path: str):
    """The hyperparameters of the JSON object in `path`, type-checked against their flags, and
    the entries left out: (taken {dest: value}, ignored [(key, value)])."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except OSError as exc:
        fail(f"cannot read --config {path}: {exc.strerror or exc}")
    except (ValueError, RecursionError) as exc:
        fail(f"--config {path} is not valid JSON ({' '.join(str(exc).split())}): give a saved *.config.json")
    if not isinstance(saved, dict):
        fail(f"--config {path} must hold a JSON object of flag names and values, e.g. "
             f'{{"global_rounds": 10}}, got {json_type(saved)}')
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    taken, ignored = {}, []
    for key, value in saved.items():
        if key in COMMAND_LINE_ONLY or key not in actions:
            ignored.append((key, value))
            continue
        if key == "device" and isinstance(value, str) and re.fullmatch(r"cuda:\d+", value):
            value = "cuda"  # main.py saves the device it chose; -did is saved beside it
        problem = config_value_problem(actions[key], value)
        if problem:
            fail(f"--config {path}: {key!r} must be {problem}, got {json.dumps(value)}")
        taken[key] = value
    return taken, ignored


def json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def config_value_problem(action, value):
    """What `value` from a config file should be for `action`'s flag, or None when it fits."""
    if value is None and action.default is None:
        return None
    if action.choices is not None:
        return None if value in action.choices else "one of " + ", ".join(json.dumps(c) for c in action.choices)
    if action.type is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if action.type is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if action.type is str2bool or isinstance(action.const, bool):
        return None if isinstance(value, bool) else "true or false"
    return None if isinstance(value, str) else "a string"


def note_ignored(args, ignored) -> None:
    """One line naming the config entries that were not used (a saved config holds every flag, so
    only those whose value differs from the one in effect are worth naming)."""
    command_line = sorted(key for key, value in ignored
                          if key in COMMAND_LINE_ONLY and key != "config" and not same_value(key, value, args))
    unknown = sorted(key for key, _ in ignored if key not in COMMAND_LINE_ONLY and not hasattr(args, key))
    parts = []
    if command_line:
        parts.append(f"ignored {', '.join(command_line)}: these are taken from the command line only, "
                     f"give them there")
    if unknown:
        parts.append(f"ignored {', '.join(unknown)}: not flags of this version")
    if parts:
        print(f"note: --config {args.config}: {'; '.join(parts)}", file=sys.stderr)


def same_value(key: str, value, args) -> bool:
    """Whether a config's `value` for `key` is the one in effect: folders compare as absolute paths (a
    config of a run from the repository root holds `"out": "results"`, the default now spelled in full)."""
    current = getattr(args, key)
    if key in ("out", "data_root") and isinstance(value, str) and isinstance(current, str):
        return os.path.abspath(value) == os.path.abspath(current)
    return value == current


def apply_algorithm_defaults(args) -> None:
    """Fill every flag the user left unset from the chosen algorithm's spec, then the flags' own
    defaults; the algorithm's code then reads only its own options (`AlgorithmArgs`)."""
    if args.global_rounds is None:
        args.global_rounds = DEFAULT_ROUNDS_AUTO_BREAK if args.auto_break else DEFAULT_ROUNDS
    fill_defaults(args, get_spec(args.algorithm), COMMON_DEFAULTS)
    if type(args) is argparse.Namespace:
        args.__class__ = AlgorithmArgs  # from here on, the algorithm sees only its own options


@functools.lru_cache(maxsize=None)
def option_strings() -> dict:
    """{dest: its option strings}, the first being the spelling messages use (HtFLlib's short one)."""
    return {action.dest: tuple(action.option_strings) for action in build_parser()._actions
            if action.option_strings}


def flag_name(dest: str) -> str:
    """The flag for `dest` as the user typed it in the last `parse_args` (`-ncl`, `--num_classes`), else its
    first spelling (`-nb`)."""
    if dest in SPELLED:
        return SPELLED[dest]
    spellings = option_strings().get(dest)
    return spellings[0] if spellings else "--" + dest


def respell(message: str) -> str:
    """`message` with each flag the user typed another spelling of named as typed: a message written with
    `-nb` says `-ncl` when the command line said `-ncl`."""
    for dest, typed in SPELLED.items():
        first = option_strings().get(dest, (typed,))[0]
        if typed != first:
            message = re.sub(r"(?<![\w-])" + re.escape(first) + r"(?![\w-])", lambda _: typed, message)
    return message


def check_plain_name(flag: str, name) -> None:
    """`name` becomes part of a file or folder name: one path component, nothing else."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "\0" in name
            or any(sep and sep in name for sep in (os.sep, os.altsep))):
        raise UserError(f"{flag} must be a plain name without a path separator (not empty, . or ..), "
                        f"got {name!r}")


def check_out_folder(out) -> None:
    """--out can be created or written to; creates nothing."""
    if not isinstance(out, str) or not out:
        raise UserError("--out must name a folder")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} exists and is not a folder: choose another --out")
    existing = os.path.abspath(out)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--out {out} is not writable: {existing} is not a folder; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} is not writable: no write permission in {existing}; choose another --out")


def validate(args) -> None:
    from trainmodel.families import resolve_family  # pulls in the model code: only when validating

    for dest, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag_name(dest)} must be a finite number, got {value}")
    flag = flag_name  # as the user typed it
    checks = [
        (args.global_rounds >= 1, f"{flag('global_rounds')} must be at least 1"),
        (args.num_clients >= 1, f"{flag('num_clients')} must be at least 1"),
        (0 < args.join_ratio <= 1, f"{flag('join_ratio')} must be in (0, 1]"),
        (args.batch_size >= 1, f"{flag('batch_size')} must be at least 1"),
        (args.local_epochs >= 1, f"{flag('local_epochs')} must be at least 1"),
        (args.local_learning_rate >= 0, f"{flag('local_learning_rate')} must not be negative"),
        (args.eval_gap >= 1, f"{flag('eval_gap')} must be at least 1"),
        (args.times >= 1 and 0 <= args.prev < args.times,
         f"{flag('times')} must be at least 1 and {flag('prev')} below {flag('times')}"),
        (args.feature_dim >= 1, f"{flag('feature_dim')} must be at least 1"),
        (args.eval_batch_size >= 1, f"{flag('eval_batch_size')} must be at least 1"),
        (args.learning_rate_decay_gamma > 0, f"{flag('learning_rate_decay_gamma')} must be positive"),
        (args.top_cnt >= 0, f"{flag('top_cnt')} must not be negative"),
        (args.num_classes is None or args.num_classes >= 1, f"{flag('num_classes')} must be at least 1 (or left out)"),
        (args.seed >= 0, f"{flag('seed')} must not be negative"),
        (args.threads is None or args.threads >= 1, f"{flag('threads')} must be at least 1"),
        (str(args.device_id).isdigit(),
         f"{flag('device_id')} must be a CUDA device index such as 0, got {args.device_id!r}"),
        (args.ckpt_every is None or args.ckpt_every >= 0, f"{flag('ckpt_every')} must be 0 (no checkpoints) or more"),
        (args.ckpt_minutes > 0, f"{flag('ckpt_minutes')} must be positive"),
        (args.ckpt_keep >= 1, f"{flag('ckpt_keep')} must be at least 1"),
        (args.ray_actors >= 0, f"{flag('ray_actors')} must be 0 (one per CPU share) or more"),
        (args.ray_cpus_per_actor > 0, f"{flag('ray_cpus_per_actor')} must be positive"),
        (args.ray_gpus_per_actor is None or args.ray_gpus_per_actor >= 0,
         f"{flag('ray_gpus_per_actor')} must not be negative"),
        (args.executor == "ray" or (args.ray_address is None and not args.ray_actors),
         f"{flag('ray_address')} and {flag('ray_actors')} need --executor ray"),
        (args.executor != "ray" or importlib.util.find_spec("ray") is not None,
         "--executor ray needs Ray: pip install 'ray>=2.40' (or drop --executor ray)"),
        (not getattr(args, "tensorboard", False) or importlib.util.find_spec("tensorboard") is not None,
         "--tensorboard needs TensorBoard: pip install 'tensorboard>=2.14,<3' (or drop --tensorboard)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    check_plain_name(flag_name("dataset"), args.dataset)
    check_plain_name(flag_name("goal"), args.goal)
    check_out_folder(args.out)
    resolve_family(args.model_family)  # an unknown -m is told before the dataset is loaded
    get_spec(args.algorithm).check_options(args)
