"""FedProto (Tan et al., AAAI 2022)."""
from flcore.htfllib_flags import LAMDA
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(
    name="FedProto", server="flcore.servers.serverproto:FedProto", paper="Tan et al., AAAI 2022",
    summary="clients share per-class feature means (prototypes) and are pulled towards the global ones",
    options=(LAMDA.but(default=10.0, help="weight of the MSE to the global prototypes"),),
    test_flags=("-se", "2")),)
