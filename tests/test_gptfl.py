"""GPT-FL: prompts, text-to-image adapters, the synthetic-set size, per-architecture
FedAvg, and short end-to-end runs on the tiny dataset (built-in generator and a tiny
Stable Diffusion pipeline built in code)."""
import os

import numpy as np
import pytest
import torch

import main
from flcore.generators.registry import load_generator
from flcore.prompts import (MAX_PROMPT_TOKENS, T5PromptWriter, class_prompts, label_phrase,
                            template_prompt, template_prompts)
from flcore.servers.servergptfl import (average_per_architecture, image_prompts, series_key,
                                        synthetic_count_per_class)
from flcore.text_to_image import BuiltinTextToImage, StableDiffusionTextToImage, load_text_to_image
from tests.helpers import build_server_from_flags
from trainmodel.models import build_model
from utils.errors import UserError
from utils.payload import payload_size, state_to_payload
from utils.result_utils import read_results
from utils.sampling import draw_client_schedule

NUM_CLIENTS = 4
CLASSES = 10
FEATURE_DIM = 32
FAMILY = ("FedAvgCNN", "ResNet4", "ResNet8")  # HtFE-cpu
T5_WORDS = ["<pad>", "</s>", "<unk>", "digit", "cat", "dog", "a", "photo", "of", "the", "on", "sits"]


# ---- prompts ------------------------------------------------------------------------

def test_templates_read_naturally_for_numbers_and_names():
    names = ["3", "cat", "apple_pie", "an Airplane", "Elephant", "sea  lion", "10"]
    assert [label_phrase(name) for name in names] == [
        "the digit 3", "a cat", "an apple pie", "an Airplane", "an Elephant", "a sea lion", "the digit 10"]
    assert template_prompt("7") == "a photo of the digit 7"
    assert template_prompts(["0", "truck"]) == [["a photo of the digit 0"], ["a photo of a truck"]]
    assert class_prompts(["0", "truck"], None, 5, seed=0) == template_prompts(["0", "truck"])


