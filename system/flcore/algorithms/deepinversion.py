"""One-shot DeepInversion (Yin et al., CVPR 2020), with Adaptive DeepInversion's competition.

Defaults follow the method's loss weights (BN 10, TV 1e-3, jitter 2, temperature 3) but
synthesise far fewer, smaller batches with far fewer Adam steps than the original (256
images, 2000 steps per batch) so a CPU run of MNIST5k takes minutes.
"""
from flcore.htfllib_flags import SAVE_GENERATED_EVERY, SERVER_BATCH_SIZE, SERVER_LEARNING_RATE
from flcore.spec import AlgorithmSpec, Option

TEACHER_MODES = ("cycle", "sampling")
STUDENT_LABELS = ("ensemble", "target")


def at_least(low):
    return dict(check=lambda v: v >= low, must=f"be at least {low}")


NOT_NEGATIVE = dict(check=lambda v: v >= 0, must="not be negative")
POSITIVE = dict(check=lambda v: v > 0, must="be positive")

SPECS = (AlgorithmSpec(
    name="DeepInversion", server="flcore.servers.serverdi:DeepInversion", paper="Yin et al., CVPR 2020",
    summary="one-shot: images inverted from the clients' trained teachers train one student",
    options=(
        SERVER_LEARNING_RATE.but(default=0.01, help="the student's SGD learning rate"),
        SERVER_BATCH_SIZE.but(default=64, help="the student's batch size"),
        SAVE_GENERATED_EVERY.but(help="save the synthetic images as a PNG grid every this many rounds (0: never); "
                                      "default: rounds 0, 1, 2, 5, 10, 20, 50, ... and the last"),
        Option(("--student_model",), str, None, metavar="MODEL",
               help="the student's architecture, a member of -m (default: the family's first)"),
        Option(("--teacher_epochs",), int, 20, "local epochs each client trains its teacher, once, with SGD at -lr "
                                               "(20)", **at_least(1)),
        Option(("--di_teacher_mode",), str, "cycle", choices=TEACHER_MODES,
               help="cycle: one teacher per synthetic batch, in turn, labels drawn from its own class counts; "
                    "sampling: Sampling DeepInversion, --di_teachers_per_step teachers drawn for every Adam step, "
                    "labels drawn from all teachers' summed class counts (cycle)"),
        Option(("--di_teachers_per_step",), int, 3,
               "teachers whose losses are averaged in each step of sampling mode (3, as the report's Sampling DI; "
               "all teachers when there are fewer)", **at_least(1)),
        Option(("--di_batches",), int, 20, "synthetic batches made each round and added to the student's pool (20: "
                                           "one per MNIST5k teacher in cycle mode)", **at_least(1)),
        Option(("--di_batch_size",), int, 64, "images per synthetic batch (64; the original 256)", **at_least(1)),
        Option(("--di_iterations",), int, 200, "Adam steps on the pixels of each batch (200; the original 2000)",
               **NOT_NEGATIVE),
        Option(("--di_lr",), float, 0.1, "Adam learning rate on the pixels (0.1)", **POSITIVE),
        Option(("--di_bn_weight",), float, 10.0,
               "weight of the BatchNorm statistics term, summed over a teacher's BN layers (10)", **NOT_NEGATIVE),
        Option(("--di_tv_weight",), float, 1e-3, "weight of the total-variation prior (1e-3)", **NOT_NEGATIVE),
        Option(("--di_l2_weight",), float, 1e-5,
               "weight of the L2 norm of the batch (1e-5, the ImageNet DeepInversion setting; pixels are also "
               "clamped to [-1, 1] after every step)", **NOT_NEGATIVE),
        Option(("--di_jitter",), int, 2, "largest random roll of the images, in pixels, each step (2)",
               **NOT_NEGATIVE),
        Option(("--di_competition",), float, 1.0,
               "Adaptive DeepInversion's weight of 1 - JS(teacher, student), used from round 1 on, once the student "
               "has trained; 0 gives plain DeepInversion (1)", **NOT_NEGATIVE),
        Option(("--di_temperature",), float, 3.0, "softmax temperature of the Jensen-Shannon competition (3)",
               **POSITIVE),
        Option(("--student_labels",), str, "ensemble", choices=STUDENT_LABELS,
               help="what the student learns from: ensemble: the soft labels all teachers together give each "
                    "synthetic image (knowledge distillation at --student_temperature, as DeepInversion's data-free "
                    "transfer); target: the label the image was synthesised for, hard cross-entropy (ensemble)"),
        Option(("--student_temperature",), float, 3.0,
               "temperature of the teachers' soft labels and of the student's distillation loss (3)", **POSITIVE),
        Option(("--student_epochs",), int, 20,
               "epochs the student trains on the whole synthetic pool each round, SGD (momentum 0.9) at -slr with "
               "batches of -sbs (20)", **NOT_NEGATIVE),
        Option(("--student_crop",), int, 2,
               "random-crop padding of the student's inputs, in pixels (2, for 32x32 digits; CIFAR recipes pad 4; "
               "0: no crop)", check=lambda v: v >= 0, must="not be negative (0 turns cropping off)"),
        Option(("--student_flip",), bool, False,
               "random horizontal flips of the student's inputs (off: a flipped digit is no digit; turn on for "
               "natural images such as CIFAR)")),
    test_flags=("--teacher_epochs", "1", "--di_batches", "2", "--di_batch_size", "8", "--di_iterations", "3",
                "--student_epochs", "1", "-sbs", "8", "--save_generated_every", "0")),)
