"""`--tensorboard`: a run's series as a TensorBoard log, written with torch's SummaryWriter
(which needs the `tensorboard` package; imported only when the flag is given).

Steps are rounds done, as in the results file: evaluations at the rounds they follow, a round's
time and traffic at the round count it completes, generated images at the round they were made for.
"""
from torch.utils.tensorboard import SummaryWriter

#: evaluation summary key -> TensorBoard tag
EVALUATION_TAGS = {"test_acc": "accuracy/test", "client_mean_acc": "accuracy/client_mean",
                   "client_std_acc": "accuracy/client_std", "test_auc": "auc/test", "train_loss": "loss/train"}
#: per-round series -> TensorBoard tag
ROUND_TAGS = {"round_seconds": "time/round_seconds", "floats_up": "traffic/floats_up",
              "floats_down": "traffic/floats_down", "bytes_up": "traffic/bytes_up",
              "bytes_down": "traffic/bytes_down", "peak_host_mib": "memory/peak_host_mib",
              "peak_gpu_mib": "memory/peak_gpu_mib"}


class TensorBoardLog:
    def __init__(self, folder: str, rounds_done: int):
        # purge_step: a resumed run drops what the interrupted one logged after its checkpoint
        self.writer = SummaryWriter(folder, purge_step=rounds_done or None)

    def evaluation(self, rounds_done: int, summary: dict, extra: dict) -> None:
        for key, tag in EVALUATION_TAGS.items():
            self.writer.add_scalar(tag, summary[key], rounds_done)
        for name, value in extra.items():
            self.writer.add_scalar("extra/" + name.removeprefix("rs_"), value, rounds_done)

    def round(self, rounds_done: int, series) -> None:
        for name, tag in ROUND_TAGS.items():
            if series[name]:
                self.writer.add_scalar(tag, series[name][-1], rounds_done)
        for phase, seconds in series["phase_seconds"].items():
            self.writer.add_scalar("time/phase/" + phase, seconds[-1], rounds_done)

    def image(self, tag: str, grid, round_idx: int) -> None:
        """`grid`: the saved PNG's pixels, an HWC uint8 RGB array."""
        self.writer.add_image(tag, grid, round_idx, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