def save_tiny_t5(folder, favourite: str | None = None, seed: int = 0) -> str:
    """A word-level tokenizer and a random 1-layer T5, saved as a local folder.

    With `favourite`, the decoder's output no longer depends on its input (every block
    writes zeros into the residual stream, all embeddings are ones) and the LM head
    scores only `favourite`, so every sampled token is that word.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = {word: index for index, word in enumerate(T5_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    config = T5Config(vocab_size=len(vocab), d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
                      num_decoder_layers=1, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    config.tie_word_embeddings = False  # set after construction: some versions ignore the keyword
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
    if favourite is not None:
        with torch.no_grad():
            for block in model.decoder.block:
                block.layer[0].SelfAttention.o.weight.zero_()
                block.layer[1].EncDecAttention.o.weight.zero_()
                block.layer[2].DenseReluDense.wo.weight.zero_()
            for embedding in (model.shared, model.encoder.embed_tokens, model.decoder.embed_tokens):
                embedding.weight.fill_(1.0)
            model.decoder.final_layer_norm.weight.fill_(1.0)
            model.lm_head.weight.zero_()
            model.lm_head.weight[vocab[favourite]] = 5.0  # logit 80 (20 if rescaled) against 0 for the rest
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    return save_tiny_t5(tmp_path_factory.mktemp("t5") / "random")


def test_t5_writes_seeded_prompts_per_class(tiny_t5):
    writer = T5PromptWriter(tiny_t5)
    prompts = writer.prompts(["3", "cat"], 6, seed=0)
    assert [len(p) for p in prompts] == [6, 6]
    assert all(isinstance(text, str) and text and "  " not in text for p in prompts for text in p)
    # Every word comes from the vocabulary, or the prompt is the class's template.
    for name, texts in zip(["3", "cat"], prompts):
        for text in texts:
            assert text == template_prompt(name) or set(text.split()) <= set(T5_WORDS[3:])
    assert writer.prompts(["3", "cat"], 6, seed=0) == prompts
    assert writer.prompts(["3", "cat"], 6, seed=1) != prompts


def test_t5_sentences_and_the_template_fallback(tmp_path):
    cat = T5PromptWriter(save_tiny_t5(tmp_path / "cat", favourite="cat"))
    assert cat.write("3", 3, seed=0) == [" ".join(["cat"] * MAX_PROMPT_TOKENS)] * 3
    # A model that ends every sentence at once writes nothing: the template stands in.
    silent = T5PromptWriter(save_tiny_t5(tmp_path / "eos", favourite="</s>"))
    assert silent.write("3", 2, seed=0) == ["a photo of the digit 3"] * 2
    assert class_prompts(["dog", "5"], str(tmp_path / "eos"), 1, seed=0) == [["a photo of a dog"],
                                                                            ["a photo of the digit 5"]]


def test_bad_prompt_model_folders_are_one_line_errors(tiny_t5, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        T5PromptWriter(str(tmp_path / "t5-base"))
    with pytest.raises(UserError, match="is a file"):
        T5PromptWriter(os.path.join(tiny_t5, "config.json"))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in os.listdir(tiny_t5):
        (damaged / name).write_bytes(open(os.path.join(tiny_t5, name), "rb").read())
    (damaged / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot load the prompt model") as info:
        T5PromptWriter(str(damaged))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="cannot load the prompt model"):
        T5PromptWriter(str(tmp_path))  # an empty folder


# ---- synthetic set ------------------------------------------------------------------

def test_synthetic_set_is_three_times_the_real_data_split_over_classes():
    assert synthetic_count_per_class(0, 3743, 10) == 1123  # ceil(11229 / 10)
    assert synthetic_count_per_class(0, 100, 10) == 30
    assert synthetic_count_per_class(0, 1, 10) == 1
    assert synthetic_count_per_class(7, 3743, 10) == 7


def test_each_class_cycles_through_its_prompts():
    texts, labels = image_prompts([["a", "b"], ["c"]], 3)
    assert texts == ["a", "b", "a", "c", "c", "c"]
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and labels.dtype == torch.int64


# ---- per-architecture FedAvg ------------------------------------------------------------

def test_each_architecture_is_averaged_uniformly_on_its_own():
    cnn_a = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(5)}
    cnn_b = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    cnn_c = {"w": torch.tensor([8.0, 1.0]), "bn.num_batches_tracked": torch.tensor(2)}
    res = {"v": torch.tensor([[1.0, -1.0]]), "bn.running_var": torch.tensor([0.5])}
    averaged = average_per_architecture(["CNN", "ResNet", "CNN", "CNN"], [cnn_a, res, cnn_b, cnn_c])
    assert set(averaged) == {"CNN", "ResNet"}
    # Uniform, not sample-weighted: (1 + 3 + 8) / 3, (2 + 6 + 1) / 3.
    assert torch.allclose(averaged["CNN"]["w"], torch.tensor([4.0, 3.0]))
    assert averaged["CNN"]["bn.num_batches_tracked"].item() == 5  # integers: the first upload's
    assert averaged["CNN"]["bn.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(averaged["ResNet"]["v"], res["v"]) and torch.equal(averaged["ResNet"]["bn.running_var"],
                                                                         res["bn.running_var"])
    with pytest.raises(ValueError):
        average_per_architecture(["CNN"], [cnn_a, cnn_b])


def test_series_names_are_safe_for_h5():
    assert series_key("ViT-B/16") == "ViT_B_16" and series_key("ResNet8") == "ResNet8"


# ---- built-in text-to-image ---------------------------------------------------------------

@pytest.fixture(scope="module")
def builtin():
    from types import SimpleNamespace

    return load_generator("builtin", SimpleNamespace(generator_path=None), "cpu")


def test_builtin_images_follow_the_prompt_and_the_seed(builtin):
    text_to_image = BuiltinTextToImage(builtin, spread=0.4)
    prompts = ["a photo of the digit 0", "a photo of the digit 1", "a photo of the digit 0"]
    first = text_to_image.generate(prompts, torch.Generator().manual_seed(0))
    assert first.shape == (3, 3, 32, 32) and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 1
    # A fresh adapter, the same prompts and seed: the same images.
    again = BuiltinTextToImage(builtin, spread=0.4).generate(prompts, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)
    assert not torch.equal(first, text_to_image.generate(prompts, torch.Generator().manual_seed(1)))
    # The anchor is the prompt's own: not the run's seed, different for different prompts.
    anchor_0, anchor_1 = text_to_image.anchor(prompts[0]), text_to_image.anchor(prompts[1])
    assert anchor_0.shape == (builtin.latent_dim,)
    assert (anchor_0 - anchor_1).abs().max() > 0.1
    assert torch.equal(anchor_0, BuiltinTextToImage(builtin).anchor(prompts[0]))


def test_builtin_spread_moves_images_between_the_anchor_and_free_draws(builtin):
    prompts = ["a photo of a cat"] * 4
    copies = BuiltinTextToImage(builtin, spread=0.0).generate(prompts, torch.Generator().manual_seed(0))
    assert all(torch.equal(copies[0], image) for image in copies)
    anchor = BuiltinTextToImage(builtin).anchor(prompts[0])
    torch.testing.assert_close(copies[:1], builtin.synthesize(anchor[None]))
    free = BuiltinTextToImage(builtin, spread=1.0).generate(prompts, torch.Generator().manual_seed(0))
    expected = builtin.synthesize(builtin.sample_latents(4, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(free, expected)
    # Near the anchor, one prompt's images are closer to each other than free draws are
    # (mean pixel distance: about 16 against 23 for the bundled generator).
    many = ["a photo of a cat"] * 32
    near = BuiltinTextToImage(builtin, spread=0.4).generate(many, torch.Generator().manual_seed(0))
    anywhere = BuiltinTextToImage(builtin, spread=1.0).generate(many, torch.Generator().manual_seed(0))
    assert torch.pdist(near.flatten(1)).mean() < 0.85 * torch.pdist(anywhere.flatten(1)).mean()
    with pytest.raises(ValueError):
        BuiltinTextToImage(builtin, spread=1.5)


def test_the_builtin_notice_is_printed_once(capsys):
    import flcore.text_to_image as module
    from types import SimpleNamespace

    module._notice_shown = False
    for _ in range(2):
        assert isinstance(load_text_to_image(SimpleNamespace(generator_path=None), "cpu"), BuiltinTextToImage)
    assert capsys.readouterr().out.count("reads no text") == 1


# ---- Stable Diffusion text-to-image -----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """A random Stable Diffusion folder with 4x8x8 latents and 16x16 images."""
    from scripts.tiny_diffusion import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(str(tmp_path_factory.mktemp("sd") / "tiny"), seed=0, latent_size=8)


def sd_flags(path, **overrides):
    from types import SimpleNamespace

    values = dict(generator_path=path, stylegan_utils=None, stable_diffusion_prompt="a cat", sd_steps=2,
                  sd_guidance=7.5, sd_fp16=False)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_stable_diffusion_encodes_each_prompt_once_and_conditions_each_image(tiny_sd):
    text_to_image = load_text_to_image(sd_flags(tiny_sd), "cpu")
    assert isinstance(text_to_image, StableDiffusionTextToImage)
    pipe = text_to_image.pipe
    encoded = []
    original = pipe.encode_prompt
    pipe.encode_prompt = lambda prompt: encoded.append(prompt) or original(prompt)
    try:
        cats = text_to_image.generate(["a cat", "a cat"], torch.Generator().manual_seed(0))
        mixed = text_to_image.generate(["a cat", "a dog"], torch.Generator().manual_seed(0))
        text_to_image.generate(["a dog", "a cat", "a dog"], torch.Generator().manual_seed(1))
    finally:
        del pipe.encode_prompt
    assert encoded == ["a cat", "a dog"]
    assert cats.shape == (2, 3, 16, 16) and cats.min() >= 0 and cats.max() <= 1
    # Same seed: same noise and guidance; only the second image's prompt changed.
    torch.testing.assert_close(mixed[0], cats[0], atol=1e-5, rtol=0)
    assert (mixed[1] - cats[1]).abs().max() > 1e-4


def test_guidance_is_drawn_uniformly_between_one_and_five(tiny_sd):
    text_to_image = load_text_to_image(sd_flags(tiny_sd), "cpu")
    stream = torch.Generator().manual_seed(0)
    draws = torch.tensor([text_to_image.draw_guidance(stream) for _ in range(2000)])
    assert draws.min() >= 1 and draws.max() <= 5
    assert abs(draws.mean().item() - 3) < 0.1 and draws.min() < 1.05 and draws.max() > 4.95


def test_bad_generator_paths_keep_the_backends_messages(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_text_to_image(sd_flags(str(tmp_path / "v1.5")), "cpu")
    with pytest.raises(UserError, match="has no model_index.json"):
        load_text_to_image(sd_flags(str(tmp_path)), "cpu")
    junk = tmp_path / "weights.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        load_text_to_image(sd_flags(str(junk)), "cpu")


# ---- end to end ---------------------------------------------------------------------------

def flags(data_root, out, *extra):
    return ["-algo", "GPT-FL", "-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "2",
            "-dev", "cpu", "--out", str(out), "-m", "HtFE-cpu", "-fd", str(FEATURE_DIM), "-lbs", "16",
            "--synthetic_per_class", "4", "-se", "1", *extra]


def run(data_root, out, *extra):
    assert main.main(flags(data_root, out, *extra)) == 0
    series, config = read_results(os.path.join(out, "Tiny_GPT-FL_test_0.h5"))
    return series, config


def tiny_model(arch: str):
    return build_model(arch, num_classes=CLASSES, feature_dim=FEATURE_DIM, image_size=16, in_channels=3, seed=0)


def model_floats(arch: str) -> int:
    return payload_size(state_to_payload(tiny_model(arch)))[1]


def test_gptfl_runs_with_exact_traffic_and_is_deterministic(data_root, tmp_path):
    series, config = run(data_root, tmp_path / "a", "-jr", "0.5")
    assert len(series["rs_test_acc"]) == 3 and np.all(np.isfinite(series["rs_test_acc"]))
    # -se from the flags; batch size and learning rate from GPT-FL's DEFAULTS.
    assert (config["server_epochs"], config["server_batch_size"]) == (1, 32)
    assert (config["server_learning_rate"], config["local_learning_rate"]) == (0.01, 0.01)
    assert series["synthetic_images"][0] == 4 * CLASSES
    per_client = [model_floats(FAMILY[cid % 3]) for cid in range(NUM_CLIENTS)]
    schedule = draw_client_schedule(NUM_CLIENTS, 0.5, False, 2, seed=0)
    assert [len(ids) for ids in schedule] == [2, 2]
    assert list(series["floats_up"]) == [sum(per_client[cid] for cid in ids) for ids in schedule]
    assert list(series["floats_down"]) == [sum(per_client)] * 2
    assert series["setup_floats_down"][0] == sum(per_client)
    for arch in FAMILY:
        assert len(series[f"rs_test_acc_{arch}"]) == 3
    assert os.path.isfile(tmp_path / "a" / "Tiny_GPT-FL_test_0" / "synthetic_preview.png")
    again, _ = run(data_root, tmp_path / "b", "-jr", "0.5")
    assert np.array_equal(series["rs_test_acc"], again["rs_test_acc"])
    assert np.array_equal(series["rs_train_loss"], again["rs_train_loss"])


def build_server(data_root, out, *extra):
    return build_server_from_flags(flags(data_root, out, *extra))


def client_state(server, cid):
    return server.executor._clients[cid].model.state_dict()


def test_groups_share_their_global_model_and_only_trained_groups_change(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "-se", "0")
    assert server.architectures == ["FedAvgCNN", "ResNet4", "ResNet8", "FedAvgCNN"]
    # After setup every client holds its group's global model, and -se 0 leaves it untrained.
    for cid in server.all_client_ids:
        state = client_state(server, cid)
        assert all(torch.equal(state[k], v) for k, v in server.global_states[server.architectures[cid]].items())
    before = {arch: {k: v.clone() for k, v in state.items()} for arch, state in server.global_states.items()}
    server.train_round(0, [0, 1])  # a FedAvgCNN and the ResNet4; ResNet8's group sits out
    cnn = server.global_states["FedAvgCNN"]
    assert any(not torch.equal(cnn[k], before["FedAvgCNN"][k]) for k in cnn)
    assert all(torch.equal(v, before["ResNet8"][k]) for k, v in server.global_states["ResNet8"].items())
    # Client 3 did not train but receives its group's new global, like client 0.
    for cid in (0, 3):
        assert all(torch.equal(client_state(server, cid)[k], v) for k, v in cnn.items())


def test_server_synthesizes_the_requested_set_as_client_inputs(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "--synthetic_per_class", "6", "-se", "0")
    images, labels = server.synthesize()
    assert images.shape == (60, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert labels.tolist() == [c for c in range(CLASSES) for _ in range(6)]
    assert server.prompts == template_prompts([str(c) for c in range(CLASSES)])
    assert set(server.global_states) == set(FAMILY)


def test_pretraining_fits_a_synthetic_set(builtin):
    from flcore.generators.images import to_client_images
    from flcore.servers.servergptfl import pretrain

    texts, labels = image_prompts(template_prompts([str(c) for c in range(CLASSES)]), 10)
    # Spread 0.1: a class's images are near copies, so the classes are plainly learnable.
    near_copies = BuiltinTextToImage(builtin, spread=0.1).generate(texts, torch.Generator().manual_seed(0))
    images = to_client_images(near_copies, (3, 16, 16))
    model = tiny_model("ResNet4")
    stats = pretrain(model, images, labels, epochs=10, lr=0.05, batch_size=10,
                     generator=torch.Generator().manual_seed(0), desc="test")
    assert 0 <= stats["loss"] < 1.0 and 0.5 < stats["accuracy"] <= 1
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy > 0.75  # chance is 0.1
    untouched = tiny_model("ResNet4")
    stats = pretrain(untouched, images, labels, epochs=0, lr=0.05, batch_size=10,
                     generator=torch.Generator().manual_seed(0), desc="test")
    assert np.isnan(stats["loss"])
    fresh = tiny_model("ResNet4").state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in untouched.state_dict().items())


def test_stable_diffusion_run_end_to_end(data_root, tmp_path, tiny_sd):
    series, config = run(data_root, tmp_path, "-GPath", tiny_sd, "--sd_steps", "2", "--synthetic_per_class", "2",
                         "-gr", "1")
    assert len(series["rs_test_acc"]) == 2 and np.all(np.isfinite(series["rs_test_acc"]))
    assert series["synthetic_images"][0] == 2 * CLASSES
    assert os.path.isfile(tmp_path / "Tiny_GPT-FL_test_0" / "synthetic_preview.png")


def test_bad_gptfl_flags_are_one_line_errors(data_root, tmp_path, capsys):
    for extra, message in [(["--anchor_spread", "1.5"], "--anchor_spread must be in [0, 1]"),
                           (["--prompts_per_class", "0"], "--prompts_per_class must be at least 1"),
                           (["--synthetic_per_class", "-1"], "--synthetic_per_class must be 0"),
                           (["--prompt_model", str(tmp_path / "t5")], "--prompt_model")]:
        assert main.main(flags(data_root, tmp_path, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
