"""Every `-algo`: the specs declared in `flcore/algorithms/`, found by walking that package.

Server modules are imported on demand, so an algorithm's optional dependencies are only
needed when that algorithm is run.
"""
import argparse
import importlib
import pkgutil

from flcore import algorithms
from flcore.htfllib_flags import TEMPLATES
from utils.errors import UserError


def find_specs() -> dict:
    """{spec: the algorithms/ module declaring it} over every module's SPECS, in module-name order."""
    specs = {}
    for module in sorted(pkgutil.iter_modules(algorithms.__path__), key=lambda m: m.name):
        loaded = importlib.import_module(f"{algorithms.__name__}.{module.name}")
        if not hasattr(loaded, "SPECS"):
            raise TypeError(f"{loaded.__name__} declares no SPECS")
        specs.update((spec, module.name) for spec in loaded.SPECS)
    return specs


#: spec -> the module of flcore/algorithms/ declaring it (FedKTL's variants share one)
MODULE_OF = find_specs()
SPECS = tuple(MODULE_OF)
#: every -algo name (aliases included) -> its spec
ALGORITHMS = {name: spec for spec in SPECS for name in spec.names}
if len(ALGORITHMS) != sum(len(spec.names) for spec in SPECS):
    raise TypeError("two algorithm specs claim the same -algo name")


def get_spec(name: str):
    try:
        return ALGORITHMS[name]
    except KeyError:
        lowered = {key.lower(): key for key in ALGORITHMS}
        hint = f" (did you mean {lowered[name.lower()]}?)" if name.lower() in lowered else ""
        raise UserError(f"unknown -algo {name!r}{hint}: choose one of {', '.join(sorted(ALGORITHMS))}") from None


def get_server_class(name: str):
    module_name, class_name = get_spec(name).server.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def declarations() -> dict:
    """{dest: [(spec, option), ...]} over every algorithm's options, in spec order. Every
    declaration of a flag has the same spellings and type, or the specs are refused."""
    found = {}
    for spec in SPECS:
        for option in spec.options:
            found.setdefault(option.dest, []).append((spec, option))
    for dest, pairs in found.items():
        first = pairs[0][1]
        for spec, option in pairs[1:]:
            if (option.flags, option.type, option.shared, option.choices) != (first.flags, first.type, first.shared,
                                                                              first.choices):
                raise TypeError(f"{spec.name} declares {option.flags} ({option.type.__name__}) unlike "
                                f"{pairs[0][0].name}'s {first.flags} ({first.type.__name__})")
    return found


#: the default of a shared flag for an algorithm that does not read it (recorded in its config)
TEMPLATE_DEFAULTS = {option.dest: option.default for option in TEMPLATES}


def fill_defaults(args, spec, common_defaults: dict) -> None:
    """Set every algorithm flag the user left unset: the algorithm's own default where it
    declares one, else the flag's HtFLlib default (`common_defaults` for the run's flags)."""
    own = spec.option_defaults
    for dest in {*common_defaults, *TEMPLATE_DEFAULTS, *own}:
        if getattr(args, dest, None) is None:
            setattr(args, dest, own.get(dest, TEMPLATE_DEFAULTS.get(dest, common_defaults.get(dest))))


#: every algorithm option, and the ones each -algo name declares
OPTION_DESTS = frozenset(option.dest for spec in SPECS for option in spec.options)
DECLARED = {name: frozenset(option.dest for option in spec.options) for name, spec in ALGORITHMS.items()}


class AlgorithmArgs(argparse.Namespace):
    """The flags as one algorithm's code sees them: the run's flags and its own options.

    Reading another algorithm's option is an AttributeError naming the spec to declare it in
    (`getattr(args, name, default)` then gives the default), so an algorithm cannot quietly
    depend on a flag it does not declare. `vars()` still holds every flag: configs and results
    record them all, as before."""

    def options_not_read(self) -> frozenset:
        """Other algorithms' options: recorded, but they change nothing this run computes."""
        algorithm = object.__getattribute__(self, "__dict__").get("algorithm")
        return OPTION_DESTS - DECLARED[algorithm] if algorithm in DECLARED else frozenset()

    def __getattribute__(self, name):
        if name in OPTION_DESTS:
            algorithm = object.__getattribute__(self, "__dict__").get("algorithm")
            if algorithm in DECLARED and name not in DECLARED[algorithm]:
                raise AttributeError(f"{algorithm} reads --{name}, which its spec does not declare: add it to the "
                                     f"options in flcore/algorithms/{MODULE_OF[ALGORITHMS[algorithm]]}.py")
        return super().__getattribute__(name)
