"""One-shot DeepInversion's flags.

Defaults follow the method's loss weights (BN 10, TV 1e-3, jitter 2, temperature 3) but
synthesise far fewer, smaller batches with far fewer Adam steps than the original (256
images, 2000 steps per batch) so a CPU run of MNIST5k takes minutes.
"""
from trainmodel.families import resolve_family
from trainmodel.models import find_model_name
from utils.errors import UserError

TEACHER_MODES = ("cycle", "sampling")


def add_arguments(parser) -> None:
    from cli import add_bool  # cli imports this module while it builds the parser

    g = parser.add_argument_group("DeepInversion")
    g.add_argument("--student_model", default=None, metavar="MODEL",
                   help="the student's architecture, a member of -m (default: the family's first)")
    g.add_argument("--teacher_epochs", type=int, default=20,
                   help="local epochs each client trains its teacher, once, with SGD at -lr (20)")
    g.add_argument("--di_teacher_mode", choices=TEACHER_MODES, default="cycle",
                   help="cycle: one teacher per synthetic batch, in turn, labels drawn from its own "
                        "class counts; sampling: Sampling DeepInversion, --di_teachers_per_step "
                        "teachers drawn for every Adam step, labels drawn from all teachers' summed "
                        "class counts (cycle)")
    g.add_argument("--di_teachers_per_step", type=int, default=3,
                   help="teachers whose losses are averaged in each step of sampling mode (3, as "
                        "the report's Sampling DI; all teachers when there are fewer)")
    g.add_argument("--di_batches", type=int, default=20,
                   help="synthetic batches made each round and added to the student's pool (20: "
                        "one per MNIST5k teacher in cycle mode)")
    g.add_argument("--di_batch_size", type=int, default=64,
                   help="images per synthetic batch (64; the original 256)")
    g.add_argument("--di_iterations", type=int, default=200,
                   help="Adam steps on the pixels of each batch (200; the original 2000)")
    g.add_argument("--di_lr", type=float, default=0.1,
                   help="Adam learning rate on the pixels (0.1)")
    g.add_argument("--di_bn_weight", type=float, default=10.0,
                   help="weight of the BatchNorm statistics term, summed over a teacher's BN layers (10)")
    g.add_argument("--di_tv_weight", type=float, default=1e-3,
                   help="weight of the total-variation prior (1e-3)")
    g.add_argument("--di_l2_weight", type=float, default=1e-5,
                   help="weight of the L2 norm of the batch (1e-5, the ImageNet DeepInversion "
                        "setting; pixels are also clamped to [-1, 1] after every step)")
    g.add_argument("--di_jitter", type=int, default=2,
                   help="largest random roll of the images, in pixels, each step (2)")
    g.add_argument("--di_competition", type=float, default=1.0,
                   help="Adaptive DeepInversion's weight of 1 - JS(teacher, student), used from "
                        "round 1 on, once the student has trained; 0 gives plain DeepInversion (1)")
    g.add_argument("--di_temperature", type=float, default=3.0,
                   help="softmax temperature of the Jensen-Shannon competition (3)")
    g.add_argument("--student_epochs", type=int, default=20,
                   help="epochs the student trains on the whole synthetic pool each round, SGD "
                        "(momentum 0.9) at -slr with batches of -sbs (20)")
    g.add_argument("--student_crop", type=int, default=2,
                   help="random-crop padding of the student's inputs, in pixels (2, for 32x32 "
                        "digits; CIFAR recipes pad 4; 0: no crop)")
    add_bool(g, "--student_flip", default=False,
             help="random horizontal flips of the student's inputs (off: a flipped digit is no "
                  "digit; turn on for natural images such as CIFAR)")


def student_architecture(student_model, model_family: str) -> str:
    """The student's canonical model name: `student_model` if it is in the family, else the
    family's first member when none is given."""
    family = resolve_family(model_family)
    if student_model is None:
        return family[0]
    name = find_model_name(student_model)
    if name not in family:
        raise UserError(f"--student_model {student_model} is not in -m {model_family}: choose one "
                        f"of {', '.join(family)}")
    return name


def validate(args) -> None:
    checks = [
        (args.teacher_epochs >= 1, "--teacher_epochs must be at least 1"),
        (args.di_teachers_per_step >= 1, "--di_teachers_per_step must be at least 1"),
        (args.di_batches >= 1, "--di_batches must be at least 1"),
        (args.di_batch_size >= 1, "--di_batch_size must be at least 1"),
        (args.di_iterations >= 0, "--di_iterations must not be negative"),
        (args.di_lr > 0, "--di_lr must be positive"),
        (args.di_bn_weight >= 0, "--di_bn_weight must not be negative"),
        (args.di_tv_weight >= 0, "--di_tv_weight must not be negative"),
        (args.di_l2_weight >= 0, "--di_l2_weight must not be negative"),
        (args.di_jitter >= 0, "--di_jitter must not be negative"),
        (args.di_competition >= 0, "--di_competition must not be negative"),
        (args.di_temperature > 0, "--di_temperature must be positive"),
        (args.student_epochs >= 0, "--student_epochs must not be negative"),
        (args.student_crop >= 0, "--student_crop must not be negative (0 turns cropping off)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if args.student_model is not None:
        student_architecture(args.student_model, args.model_family)
