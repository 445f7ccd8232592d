"""FedKTL (Zhang et al., CVPR 2024) with each of its pre-trained generators."""
from flcore.htfllib_flags import (GEN_BATCH_SIZE, GENERATOR_PATH, LAMDA, MU, SAVE_GENERATED_EVERY, SD_STEPS,
                                  SERVER_BATCH_SIZE, SERVER_EPOCHS, SERVER_LEARNING_RATE)
from flcore.spec import AlgorithmSpec, Option

PAPER = "Zhang et al., CVPR 2024"
UNTRUSTED = "unpickling runs its code, so name only files you trust"

COMMON = (
    SERVER_LEARNING_RATE.but(help="Adam learning rate of the feature transformer and the centroids"),
    SERVER_BATCH_SIZE.but(help="server batch size; at least 2, as the feature transformer uses BatchNorm",
                          check=lambda v: v >= 2, must="be at least 2 (the feature transformer uses BatchNorm)"),
    SERVER_EPOCHS.but(help="server epochs per round"),
    MU.but(help="weight of the clients' MSE between projected features of generated images and their latents"),
    GEN_BATCH_SIZE.but(help="images per generator call (0: all classes at once); halved on GPU out-of-memory"),
    SAVE_GENERATED_EVERY.but(help="save the images clients receive as a PNG grid every this many rounds "
                                  "(0: never); default: rounds 0, 1, 2, 5, 10, 20, 50, ... and the last"),
    Option(("--ktl_fixed_proj",), bool, False,
           "reset the projection layer to the server's initial one every round (original code)"),
    Option(("--ktl_separate_forward",), bool, False,
           "separate backbone passes for real and generated images (original code) instead of one fused pass"),
)
CENTROID_MSE = "weight of the MSE between mapped prototypes and their class centroids"
STYLEGAN_UTILS = Option(
    ("--stylegan_utils",), str, None, metavar="DIR",
    help="folder holding NVlabs' torch_utils/ and dnnlib/ (a stylegan3 or stylegan-xl clone, e.g. "
         "stylegan/stylegan-utils), needed to unpickle StyleGAN pickles; no default: only a folder named here "
         "is put on sys.path")
TRIED_FROM = "relative paths are tried from the working directory, then the repository root"
GENERATOR = Option(
    ("--generator",), str, "builtin", choices=("builtin", "faces"),
    help="the pre-trained generator: builtin (bundled, 32x32, trained on two photographs) or faces (a DCGAN "
         "trained on DigiFace-1M, 64x64; pip install --no-deps gan-face-generate); default builtin")
GENERATOR_WEIGHTS = Option(
    ("--generator_weights",), str, "pretrained", choices=("pretrained", "random"),
    help="pretrained, or random: a randomly initialised network of the same architecture (the ablation's "
         "control; BatchNorm statistics measured on 1,024 latents); default pretrained")

SPECS = (
    AlgorithmSpec(
        name="FedKTL", server="flcore.servers.serverktl:FedKTL", paper=PAPER,
        summary="prototypes -> generator latents -> one generated image per class, distilled into the clients",
        options=(*COMMON, LAMDA.but(default=1.0, help=CENTROID_MSE), GENERATOR, GENERATOR_WEIGHTS,
                 GENERATOR_PATH.but(help=f"weights of the --generator (default: the bundled built-in one, the "
                                         f"installed package's faces); {TRIED_FROM}")),
        test_flags=("-se", "3", "--save_generated_every", "0"), test_generator=True),
    AlgorithmSpec(
        name="FedKTL-stylegan-3", server="flcore.servers.serverktl_stylegan_3:FedKTLStyleGAN3", paper=PAPER,
        summary="FedKTL with a pre-trained StyleGAN3 (NVlabs pickle)",
        options=(*COMMON, LAMDA.but(default=0.1, help=CENTROID_MSE), STYLEGAN_UTILS,
                 GENERATOR_PATH.but(help=f"a StyleGAN3 pickle (required; {UNTRUSTED}); {TRIED_FROM}")),
        untested="needs a StyleGAN pickle: tests/test_stylegan_backend.py runs it on a tiny stand-in"),
    AlgorithmSpec(
        name="FedKTL-stylegan-xl", server="flcore.servers.serverktl_stylegan_xl:FedKTLStyleGANXL", paper=PAPER,
        summary="FedKTL with a pre-trained class-conditional StyleGAN-XL (the paper's Table 1)",
        options=(*COMMON, LAMDA.but(default=1.0, help=CENTROID_MSE), STYLEGAN_UTILS,
                 GENERATOR_PATH.but(help=f"a StyleGAN-XL pickle (required; {UNTRUSTED}); {TRIED_FROM}")),
        untested="needs a StyleGAN pickle: tests/test_stylegan_backend.py runs it on a tiny stand-in"),
    AlgorithmSpec(
        name="FedKTL-stable-diffusion", server="flcore.servers.serverktl_stable_diffusion:FedKTLStableDiffusion",
        paper=PAPER, summary="FedKTL with a pre-trained Stable Diffusion: the centroids are its initial latents",
        options=(*(o.but(default={"server_learning_rate": 0.1, "mu": 100.0}.get(o.dest, o.default)) for o in COMMON),
                 LAMDA.but(default=0.01, help=CENTROID_MSE),
                 GENERATOR_PATH.but(help=f"a Stable Diffusion (diffusers) folder (required); {TRIED_FROM}"),
                 SD_STEPS.but(help="Stable Diffusion denoising steps"),
                 Option(("-prompt", "--stable_diffusion_prompt"), str, "a cat",
                        "Stable Diffusion prompt, encoded once per run (default 'a cat')"),
                 Option(("--sd_guidance",), float, 7.5, "classifier-free guidance scale (7.5)"),
                 Option(("--sd_fp16",), bool, False, "Stable Diffusion weights in float16 (CUDA only)")),
        untested="needs a Diffusers pipeline: tests/test_stable_diffusion_backend.py runs it on a tiny one"),
)
