"""FedTGP (Zhang et al., AAAI 2024)."""
from flcore.htfllib_flags import LAMDA, MARGIN_THRETHOLD, SERVER_BATCH_SIZE, SERVER_EPOCHS, SERVER_LEARNING_RATE
from flcore.spec import AlgorithmSpec

# HtFLlib trains the prototypes with SGD at the clients' -lr and batch size -lbs (0.01 and 10
# in all its scripts); here they are -slr and -sbs with those values.
SPECS = (AlgorithmSpec(
    name="FedTGP", server="flcore.servers.servertgp:FedTGP", paper="Zhang et al., AAAI 2024",
    summary="trainable global prototypes, separated by an adaptive margin",
    options=(LAMDA.but(default=10.0, help="weight of the MSE to the global prototypes"),
             SERVER_EPOCHS.but(default=100, help="epochs of the prototype model per round"),
             MARGIN_THRETHOLD.but(default=100.0, help="upper bound of the adaptive margin"),
             SERVER_LEARNING_RATE.but(default=0.01, help="SGD learning rate of the prototype model"),
             SERVER_BATCH_SIZE.but(default=10, help="batch size of the prototype model's training")),
    test_flags=("-se", "2")),)
