"""FedTGP client (Zhang et al., AAAI 2024): FedProto's client without sample counts.

The server learns the global prototypes instead of averaging, so it needs only the
clients' prototypes.
"""
from flcore.clients.clientproto import clientProto


class clientTGP(clientProto):
    send_counts = False
