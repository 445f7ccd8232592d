"""What a run prints: a line per evaluation and the summary at its end."""
import math

import numpy as np


def evaluation_line(name: str, rounds_done: int, summary: dict, extra: dict) -> str:
    return (f"[{name}] after {rounds_done} round(s): test acc {summary['test_acc']:.4f}"
            f" (client mean {summary['client_mean_acc']:.4f} +- {summary['client_std_acc']:.4f}),"
            f" auc {summary['test_auc']:.4f}, train loss {summary['train_loss']:.4f}"
            + "".join(f", {key.removeprefix('rs_')} {value:.4f}" for key, value in extra.items()))


def summary_lines(name: str, series) -> list:
    """The best accuracy and when, seconds per round, skipped updates and traffic per round."""
    acc = series["rs_test_acc"]
    best = int(np.argmax(acc))
    rounds = series["round_seconds"]
    per_round = float(np.median(rounds)) if rounds else math.nan
    lines = [f"[{name}] best test accuracy {acc[best]:.4f} after {series['eval_rounds'][best]} round(s); "
             f"median {per_round:.2f} s/round"]
    up, down = series["floats_up"], series["floats_down"]
    skipped = series["skipped_clients"]
    if any(skipped):
        rounds_hit = [r for r, count in enumerate(skipped) if count]
        lines.append(f"[{name}] note: {int(sum(skipped))} client update(s) in {len(rounds_hit)} round(s) were "
                     f"non-finite and left out (first in round {rounds_hit[0]}); those clients kept their "
                     f"weights from before")
    if up:
        lines.append(f"[{name}] traffic per round, all clients: {np.mean(up) / 1e6:.4g}M floats up, "
                     f"{np.mean(down) / 1e6:.4g}M floats down (mean of {len(up)} rounds); "
                     f"{series['setup_floats_down'][0] / 1e6:.4g}M floats down once at setup")
    return lines
