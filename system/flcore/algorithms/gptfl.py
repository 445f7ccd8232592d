"""GPT-FL (Zhang et al., 2023): a model pre-trained on generated data, then federated."""
from flcore.htfllib_flags import (GEN_BATCH_SIZE, GENERATOR_PATH, SD_STEPS, SERVER_BATCH_SIZE, SERVER_EPOCHS,
                                  SERVER_LEARNING_RATE)
from flcore.spec import AlgorithmSpec, Option
from flcore.text_to_image import DEFAULT_ANCHOR_SPREAD

DEFAULT_PROMPTS_PER_CLASS = 20

# The authors' script trains 200 epochs at batch 32 (T_max 200); 3 epochs keep `-algo GPT-FL -gr 2`
# on MNIST5k near a minute on two idle CPU cores (raise -se on a GPU).
SPECS = (AlgorithmSpec(
    name="GPT-FL", server="flcore.servers.servergptfl:GPTFL", paper="Zhang et al., 2023",
    summary="each architecture pre-trained on images generated from class prompts, then averaged per architecture",
    options=(
        SERVER_EPOCHS.but(default=3, help="pre-training epochs on the synthetic images"),
        SERVER_LEARNING_RATE.but(default=0.01, help="pre-training learning rate"),
        SERVER_BATCH_SIZE.but(default=32, help="pre-training batch size"),
        GEN_BATCH_SIZE.but(help="images per generator call (0: 64 with the built-in generator, 8 with Stable "
                                "Diffusion); halved on GPU out-of-memory"),
        GENERATOR_PATH.but(help="a Stable Diffusion (diffusers) folder or a built-in generator .pt (optional; "
                                "default: the bundled built-in generator)"),
        SD_STEPS.but(help="Stable Diffusion denoising steps"),
        Option(("--sd_fp16",), bool, False, "Stable Diffusion weights in float16 (CUDA only)"),
        Option(("--synthetic_per_class",), int, 0,
               "synthetic images per class (default 0: three times the clients' real training set, split evenly "
               "over the classes)", check=lambda v: v >= 0, must="be 0 (three times the real data) or more"),
        Option(("--prompt_model",), str, None, metavar="DIR",
               help="a local T5 text-to-text folder (e.g. a CommonGen model) that writes --prompts_per_class "
                    "sentences per class around its label name (default: one template prompt per class, 'a photo "
                    "of the digit 3')"),
        Option(("--prompts_per_class",), int, DEFAULT_PROMPTS_PER_CLASS,
               "sentences --prompt_model writes per class; a class's images cycle through them "
               f"({DEFAULT_PROMPTS_PER_CLASS})", check=lambda v: v >= 1, must="be at least 1"),
        Option(("--anchor_spread",), float, DEFAULT_ANCHOR_SPREAD,
               "built-in generator only: how far an image's latent moves from its prompt's anchor towards a random "
               f"latent, 0 (copies) to 1 (ignores the prompt) ({DEFAULT_ANCHOR_SPREAD})",
               check=lambda v: 0 <= v <= 1, must="be in [0, 1]")),
    test_flags=("-fd", "32", "-lbs", "16", "--synthetic_per_class", "4", "-se", "1")),)
