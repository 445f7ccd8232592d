"""FedLoGe (Xiao et al., ICLR 2024)."""
from flcore.spec import AlgorithmSpec, Option
from flcore.sse_c import SPARSITY, STEPS

SPECS = (AlgorithmSpec(
    name="FedLoGe", server="flcore.servers.serverloge:FedLoGe", paper="Xiao et al., ICLR 2024",
    summary="one shared backbone on a sparse fixed ETF classifier, realigned global and personal heads",
    defaults={"local_learning_rate": 0.03},
    options=(
        Option(("--sse_c_steps",), int, STEPS, f"Adam steps refining the sparse ETF classifier SSE-C ({STEPS})",
               check=lambda v: v >= 0, must="not be negative"),
        Option(("--sse_c_sparsity",), float, SPARSITY, f"fraction of SSE-C's entries zeroed for good ({SPARSITY})",
               check=lambda v: 0 <= v < 1, must="be in [0, 1)"),
        Option(("--loge_momentum",), float, 0.5, "SGD momentum of FedLoGe's three optimisers (0.5)",
               check=lambda v: 0 <= v < 1, must="be in [0, 1)"),
        Option(("--loge_realign_norm",), float, 1.7, "norm every global-head row is rescaled to by the "
                                                     "realignment (1.7)", check=lambda v: v > 0, must="be positive")),
    test_flags=("-m", "ResNet4", "--sse_c_steps", "5")),)
