"""Sample-weighted averaging of state dicts (FedAvg's rule), shared by the methods that
average a shared part of the model: LG-FedAvg's heads, FML's global model, FedKD's
mentee updates."""


def weighted_average(states: list[dict], weights: list[float]) -> dict:
    """sum_i w_i * state_i / sum_i w_i, key by key.

    Integer tensors (e.g. BatchNorm's batch counters) cannot be averaged meaningfully;
    they are taken from the first state.
    """
    if not states:
        raise ValueError("nothing to average")
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} states but {len(weights)} weights")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must sum to a positive number, got {total}")
    averaged = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            averaged[key] = sum(state[key] * (weight / total) for state, weight in zip(states, weights))
        else:
            averaged[key] = first.clone()
    return averaged


def average_uploads(replies: list[dict], key: str) -> dict:
    """The state dicts clients uploaded under `key`, weighted by their training samples."""
    return weighted_average([reply[key] for reply in replies], [reply["num_samples"] for reply in replies])
