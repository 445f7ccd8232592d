"""GPT-FL's flags."""
from flcore.text_to_image import DEFAULT_ANCHOR_SPREAD
from utils.errors import UserError

DEFAULT_PROMPTS_PER_CLASS = 20


def add_arguments(parser) -> None:
    g = parser.add_argument_group("GPT-FL")
    g.add_argument("--synthetic_per_class", type=int, default=0,
                   help="synthetic images per class (default 0: three times the clients' real "
                        "training set, split evenly over the classes)")
    g.add_argument("--prompt_model", default=None, metavar="DIR",
                   help="a local T5 text-to-text folder (e.g. a CommonGen model) that writes "
                        "--prompts_per_class sentences per class around its label name "
                        "(default: one template prompt per class, 'a photo of the digit 3')")
    g.add_argument("--prompts_per_class", type=int, default=DEFAULT_PROMPTS_PER_CLASS,
                   help="sentences --prompt_model writes per class; a class's images cycle through them "
                        f"({DEFAULT_PROMPTS_PER_CLASS})")
    g.add_argument("--anchor_spread", type=float, default=DEFAULT_ANCHOR_SPREAD,
                   help="built-in generator only: how far an image's latent moves from its prompt's "
                        f"anchor towards a random latent, 0 (copies) to 1 (ignores the prompt) "
                        f"({DEFAULT_ANCHOR_SPREAD})")


def validate(args) -> None:
    if args.synthetic_per_class < 0:
        raise UserError("--synthetic_per_class must be 0 (three times the real data) or more")
    if args.prompts_per_class < 1:
        raise UserError("--prompts_per_class must be at least 1")
    if not 0 <= args.anchor_spread <= 1:
        raise UserError("--anchor_spread must be in [0, 1]")
