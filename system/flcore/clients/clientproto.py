"""FedProto client (Tan et al., AAAI 2022).

Trains with CE + lamda * MSE(feature, global prototype of the sample's class),
uploads the mean feature and the sample count of each class it holds, and predicts
the class whose global prototype is nearest to the feature.
"""
from flcore.clients.clientclassmean import ClassMeanClient
from flcore.prototypes import nearest_prototype_scores


class clientProto(ClassMeanClient):
    shared_vector = "features"
    send_counts = True  # the server weights prototypes by samples, as the paper does

    def scores(self, x):
        features = self.model.base(x)
        if self.global_table is None:
            # Before the first aggregation there is no prototype to compare with.
            return self.model.head(features)
        return nearest_prototype_scores(features, self.global_table, self.global_present)
