"""FedKD (Wu et al., Nature Communications 2022)."""
from flcore.htfllib_flags import MENTEE_LEARNING_RATE, T_END, T_START
from flcore.spec import AlgorithmSpec

SPECS = (AlgorithmSpec(
    name="FedKD", server="flcore.servers.serverkd:FedKD", paper="Wu et al., Nat. Commun. 2022",
    summary="a shared mentee distilled from each client's mentor, its updates SVD-compressed",
    options=(MENTEE_LEARNING_RATE.but(default=0.01, help="learning rate of the shared mentee"),
             T_START.but(default=0.95, help="SVD energy kept at the start"),
             T_END.but(default=0.98, help="SVD energy kept at the end")),
    test_flags=()),)
