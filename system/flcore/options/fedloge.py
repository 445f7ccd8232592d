"""FedLoGe's flags."""
from flcore.sse_c import SPARSITY, STEPS
from utils.errors import UserError


def add_arguments(parser) -> None:
    g = parser.add_argument_group("FedLoGe")
    g.add_argument("--sse_c_steps", type=int, default=STEPS,
                   help=f"Adam steps refining the sparse ETF classifier SSE-C ({STEPS})")
    g.add_argument("--sse_c_sparsity", type=float, default=SPARSITY,
                   help=f"fraction of SSE-C's entries zeroed for good ({SPARSITY})")
    g.add_argument("--loge_momentum", type=float, default=0.5,
                   help="SGD momentum of FedLoGe's three optimisers (0.5)")
    g.add_argument("--loge_realign_norm", type=float, default=1.7,
                   help="norm every global-head row is rescaled to by the realignment (1.7)")


def validate(args) -> None:
    if args.sse_c_steps < 0:
        raise UserError("--sse_c_steps must not be negative")
    if not 0 <= args.sse_c_sparsity < 1:
        raise UserError("--sse_c_sparsity must be in [0, 1)")
    if not 0 <= args.loge_momentum < 1:
        raise UserError("--loge_momentum must be in [0, 1)")
    if args.loge_realign_norm <= 0:
        raise UserError("--loge_realign_norm must be positive")
