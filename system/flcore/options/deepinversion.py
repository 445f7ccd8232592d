"""One-shot DeepInversion's flags."""
from utils.errors import UserError


def add_arguments(parser) -> None:
    g = parser.add_argument_group("DeepInversion")
    g.add_argument("--student_model", default=None, metavar="MODEL",
                   help="the student's architecture, a member of -m (default: the family's first)")
    g.add_argument("--teacher_epochs", type=int, default=20,
                   help="local epochs each client trains its teacher, once (20)")


def validate(args) -> None:
    if args.teacher_epochs < 1:
        raise UserError("--teacher_epochs must be at least 1")
