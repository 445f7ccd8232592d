"""Local: clients train alone, the reference every federated method must beat."""
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(name="Local", server="flcore.servers.serverlocal:Local",
                       summary="clients train alone and exchange nothing", test_flags=()),)
