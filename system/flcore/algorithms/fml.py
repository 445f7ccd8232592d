"""FML, federated mutual learning (Shen et al., 2020)."""
from flcore.htfllib_flags import ALPHA, BETA
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(
    name="FML", server="flcore.servers.serverfml:FML", paper="Shen et al., 2020",
    summary="a shared small model, averaged, and each client's private model teach each other",
    options=(ALPHA.but(default=0.5, help="weight of the private model's cross-entropy; its KL term gets 1 - alpha"),
             BETA.but(default=0.5, help="weight of the shared model's cross-entropy; its KL term gets 1 - beta")),
    test_flags=()),)
