"""What a server may call on a client: methods declared with `@server_call`.

A server reaches its clients only through an executor, by method name; a name or a payload
that does not fit would otherwise fail inside the executor (in a Ray actor, far from the line
that made the call). `Server.broadcast`/`Server.scatter` check each call here first, so a
wrong name or a payload without the keys a method declares fails on the server's line.
"""


def server_call(method=None, *, payload: tuple = ()):
    """Declare `method` callable by the server; `payload` names the keys its payload must hold.
    An override in a subclass stays declared (declarations are looked up along the MRO)."""
    def declare(function):
        function.server_call_payload = tuple(payload)
        return function
    return declare(method) if method is not None else declare


def declared_calls(client_class) -> dict:
    """{name: payload keys} of every server call `client_class` declares or inherits (the
    nearest declaration of a name wins)."""
    calls = {}
    for klass in reversed(client_class.__mro__):
        for name, value in vars(klass).items():
            if hasattr(value, "server_call_payload"):
                calls[name] = value.server_call_payload
    return calls


def check_call(client_class, method, payload) -> str:
    """The name of `method` (a name, or the client class's function) when `client_class` declares
    it a server call and `payload` holds the keys it needs; a TypeError saying what is wrong otherwise."""
    name = method if isinstance(method, str) else getattr(method, "__name__", repr(method))
    calls = declared_calls(client_class)
    if name not in calls:
        raise TypeError(f"{client_class.__name__} has no server call {name!r}; the server may call "
                        f"{', '.join(sorted(calls))} (client methods declared with @server_call)")
    needed = calls[name]
    if needed:
        missing = [key for key in needed if not isinstance(payload, dict) or key not in payload]
        if missing:
            got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise TypeError(f"{client_class.__name__}.{name} needs a payload with {', '.join(needed)}; "
                            f"missing {', '.join(missing)} (got {got})")
    return name
