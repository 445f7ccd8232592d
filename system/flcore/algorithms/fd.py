"""FD, federated distillation (Jeong et al., 2018), HtFLlib's FedDistill."""
from flcore.htfllib_flags import LAMDA
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(
    name="FD", server="flcore.servers.serverfd:FD", aliases=("FedDistill",), paper="Jeong et al., 2018",
    summary="clients share per-class mean logits and are pulled towards the global ones",
    options=(LAMDA.but(default=1.0, help="weight of the MSE to the global logits"),),
    test_flags=()),)
