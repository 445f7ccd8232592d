"""FedGH (Yi et al., ACM MM 2023)."""
from flcore.htfllib_flags import SERVER_BATCH_SIZE, SERVER_EPOCHS, SERVER_LEARNING_RATE
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(
    name="FedGH", server="flcore.servers.servergh:FedGH", paper="Yi et al., ACM MM 2023",
    summary="the server trains one global head on the clients' prototypes",
    options=(SERVER_LEARNING_RATE.but(default=0.01, help="SGD learning rate of the global head"),
             # HtFLlib's main.py default; its total.sh passes -se 1 for its benchmark table (run_me.sh
             # paper does too), which leaves the head near its initialisation (docs/parity.md)
             SERVER_EPOCHS.but(default=100, help="epochs of the global head over the uploaded prototypes per round"),
             SERVER_BATCH_SIZE.but(default=10, help="batch size of the global head's training")),
    test_flags=("-se", "2")),)
