"""FedProto (Tan et al., AAAI 2022): clients share class prototypes (mean features).

Each round the selected clients upload one prototype per class they hold with its
sample count; the server's global prototype of a class is the sample-weighted mean
of the clients' prototypes of that class, and every client receives them.
"""
from flcore.clients.clientproto import clientProto
from flcore.prototypes import average_per_class
from flcore.servers.serverclassmean import ClassMeanServer


def aggregate_prototypes(replies: list[dict], num_classes: int) -> dict:
    """Per class, the mean of the uploaded prototypes weighted by the uploaders' sample counts."""
    means, classes = average_per_class([r["means"] for r in replies], [r["classes"] for r in replies],
                                       num_classes, weights=[r["counts"] for r in replies])
    return {"means": means, "classes": classes}


class FedProto(ClassMeanServer):
    client_class = clientProto

    def aggregate(self, replies):
        return aggregate_prototypes(replies, self.num_classes)
