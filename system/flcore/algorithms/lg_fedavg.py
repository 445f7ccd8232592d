"""LG-FedAvg (Liang et al., 2020)."""
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(name="LG-FedAvg", server="flcore.servers.serverlg:LGFedAvg", paper="Liang et al., 2020",
                       summary="clients keep their backbones and average their heads", test_flags=()),)
