"""GPT-FL's flags."""
from utils.errors import UserError


def add_arguments(parser) -> None:
    g = parser.add_argument_group("GPT-FL")
    g.add_argument("--synthetic_per_class", type=int, default=0,
                   help="synthetic images per class (default 0: three times the clients' real "
                        "training set, split evenly over the classes)")
    g.add_argument("--prompt_model", default=None, metavar="DIR",
                   help="a local T5 text-to-text folder that writes one prompt per image from the "
                        "label name (default: prompts from templates)")


def validate(args) -> None:
    if args.synthetic_per_class < 0:
        raise UserError("--synthetic_per_class must be 0 (three times the real data) or more")
