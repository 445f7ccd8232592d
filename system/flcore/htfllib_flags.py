"""HtFLlib's algorithm flags that several algorithms read, each with its own meaning and default.

An algorithm declares one in its spec as `LAMDA.but(default=10.0, help="...")`; the default
here is HtFLlib's `main.py` default, which runs of algorithms that do not read the flag
record in their configs.
"""
from flcore.spec import Option

SERVER_LEARNING_RATE = Option(("-slr", "--server_learning_rate"), float, 0.01, "server learning rate",
                              shared=True)
SERVER_BATCH_SIZE = Option(("-sbs", "--server_batch_size"), int, 100, "server batch size", shared=True,
                           check=lambda v: v >= 1, must="be at least 1")
SERVER_EPOCHS = Option(("-se", "--server_epochs"), int, 100, "server epochs per round", shared=True,
                       check=lambda v: v >= 0, must="be non-negative")
LAMDA = Option(("-lam", "--lamda"), float, 1.0, "weight of the regulariser", shared=True)
MU = Option(("-mu", "--mu"), float, 50.0, "weight of a second regulariser", shared=True)
GENERATOR_PATH = Option(("-GPath", "--generator_path"), str, None, "generator weights", shared=True)
GEN_BATCH_SIZE = Option(("-gbs", "--gen_batch_size"), int, 0,
                        "images per generator call (0: all at once); halved on GPU out-of-memory", shared=True,
                        check=lambda v: v >= 0, must="be 0 (all classes per call) or more")
SAVE_GENERATED_EVERY = Option(
    ("--save_generated_every",), int, None,
    "save generated images as a PNG grid every this many rounds (0: never); default: rounds 0, 1, 2, 5, 10, "
    "20, 50, ... and the last", shared=True, check=lambda v: v >= 0, must="be 0 (never) or more")
SD_STEPS = Option(("--sd_steps",), int, 50, "Stable Diffusion denoising steps (50)", shared=True,
                  check=lambda v: v >= 1, must="be at least 1")
# HtFLlib's baselines' flags, with its main.py defaults (each method's own default is in its spec)
NOISE_DIM = Option(("-nd", "--noise_dim"), int, 512, "noise width", shared=True)
GENERATOR_LEARNING_RATE = Option(("-glr", "--generator_learning_rate"), float, 0.005,
                                 "generator learning rate", shared=True)
HIDDEN_DIM = Option(("-hd", "--hidden_dim"), int, 512, "generator hidden width", shared=True)
ALPHA = Option(("-al", "--alpha"), float, 1.0, "a loss weight", shared=True)
BETA = Option(("-bt", "--beta"), float, 1.0, "a loss weight", shared=True)
MENTEE_LEARNING_RATE = Option(("-mlr", "--mentee_learning_rate"), float, 0.01, "mentee learning rate",
                              shared=True)
T_START = Option(("-Ts", "--T_start"), float, 0.95, "energy kept at the start", shared=True)
T_END = Option(("-Te", "--T_end"), float, 0.98, "energy kept at the end", shared=True)
MARGIN_THRETHOLD = Option(("-mart", "--margin_threthold"), float, 100.0, "margin bound", shared=True)

#: every template, for the registry (the default a run of an algorithm that does not read it records)
TEMPLATES = (SERVER_LEARNING_RATE, SERVER_BATCH_SIZE, SERVER_EPOCHS, LAMDA, MU, GENERATOR_PATH, GEN_BATCH_SIZE,
             SAVE_GENERATED_EVERY, SD_STEPS, NOISE_DIM, GENERATOR_LEARNING_RATE, HIDDEN_DIM, ALPHA, BETA,
             MENTEE_LEARNING_RATE, T_START, T_END, MARGIN_THRETHOLD)
