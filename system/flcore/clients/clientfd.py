"""FD client (Jeong et al., 2018, federated distillation).

Trains with CE + lamda * MSE(logits, global average logits of the sample's class)
and uploads the mean logits of each class it holds. Predicts with its own head.
"""
from flcore.clients.clientclassmean import ClassMeanClient


class clientFD(ClassMeanClient):
    shared_vector = "logits"
