"""Text prompts for text-to-image generators, written from a dataset's label names.

GPT-FL (Zhang et al., arXiv 2306.02210) turns every class name into prompts for a
text-to-image model: either a fixed template ("a photo of a cat") or sentences that a
T5 model fine-tuned on CommonGen writes around the class name ("a cat sitting on a
windowsill"), which make the synthetic images more varied. Both live here:

- `label_phrase` / `template_prompt`: the template, made to read naturally for the
  numeric label names of digit datasets ("a photo of the digit 3");
- `T5PromptWriter`: a local T5 text-to-text folder (`--prompt_model DIR`), loaded
  without network access, sampling sentences with a seeded random stream.
"""
import os
import re
import warnings

import torch

from utils.errors import UserError
from utils.seeding import derive_seed

TEMPLATE = "a photo of {}"
ARTICLES = ("a ", "an ", "the ")
#: tokens T5 may write per prompt; CommonGen sentences are short
MAX_PROMPT_TOKENS = 32
T5_HINT = ("give a folder written by save_pretrained holding a T5 text-to-text model and its "
           "tokenizer, e.g. mrm8488/t5-base-finetuned-common_gen, or drop --prompt_model to use templates")


def concept_words(label_name: str) -> str:
    """The words a label name stands for: underscores and runs of spaces become one space,
    and a bare number names a digit ("3" -> "digit 3")."""
    words = re.sub(r"[\s_]+", " ", str(label_name)).strip()
    if not words:
        raise ValueError(f"empty label name {label_name!r}")
    return f"digit {words}" if words.isdigit() else words


def label_phrase(label_name: str) -> str:
    """A noun phrase for a label: "3" -> "the digit 3", "cat" -> "a cat",
    "apple_pie" -> "an apple pie"; names that already start with an article are kept."""
    words = concept_words(label_name)
    if str(label_name).strip().isdigit():
        return f"the {words}"
    if words.lower().startswith(ARTICLES):
        return words
    article = "an" if words[0].lower() in "aeiou" else "a"
    return f"{article} {words}"


def template_prompt(label_name: str) -> str:
    return TEMPLATE.format(label_phrase(label_name))


def template_prompts(label_names) -> list[list[str]]:
    """One template prompt per class (the paper's fallback when no prompt model is used)."""
    return [[template_prompt(name)] for name in label_names]


def resolve_prompt_model(folder: str) -> str:
    """The absolute folder `--prompt_model` names (as given, else relative to the repository
    root, like -GPath), or a one-line error."""
    from flcore.generators.paths import resolve_path

    found = resolve_path(folder)
    if found is None:
        raise UserError(f"--prompt_model {folder!r} does not exist: {T5_HINT}")
    if not os.path.isdir(found):
        raise UserError(f"--prompt_model {folder!r} is a file: {T5_HINT}")
    return found


class T5PromptWriter:
    """Sentences around a class name from a local T5 (CommonGen-style) folder."""

    def __init__(self, folder: str, device="cpu"):
        named, folder = folder, resolve_prompt_model(folder)
        try:
            import transformers
            from transformers import AutoTokenizer, T5ForConditionalGeneration
        except ImportError as exc:
            raise UserError(f"--prompt_model needs {exc.name}: pip install transformers") from None
        # Loading chatter (weight progress bars, unused-weight notes) is not the user's concern.
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        print(f"loading prompt model {folder}", flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                self.model = T5ForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # any unreadable folder has the same fix for the user
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise UserError(f"cannot load the prompt model in {named!r}: {first_line} ({T5_HINT})") from None
        self.model.eval().requires_grad_(False).to(device)

    @torch.no_grad()
    def write(self, label_name: str, count: int, seed: int) -> list[str]:
        """`count` sampled sentences for one class; an empty one becomes the template.

        Sampling draws from torch's global stream, so it runs inside a forked stream
        seeded with `seed`: the same seed writes the same prompts.
        """
        inputs = self.tokenizer([concept_words(label_name)], return_tensors="pt").to(self.model.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.model.device.type == "cuda":
                torch.cuda.manual_seed(seed)
            ids = self.model.generate(**inputs, do_sample=True, num_return_sequences=count,
                                      max_new_tokens=MAX_PROMPT_TOKENS)
        sentences = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        fallback = template_prompt(label_name)
        return [" ".join(text.split()) or fallback for text in sentences]

    def prompts(self, label_names, count: int, seed: int) -> list[list[str]]:
        """`count` prompts per class; class k's are sampled with a seed of its own."""
        return [self.write(name, count, derive_seed(seed, "t5-prompts", index))
                for index, name in enumerate(label_names)]


def class_prompts(label_names, prompt_model: str | None, count: int, seed: int,
                  device="cpu") -> list[list[str]]:
    """Prompts per class: T5 sentences with `prompt_model`, else one template each."""
    if prompt_model is None:
        return template_prompts(label_names)
    return T5PromptWriter(prompt_model, device).prompts(label_names, count, seed)
