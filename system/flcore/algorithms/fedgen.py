"""FedGen (Zhu et al., ICML 2021), in HtFLlib's form for heterogeneous models."""
from flcore.htfllib_flags import GENERATOR_LEARNING_RATE, HIDDEN_DIM, NOISE_DIM, SERVER_EPOCHS
from flcore.spec import AlgorithmSpec, Option

#: how a client scales the generated features its head learns from (see clientgen.py)
FEATURE_SCALES = ("batch", "generator")

SPECS = (AlgorithmSpec(
    name="FedGen", server="flcore.servers.servergen:FedGen", paper="Zhu et al., ICML 2021",
    summary="a server-trained feature generator regularises the clients' heads",
    options=(NOISE_DIM.but(default=32, help="noise width"),
             GENERATOR_LEARNING_RATE.but(default=3e-4, help="server generator learning rate (Adam)"),
             HIDDEN_DIM.but(default=512, help="generator hidden width"),
             SERVER_EPOCHS.but(default=100, help="generator training steps per round"),
             Option(("--fedgen_htfllib",), bool, False,
                    "FedGen as HtFLlib's code computes it: clients regularise from round 0 on with the server's "
                    "initial, untrained generator (HtFLlib never saves the trained one), noise uniform in [0, 1), "
                    "features at the generator's own scale"),
             Option(("--fedgen_feature_scale",), str, "batch", choices=FEATURE_SCALES,
                    help="batch: a client rescales each batch of generated features to the mean norm of its own "
                         "features of the real batch it trains on; generator: as the generator makes them (the "
                         "official FedGen and HtFLlib; --fedgen_htfllib implies it)")),
    test_flags=("-se", "3", "-nd", "8", "-hd", "16")),)
