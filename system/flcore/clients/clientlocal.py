"""Local: each client trains on its own data only; nothing is shared."""
from flcore.clients.clientbase import Client


class clientLocal(Client):
    """Plain cross-entropy training; the base client already does exactly this."""
