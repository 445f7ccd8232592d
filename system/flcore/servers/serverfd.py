"""FD / FedDistill (Jeong et al., 2018): clients share per-class average logits.

Each round the selected clients upload their mean logits per class; the server's
global logits of a class are the plain average over the clients holding it, and
every client receives them as distillation targets.
"""
from flcore.clients.clientfd import clientFD
from flcore.prototypes import average_per_class
from flcore.servers.serverclassmean import ClassMeanServer


def aggregate_logits(replies: list[dict], num_classes: int) -> dict:
    """Per class, the unweighted mean of the uploaded logits over the clients holding it."""
    means, classes = average_per_class([r["means"] for r in replies], [r["classes"] for r in replies],
                                       num_classes)
    return {"means": means, "classes": classes}


class FD(ClassMeanServer):
    client_class = clientFD

    def aggregate(self, replies):
        return aggregate_logits(replies, self.num_classes)
