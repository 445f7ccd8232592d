"""What a server may call on a client is declared, and a call that does not fit fails on the server's line."""
import pytest

from flcore.clients.clientbase import Client
from flcore.clients.clientlg import clientLG
from flcore.clients.interface import check_call, declared_calls, server_call
from flcore.registry import SPECS, get_server_class
from tests.helpers import build_server_from_flags


class Declares(Client):
    @server_call(payload=("head",))
    def load(self, payload):
        return {}

    def helper(self, payload=None):  # not declared: the server may not call it
        return {}


class Overrides(Declares):
    def load(self, payload):  # an override stays declared, with its keys
        return {"overridden": True}


def test_declarations_are_inherited_and_overrides_stay_declared():
    calls = declared_calls(Overrides)
    assert calls["load"] == ("head",)
    assert {"setup", "train", "evaluate", "checkpoint_state", "restore_checkpoint_state"} <= set(calls)
    assert "helper" not in calls and "guarded" not in calls


def test_a_wrong_name_or_payload_is_a_clear_error():
    assert check_call(Overrides, Overrides.load, {"head": 1}) == "load"
    assert check_call(Overrides, "evaluate", None) == "evaluate"
    with pytest.raises(TypeError, match=r"^Overrides has no server call 'helper'; the server may call .*load"):
        check_call(Overrides, Overrides.helper, None)
    with pytest.raises(TypeError, match=r"^Overrides has no server call 'laod'"):
        check_call(Overrides, "laod", {"head": 1})
    with pytest.raises(TypeError, match=r"^Overrides.load needs a payload with head; missing head \(got \['hed'\]\)$"):
        check_call(Overrides, "load", {"hed": 1})


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_every_client_class_declares_the_standard_calls(spec):
    client_class = get_server_class(spec.name).client_class
    assert {"setup", "train", "evaluate", "checkpoint_state", "restore_checkpoint_state"} <= set(
        declared_calls(client_class))


def test_a_server_calling_an_undeclared_method_fails_before_any_client_is_reached(data_root, tmp_path):
    server = build_server_from_flags(["-algo", "LG-FedAvg", "-data", "Tiny", "--data_root", data_root, "-nc", "4",
                                      "-dev", "cpu", "--out", str(tmp_path)])
    try:
        assert server.client_class is clientLG
        before = server.executor.traffic.floats_down
        with pytest.raises(TypeError, match="clientLG has no server call 'load_hed'"):
            server.broadcast(server.all_client_ids, "load_hed", {"head": server.head})
        with pytest.raises(TypeError, match="clientLG.load_head needs a payload with head; missing head"):
            server.broadcast(server.all_client_ids, clientLG.load_head, {"weights": server.head})
        assert server.executor.traffic.floats_down == before  # nothing was sent
    finally:
        server.close()
