"""What an algorithm is, declared once beside its code: `AlgorithmSpec` and its `Option`s.

Each module of `flcore/algorithms/` declares `SPECS` (one or more specs). The registry
finds them; the command line's flags and `-h`, the defaults filled in before a run, the
checks of option values, the tests' runs of every algorithm, `run_me.sh`'s lists and the
README's tables are read from (or checked against) them. This module imports nothing of
the library, so listing algorithms loads no model, server or optional dependency.
"""
import dataclasses
from dataclasses import dataclass
from typing import Callable

from utils.errors import UserError


@dataclass(frozen=True)
class Option:
    """One flag an algorithm reads.

    `flags` are its spellings, HtFLlib's short ones first and `--dest` last; `default` is
    this algorithm's default and `help` what the flag means for this algorithm (a flag
    HtFLlib shares among methods, such as `-lam`, means a different weight in each). `check`
    is a test of a value, and `must` completes "FLAG must ..." when the test fails.
    `shared` marks HtFLlib's flags that several algorithms read with their own defaults: on
    the command line they default to unset, and each run fills in its algorithm's default.
    """
    flags: tuple
    type: type
    default: object
    help: str
    check: Callable = None
    must: str = ""
    choices: tuple = None
    metavar: str = None
    shared: bool = False

    def __post_init__(self):
        if not self.flags or not self.flags[-1].startswith("--"):
            raise ValueError(f"{self.flags}: the last spelling must be the long one, --name")
        if self.check is not None and not self.must:
            raise ValueError(f"{self.flags[-1]}: a check needs `must`, the end of its error message")

    @property
    def dest(self) -> str:
        return self.flags[-1][2:]

    @property
    def flag(self) -> str:
        """The spelling users know: the first (HtFLlib's short one where there is one)."""
        return self.flags[0]

    def but(self, **changes) -> "Option":
        """This flag with another default, meaning or check (for one algorithm)."""
        return dataclasses.replace(self, **changes)

    def problem(self, value):
        """The error message for `value`, or None when it is accepted."""
        if self.check is None or value is None:
            return None
        return None if self.check(value) else f"{self.flag} must {self.must}"


@dataclass(frozen=True, eq=False)  # hashed by identity: one object per algorithm
class AlgorithmSpec:
    """One `-algo` name.

    - `server`: "module:Class", imported only when the algorithm runs (its client class is
      the server's `client_class`);
    - `options`: the flags it reads beyond the run's common ones, with its defaults;
    - `defaults`: its defaults for common flags (e.g. FedLoGe's `-lr 0.03`);
    - `aliases`: other `-algo` names for it (HtFLlib's);
    - `summary`, `paper`: one line each for `-h` and the README's table;
    - `test_flags`: flags that make a run small on the tests' tiny dataset (the contract
      tests run every algorithm that has them); `test_generator`: its test runs get a tiny
      built-in generator as -GPath; `untested`: why an algorithm has no `test_flags`.
    """
    name: str
    server: str
    summary: str
    paper: str = ""
    options: tuple = ()
    defaults: dict = dataclasses.field(default_factory=dict)
    aliases: tuple = ()
    test_flags: tuple = None
    test_generator: bool = False
    untested: str = ""

    def __post_init__(self):
        if ":" not in self.server:
            raise ValueError(f"{self.name}: server must be 'module:Class', got {self.server!r}")
        if (self.test_flags is None) == (not self.untested):
            raise ValueError(f"{self.name}: give test_flags, or say in `untested` why there are none")
        dests = [option.dest for option in self.options]
        if len(dests) != len(set(dests)):
            raise ValueError(f"{self.name}: an option is declared twice")

    @property
    def names(self) -> tuple:
        return (self.name, *self.aliases)

    def option(self, dest: str) -> Option:
        for option in self.options:
            if option.dest == dest:
                return option
        raise KeyError(f"{self.name} has no option {dest!r}")

    @property
    def option_defaults(self) -> dict:
        """{dest: default} of every flag this algorithm sets a default for."""
        return {**self.defaults, **{option.dest: option.default for option in self.options}}

    def check_options(self, args) -> None:
        """A one-line UserError for the first of this algorithm's options whose value is refused."""
        for option in self.options:
            problem = option.problem(getattr(args, option.dest, None))
            if problem:
                raise UserError(problem)
