"""Building one client: its seeded model, then the algorithm's client around it.

Executors (`utils.executors`, `utils.ray_executor`) hold clients but know nothing of
models or algorithms: the server hands them a `ClientFactory`, and they call it for each
client id they hold, in this process or in a Ray actor (so it must pickle: it keeps only
the client class, which pickles by reference, and the run's seed).
"""
from trainmodel.families import build_client_model


class ClientFactory:
    """`factory(args, cid, client_data)` is client `cid` of `client_class`, with the model
    `build_client_model` initialises from `seed` for it: the same wherever it is built.

    `args` come with each call because an executor may change them where it builds
    (a Ray actor sees its GPU as device 0)."""

    def __init__(self, client_class, seed: int):
        self.client_class = client_class
        self.seed = seed

    def __call__(self, args, cid: int, client_data):
        image_shape = tuple(client_data.train_x.shape[1:])
        model = build_client_model(args.model_family, cid, args.num_classes, args.feature_dim, image_shape[-1],
                                   self.seed, in_channels=image_shape[0],
                                   vit_mlp_head=getattr(args, "vit_mlp_head", False))
        return self.client_class(args, cid, model, client_data, self.seed)

    def __repr__(self) -> str:
        return f"ClientFactory({self.client_class.__name__}, seed={self.seed})"
