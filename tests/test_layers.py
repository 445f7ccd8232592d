"""Imports point only downward: the layers in `.importlinter`, checked two ways.

- import-linter reads every module under system/ (and dataset/), imports inside functions
  included, and checks the contracts of `.importlinter`: the layers, nothing importing the
  entry points, no cycles. A broken contract is printed with the import that breaks it.
- A fresh interpreter imports every module of flcore/clients/ and must not end up with a
  server (or an entry point) loaded: what is actually executed, not only what is written.
"""
import glob
import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_DIR = os.path.join(ROOT, "system")
CONFIG = os.path.join(ROOT, ".importlinter")
CLIENTS_DIR = os.path.join(SYSTEM_DIR, "flcore", "clients")


def run_python(code: str, *argv: str, pythonpath: list) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath), COLUMNS="200")  # reports unwrapped
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


# ---- the import graph against .importlinter ----------------------------------------------------

LINT = textwrap.dedent("""
    import sys
    try:
        from importlinter.cli import lint_imports
    except ImportError:
        sys.exit("import-linter is missing: pip install -r requirements.txt (it is under '# Tests')")
    sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))
""")


def test_imports_keep_the_layers_of_importlinter():
    done = run_python(LINT, CONFIG, pythonpath=[SYSTEM_DIR, ROOT])
    report = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, f"an import breaks the layers (see .importlinter):\n{report}"
    assert "BROKEN" not in report and "KEPT" in report, report


# ---- loading every client loads no server --------------------------------------------------------

CLIENT_MODULES = sorted(f"flcore.clients.{os.path.basename(path)[:-len('.py')]}"
                        for path in glob.glob(os.path.join(CLIENTS_DIR, "*.py"))
                        if os.path.basename(path) != "__init__.py")

IMPORT_CLIENTS = textwrap.dedent("""
    import importlib, json, sys

    FORBIDDEN = ("flcore.servers", "flcore.registry", "flcore.algorithms", "main", "cli", "report")

    def forbidden_loaded():
        return sorted(name for name in sys.modules
                      if any(name == top or name.startswith(top + ".") for top in FORBIDDEN))

    imported, breaks = [], []
    for name in json.loads(sys.argv[1]):
        before = set(forbidden_loaded())
        module = importlib.import_module(name)
        imported.append(module.__name__)
        new = [loaded for loaded in forbidden_loaded() if loaded not in before]
        if new:
            breaks.append(f"importing {name} loaded {', '.join(new)}")
    print(json.dumps({"imported": imported, "breaks": breaks}))
""")


def test_every_client_module_is_found():
    files = glob.glob(os.path.join(CLIENTS_DIR, "*.py"))
    assert len(CLIENT_MODULES) == len(files) - 1 > 2  # all but __init__.py
    assert {"flcore.clients.clientbase", "flcore.clients.factory"} <= set(CLIENT_MODULES)


def test_importing_every_client_loads_no_server_nor_entry_point():
    # Only system/ on the path: a client importing dataset/ (or anything outside) fails too.
    done = run_python(IMPORT_CLIENTS, json.dumps(CLIENT_MODULES), pythonpath=[SYSTEM_DIR])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == CLIENT_MODULES  # every flcore/clients/*.py, really imported
    assert not result["breaks"], "clients import no server, registry or entry point:\n" + "\n".join(result["breaks"])
