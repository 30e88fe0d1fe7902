"""Families that generate from an input: the text-to-image GAN (captions) and the key-patch GAN
(local patches).  Their derived datasets, the held-out condition contract, properties of their
objectives on fixed batches, determinism, and their family metrics on analytic cases."""

import math

import pytest
import torch
from conftest import MNIST_RAW, build, train_steps
from torch import nn

import genbench_plugins.text2image.metric as t2i_metric
from genbench.datasets import MNIST_SPEC
from genbench.errors import GenbenchError
from genbench.features import Extractor
from genbench.grids import save_samples
from genbench.metrics import EvalContext, held_out_condition
from genbench.profiles import get_profile
from genbench_plugins.puzzle_gan import (
    MASK_KEY,
    PATCHES_KEY,
    POS_KEY,
    PatchCompletion,
    PuzzleGAN,
    best_constant_mask,
    best_window_error,
    cut_patches,
    load_digits_patches,
    load_mnist_patches,
    mask_iou,
    patch_spec,
    windows_mask,
)
from genbench_plugins.text2image import (
    CAPTION_KEY,
    DIGIT_WORDS,
    CaptionAgreement,
    Text2ImageGAN,
    caption_spec,
    detokenize,
    joint_embedding_loss,
    load_digits_captions,
    load_mnist_captions,
    seen_phrasing,
    tokenize,
)

FAMILIES = [Text2ImageGAN, PuzzleGAN]


@pytest.fixture(scope="module")
def captions():
    return load_digits_captions()


@pytest.fixture(scope="module")
def patches():
    return load_digits_patches()


@pytest.fixture
def task_data(request, captions, patches):
    return {Text2ImageGAN: captions, PuzzleGAN: patches}[request.param]


def condition_for(cls, dataset, n):
    return held_out_condition(cls, dataset, n, splits=("test",))


# --- both families --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_apply_only_to_their_task_datasets(cls, captions, patches, digits, manager):
    own = captions if cls is Text2ImageGAN else patches
    other = patches if cls is Text2ImageGAN else captions
    assert cls.applies_to(own.spec)[0]
    for spec in (digits.spec, other.spec):
        ok, why = cls.applies_to(spec)
        assert not ok and "needs batch keys" in why
    assert manager.models.get(cls.name) is cls
    assert not manager.broken


@pytest.mark.parametrize("cls,task_data", [(c, c) for c in FAMILIES], ids=[c.name for c in FAMILIES],
                         indirect=["task_data"])
def test_trains_and_samples_in_range_from_held_out_inputs(cls, task_data):
    model = build(cls, task_data)
    usage, losses = train_steps(model, task_data, 6)
    assert usage.steps == 6 and losses and all(math.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        x = model.sample(16, generator=torch.Generator().manual_seed(0), condition=condition_for(cls, task_data, 16))
    assert x.shape == (16, 1, 8, 8) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with pytest.raises(GenbenchError, match="condition="):
        model.sample(4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cls,task_data", [(c, c) for c in FAMILIES], ids=[c.name for c in FAMILIES],
                         indirect=["task_data"])
def test_same_seed_same_samples(cls, task_data):
    cond = condition_for(cls, task_data, 8)
    out = []
    for seed in (3, 3, 4):
        model = build(cls, task_data, seed=seed)
        train_steps(model, task_data, 6, seed=seed)
        model.eval()
        with torch.no_grad():
            out.append(model.sample(8, generator=torch.Generator().manual_seed(5), condition=cond))
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_mnist_shapes_are_cropped_back_to_28x28(cls):
    spec = caption_spec(MNIST_SPEC, "m") if cls is Text2ImageGAN else patch_spec(MNIST_SPEC, "m")
    torch.manual_seed(0)
    model = cls(cls.make_config({"batch_size": 4}), spec)
    x = (torch.randint(0, 256, (4, 1, 28, 28)) + 0.5) / 256
    batch = {"x": x, "y": torch.tensor([0, 1, 2, 3])}
    if cls is Text2ImageGAN:
        batch.update({CAPTION_KEY: tokenize(["a thin zero", "thick digit one", "a two drawn thin", "a thick three"]),
                      "thick": torch.tensor([0, 1, 0, 1])})
        cond = batch[CAPTION_KEY]
    else:
        pos = torch.tensor([[[0, 0], [10, 10], [18, 5]]]).repeat(4, 1, 1)
        batch.update({PATCHES_KEY: cut_patches(x, pos, 10), MASK_KEY: windows_mask(pos, 10, (28, 28))})
        cond = batch[PATCHES_KEY][:3]
    losses = model.train_step(batch, 0.5)
    assert all(math.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model.sample(len(cond), generator=torch.Generator().manual_seed(0), condition=cond)
    assert out.shape == (len(cond), 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_held_out_condition_cycles_the_held_out_rows_and_is_none_without_a_key(captions, digits):
    cond = held_out_condition(Text2ImageGAN, captions, 800)
    pool = torch.cat([captions.split("val")[CAPTION_KEY], captions.split("test")[CAPTION_KEY]])
    assert len(pool) == 797 and torch.equal(cond[:797], pool) and torch.equal(cond[797:], pool[:3])
    from genbench_plugins.dcgan import DCGAN

    assert held_out_condition(DCGAN, digits, 10) is None
    with pytest.raises(GenbenchError, match="lacks"):
        held_out_condition(Text2ImageGAN, digits, 10)


@pytest.mark.parametrize("cls,task_data", [(c, c) for c in FAMILIES], ids=[c.name for c in FAMILIES],
                         indirect=["task_data"])
def test_sample_grid_and_fid_samples_use_held_out_inputs(cls, task_data, tmp_path, monkeypatch):
    model = build(cls, task_data)
    seen = []
    real_sample = model.sample

    def recording_sample(n, generator=None, condition=None):
        seen.append(condition.cpu())
        return real_sample(n, generator=generator, condition=condition)

    monkeypatch.setattr(model, "sample", recording_sample)
    key = cls.condition_key
    save_samples(model, task_data, tmp_path / "grid.png", seed=0)
    assert torch.equal(seen[0], task_data.split("test")[key][:64])  # the grid: the first test inputs
    seen.clear()
    EvalContext(model, task_data, get_profile("test"), 0, "cpu").samples(900)  # more than val + test hold
    held_out = torch.cat([task_data.split("val")[key], task_data.split("test")[key]])
    assert torch.equal(torch.cat(seen), torch.cat([held_out, held_out[: 900 - 797]]))


# --- text-to-image: captions ------------------------------------------------------------------------


def test_captions_are_deterministic_and_say_the_label_and_weight(captions):
    again = load_digits_captions()
    threshold = captions.info["ink_threshold"]
    for split in ("train", "val", "test"):
        data = captions.split(split)
        for key in ("x", "y", CAPTION_KEY, "thick", "phrasing"):
            assert torch.equal(data[key], again.split(split)[key])
        for text, y, thick in zip(detokenize(data[CAPTION_KEY][:50]), data["y"][:50], data["thick"][:50]):
            words = text.split()
            assert DIGIT_WORDS[int(y)] in words and ("thick" if int(thick) else "thin") in words
        ink = data["x"].flatten(1).mean(1)
        assert torch.equal(data["thick"], (ink > threshold[data["y"]]).long())
    # the weight word splits every digit of the training split in half (median threshold)
    train = captions.split("train")
    for d in range(10):
        share = float(train["thick"][train["y"] == d].float().mean())
        assert 0.4 <= share <= 0.5


def test_held_out_phrasings_appear_only_in_the_test_split(captions):
    for split in ("train", "val"):
        data = captions.split(split)
        assert bool(seen_phrasing(data["y"], data["phrasing"]).all())
        assert len(torch.unique(data["phrasing"])) == 4
    test = captions.split("test")
    unseen = ~seen_phrasing(test["y"], test["phrasing"])
    assert 50 < int(unseen.sum()) < 200  # about a quarter of 447


def test_tokenize_round_trips_and_names_unknown_words():
    texts = ["a thick seven", "the number two in thin strokes"]
    assert detokenize(tokenize(texts)) == texts
    with pytest.raises(GenbenchError, match="outside the vocabulary.*'bold'"):
        tokenize(["a bold seven"])
    with pytest.raises(GenbenchError, match="1 to 6"):
        tokenize(["a thick seven a thick seven drawn"])


def test_joint_embedding_loss_is_zero_with_a_margin_and_positive_otherwise():
    content = torch.tensor([0, 1, 2, 0])
    basis = torch.eye(3) * 2.0  # matching score 4, mismatching 0: margin 4 > 1
    img = basis[content]
    assert float(joint_embedding_loss(img, img.clone(), content)) == 0.0
    # swapping two captions of different content makes their images prefer the wrong caption
    txt = img[[1, 0, 2, 3]]
    loss = float(joint_embedding_loss(img, txt, content))
    assert loss > 0
    # by hand (scores 4 on equal basis vectors, else 0): images 0 and 1 and captions 0 and 1 each
    # lose 1 + 4 - 0 = 5; image 3 (e0) scores 4 with caption 1 (content 1) as with its own: loses 1
    assert math.isclose(loss, (5 + 5 + 0 + 1 + 5 + 5 + 0 + 0) / 4)


def test_text2image_warmup_trains_only_the_text_encoder_then_the_gan(captions):
    model = build(Text2ImageGAN, captions)
    batch = {k: v[:32] for k, v in captions.split("train").items()}
    gen_before = [p.detach().clone() for p in model.generator.parameters()]
    enc_before = [p.detach().clone() for p in model.text_encoder.parameters()]
    losses = model.train_step(batch, 0.0)
    assert set(losses) == {"embed_loss"}
    assert all(torch.equal(a, b) for a, b in zip(gen_before, model.generator.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(enc_before, model.text_encoder.parameters()))
    enc_after = [p.detach().clone() for p in model.text_encoder.parameters()]
    losses = model.train_step(batch, 0.5)
    assert {"d_loss", "d_wrong", "g_loss", "g_int"} <= set(losses)
    assert all(torch.equal(a, b) for a, b in zip(enc_after, model.text_encoder.parameters()))  # frozen
    assert not all(torch.equal(a, b) for a, b in zip(gen_before, model.generator.parameters()))


class RecordingDiscriminator(nn.Module):
    """Scores every input 1/2 (logit 0) and records what it was shown."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, *inputs):
        self.calls.append([t.detach().clone() for t in inputs])
        return inputs[0].flatten(1).sum(1) * 0 + self.bias


def test_text2image_discriminator_sees_matching_mismatched_and_generated_pairs(captions):
    """GAN-CLS: D is shown (real, own caption), (generated, own caption) and (real, a caption of other
    content); at a blind D (logit 0), L_D = log 2 + (log 2 + log 2) / 2 = 2 log 2."""
    model = build(Text2ImageGAN, captions)
    model.discriminator = RecordingDiscriminator()
    model.optimizers["d"] = torch.optim.SGD(model.discriminator.parameters(), lr=0.0)
    batch = {k: v[:64] for k, v in captions.split("train").items()}
    losses = model.train_step(batch, 0.5)
    assert math.isclose(losses["d_loss"], 2 * math.log(2), rel_tol=1e-6)
    (x_real, h_real), (x_fake, h_fake), (x_wrong, h_wrong) = model.discriminator.calls[:3]
    with torch.no_grad():
        h_own = model.embed_text(batch[CAPTION_KEY])
    real = model.to_canvas(batch["x"])
    assert torch.allclose(x_real, real, atol=1 / 17) and torch.equal(h_real, h_own) and torch.equal(h_fake, h_own)
    assert not torch.allclose(x_fake, real, atol=0.2)
    # each mismatched pair: a real image and the embedding of a caption of different content
    content = batch["y"] * 2 + batch["thick"]
    rows = [int(((real - x).abs().amax((1, 2, 3)) <= 1 / 17).nonzero()[0]) for x in x_wrong]
    for row, h in zip(rows, h_wrong):
        owners = [m for m in range(64) if torch.equal(h_own[m], h)]
        assert owners and all(int(content[m]) != int(content[row]) for m in owners)
    assert len(rows) > 40  # most shuffled captions say something else


def test_text2image_without_a_mismatched_caption_uses_the_plain_gan_value(captions):
    model = build(Text2ImageGAN, captions)
    model.discriminator = RecordingDiscriminator()
    train = captions.split("train")
    same = (train["y"] == 3) & (train["thick"] == 1)
    batch = {k: v[same][:8] for k, v in train.items()}  # all say "thick three"
    losses = model.train_step(batch, 0.5)
    assert "d_wrong" not in losses and math.isclose(losses["d_loss"], 2 * math.log(2), rel_tol=1e-6)
    assert len(model.discriminator.calls) == 4  # real, fake, then G and GAN-INT: no mismatch pass
    with pytest.raises(GenbenchError, match="at least 2"):
        model.train_step({k: v[:1] for k, v in batch.items()}, 0.5)


def test_text2image_accepts_caption_strings_and_refuses_bad_ones(captions):
    model = build(Text2ImageGAN, captions).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a = model.sample(2, generator=g, condition=["a thick seven", "thin digit one"])
        b = model.sample(2, generator=torch.Generator().manual_seed(0),
                         condition=tokenize(["a thick seven", "thin digit one"]))
    assert torch.equal(a, b)
    with pytest.raises(GenbenchError, match="one caption per sample"):
        model.sample(3, condition=["a thick seven"])
    with pytest.raises(GenbenchError, match="word ids of shape"):
        model.sample(2, condition=torch.zeros(2, 6))
    with pytest.raises(GenbenchError, match=r"shape \(2, 3\).*list of 2 caption strings"):
        model.sample(2, condition=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(GenbenchError, match="list of 1 caption strings"):
        model.sample(1, condition="a thick seven")
    with pytest.raises(GenbenchError, match=r"word ids \[99\] are outside the vocabulary"):
        model.sample(1, condition=torch.full((1, 6), 99))


class LabelOracle(nn.Module):
    """A 'classifier' that reads the digit a stand-in generator wrote into pixel (0, 0)."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))  # the extractor looks up the device of a parameter

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 10).floor().clamp(0, 9).long()
        logits = torch.nn.functional.one_hot(label, 10).double() * 10
        return torch.zeros(len(x), 4, dtype=torch.float64), logits


class ScriptedCaptioner(Text2ImageGAN):
    """Draws the caption's digit into pixel (0, 0) for digits below `correct_below`, else digit 0,
    with thin strokes (an otherwise black image)."""

    correct_below = 5

    def sample(self, n, generator=None, condition=None):
        words = detokenize(torch.as_tensor(condition))
        digits = torch.tensor([next(DIGIT_WORDS.index(w) for w in t.split() if w in DIGIT_WORDS) for t in words])
        drawn = torch.where(digits < self.correct_below, digits, torch.zeros_like(digits))
        x = torch.zeros(n, *self.spec.shape)
        x[:, 0, 0, 0] = (drawn.float() + 0.5) / 10
        return x


def test_caption_agreement_on_a_scripted_generator(captions, monkeypatch):
    monkeypatch.setattr(t2i_metric, "domain_extractor", lambda dataset, device="cpu": Extractor("oracle", LabelOracle(),
                                                                                             "", 1.0))
    model = build(ScriptedCaptioner, captions)
    ctx = EvalContext(model, captions, get_profile("quick"), 0, "cpu")
    out = CaptionAgreement().compute(ctx)
    test = captions.split("test")
    y, thick = test["y"], test["thick"]
    want_digit = float(((y < 5) | (y == 0)).double().mean())
    assert math.isclose(out["caption_digit_accuracy"], want_digit)
    unseen = ~seen_phrasing(y, test["phrasing"])
    assert math.isclose(out["caption_digit_accuracy_unseen"], float((y[unseen] < 5).double().mean()))
    # near-black images are thin: the weight accuracy is the share of "thin" captions
    assert math.isclose(out["caption_weight_accuracy"], float((thick == 0).double().mean()))


def test_caption_metric_applies_only_to_caption_models_on_caption_data(captions, digits):
    from genbench_plugins.infogan import InfoGAN

    metric = CaptionAgreement()
    assert metric.applies(Text2ImageGAN, captions)[0]
    assert not metric.applies(InfoGAN, captions)[0]  # conditional, but not on captions
    assert not metric.applies(Text2ImageGAN, digits)[0]


# --- key-patch GAN: patches ---------------------------------------------------------------------------


def test_patches_are_cut_where_the_mask_says_and_prefer_ink(patches):
    again = load_digits_patches()
    for split in ("train", "val", "test"):
        data = patches.split(split)
        for key in ("x", PATCHES_KEY, MASK_KEY, POS_KEY):
            assert torch.equal(data[key], again.split(split)[key])
        assert data[PATCHES_KEY].shape[1:] == (3, 1, 3, 3)
        assert torch.equal(cut_patches(data["x"], data[POS_KEY], 3), data[PATCHES_KEY])
        assert torch.equal(windows_mask(data[POS_KEY], 3, (8, 8)), data[MASK_KEY])
        assert int(data[POS_KEY].min()) >= 0 and int(data[POS_KEY].max()) <= 5
    # drawn by ink: the patches hold more ink than the image on average
    train = patches.split("train")
    assert float(train[PATCHES_KEY].mean()) > 1.3 * float(train["x"].mean())
    # no two windows of an image share two rows and two columns (on 8x8 there is always room)
    pos = train[POS_KEY]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not bool(((pos[:, i] - pos[:, j]).abs() < 2).all(1).any())


def test_windows_mask_and_iou_by_hand():
    pos = torch.tensor([[[0, 0], [5, 5]]])
    mask = windows_mask(pos, 3, (8, 8))
    assert int(mask.sum()) == 18 and float(mask[0, 0, 0, 0]) == 1 and float(mask[0, 0, 7, 7]) == 1
    other = windows_mask(torch.tensor([[[0, 1], [5, 5]]]), 3, (8, 8))
    # overlap 6 + 9 = 15 pixels, union 18 + 3 = 21
    assert math.isclose(float(mask_iou(other, mask)[0]), 15 / 21)
    assert float(mask_iou(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))[0]) == 1.0


def test_best_window_error_finds_a_moved_patch():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 8, 8)
    patch = image[:, :, 2:5, 4:7].unsqueeze(1)  # (2, 1, 1, 3, 3)
    assert torch.allclose(best_window_error(image, patch), torch.zeros(2, 1))
    shifted = torch.roll(image, shifts=(1, -2), dims=(-2, -1))  # the patch now sits at (3, 2)
    assert torch.allclose(best_window_error(shifted, patch), torch.zeros(2, 1))
    assert float(best_window_error(torch.zeros(2, 1, 8, 8), patch).min()) > 0


def test_puzzle_gan_losses_on_a_fixed_batch(patches):
    """The reported spatial and appearance losses are the published L1 terms recomputed by hand from
    the same noise; G updates only every g_every D steps; the weights decay from start to end."""
    import copy

    from genbench.toolkit import pad_to

    model = build(PuzzleGAN, patches, g_every=2)
    batch = {k: v[:32] for k, v in patches.split("train").items()}
    assert "g_loss" not in model.train_step(batch, 0.0)
    before = copy.deepcopy(model)  # G is unchanged by a D step: recompute G's outputs on this copy
    torch.manual_seed(11)
    losses = model.train_step(batch, 0.0)
    assert {"g_loss", "spatial", "appearance"} <= set(losses)
    torch.manual_seed(11)
    x = before.spec.dequantize(batch["x"])
    z = torch.rand(32, before.config.noise_dim) * 2 - 1
    with torch.no_grad():
        fake, mask = before.forward_parts(batch[PATCHES_KEY], z)
    gt = pad_to(batch[MASK_KEY], 8)
    assert math.isclose(losses["spatial"], float((mask - gt).abs().mean()), rel_tol=1e-5)
    want = (mask * (fake + 1) / 2 - gt * x).abs().mean()
    assert math.isclose(losses["appearance"], float(want), rel_tol=1e-5)
    assert math.isclose(model.loss_weight(0.0), 100.0) and math.isclose(model.loss_weight(1.0), 10.0)
    assert math.isclose(model.loss_weight(0.5), math.sqrt(1000.0))


def test_puzzle_gan_discriminator_sees_real_generated_and_both_composites(patches):
    """The authors' four D terms: real -> 1; generated, another image's patch region pasted into the
    real image, and the real patch region pasted into another image -> 0; 4 log 2 at a blind D."""
    model = build(PuzzleGAN, patches)
    model.discriminator = RecordingDiscriminator()
    batch = {k: v[:16] for k, v in patches.split("train").items()}
    torch.manual_seed(5)
    losses = model.train_step(batch, 0.0)
    assert math.isclose(losses["d_loss"], 4 * math.log(2), rel_tol=1e-6)
    (real,), (fake,), (wrong_parts,), (wrong_rest,) = model.discriminator.calls[:4]
    torch.manual_seed(5)
    x = model.to_canvas(model.spec.dequantize(batch["x"]))
    assert torch.equal(real, x)
    other, m = torch.roll(x, 1, 0), batch[MASK_KEY]
    assert torch.equal(wrong_parts, m * other + (1 - m) * x)
    assert torch.equal(wrong_rest, m * x + (1 - m) * other)
    assert not torch.allclose(fake, x, atol=0.2)


def test_best_constant_mask_by_hand():
    # pixel 0 in all three masks, pixel 1 in two, pixel 2 in one, pixel 3 in none
    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32).reshape(3, 1, 1, 4)
    # candidates {0}: IoU (1/3 + 1/2 + 1) / 3 = 0.611; {0, 1}: (2/3 + 1 + 1/2) / 3 = 0.722;
    # {0, 1, 2}: (1 + 2/3 + 1/3) / 3 = 0.667
    assert torch.equal(best_constant_mask(masks), torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 4))


def test_puzzle_gan_complete_returns_image_and_mask(patches):
    model = build(PuzzleGAN, patches).eval()
    test = patches.split("test")
    with torch.no_grad():
        img, mask = model.complete(test[PATCHES_KEY][:5], generator=torch.Generator().manual_seed(0))
    assert img.shape == mask.shape[:1] + (1, 8, 8) and mask.shape == (5, 1, 8, 8)
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    with pytest.raises(GenbenchError, match=r"expected \(n, 3, 1, 3, 3\)"):
        model.complete(torch.zeros(5, 2, 1, 3, 3))
    with pytest.raises(GenbenchError, match="divided by 255"):
        model.complete(torch.zeros(5, 3, 1, 3, 3, dtype=torch.uint8))
    with pytest.raises(GenbenchError, match=r"range over \[7.5, 248\]; pass pixels scaled"):
        model.complete(test[PATCHES_KEY][:5] * 255)
    with pytest.raises(GenbenchError, match="g_every must be at least 1"):
        build(PuzzleGAN, patches, g_every=0)


class CopyCompleter(PuzzleGAN):
    """Returns the real test image the patches were cut from, and the true mask: a perfect model."""

    lookup: dict = {}

    def complete(self, patches, generator=None):
        idx = [self.lookup[p.numpy().tobytes()] for p in patches.cpu()]
        return self.images[idx], self.masks[idx]


def test_patch_metric_is_perfect_for_the_true_images_and_masks(patches):
    test, val = patches.split("test"), patches.split("val")  # the mask threshold is chosen on val
    model = build(CopyCompleter, patches)
    model.images, model.masks = torch.cat([test["x"], val["x"]]), torch.cat([test[MASK_KEY], val[MASK_KEY]])
    model.lookup = {p.numpy().tobytes(): i for i, p in enumerate(torch.cat([test[PATCHES_KEY], val[PATCHES_KEY]]))}
    out = PatchCompletion().compute(EvalContext(model, patches, get_profile("quick"), 0, "cpu"))
    assert out["mask_iou"] == 1.0 and out["patch_fidelity"] == 1.0 and out["patch_fidelity_at_truth"] == 1.0
    assert out["mask_iou_half"] == 1.0
    assert out["patch_fidelity_chance"] < 0.9 and out["patch_fidelity_at_truth_chance"] < 0.8
    assert 0.3 < out["mask_iou_chance"] < 0.7
    assert PatchCompletion().applies(PuzzleGAN, patches)[0]
    assert not PatchCompletion().applies(Text2ImageGAN, patches)[0]


def test_text2image_pretraining_lowers_the_joint_embedding_loss(captions):
    model = build(Text2ImageGAN, captions, embed_warmup=1.0)  # the whole budget pre-trains the encoder
    val = captions.split("val")
    content = val["y"] * 2 + val["thick"]

    def held_out():
        """(joint-embedding loss, share of images whose best-scoring caption has their content)."""
        with torch.no_grad():
            img, txt = model.image_encoder(val["x"] * 2 - 1), model.embed_text(val[CAPTION_KEY])
        retrieval = float((content[(img @ txt.T).argmax(1)] == content).double().mean())
        return float(joint_embedding_loss(img, txt, content)), retrieval

    loss0, retrieval0 = held_out()
    train_steps(model, captions, 80)
    loss1, retrieval1 = held_out()
    assert loss1 < loss0 and retrieval0 < 0.2 and retrieval1 > 0.5  # 20 contents: chance is 0.05


def test_puzzle_gan_learns_where_patches_go(patches):
    model = build(PuzzleGAN, patches)
    test = patches.split("test")

    def held_out_spatial():
        model.eval()
        with torch.no_grad():
            _, mask = model.complete(test[PATCHES_KEY], generator=torch.Generator().manual_seed(0))
        model.train()
        return float((mask - test[MASK_KEY]).abs().mean())

    before = held_out_spatial()
    train_steps(model, patches, 120)
    assert held_out_spatial() < 0.8 * before


@pytest.mark.parametrize("cls,task_data", [(c, c) for c in FAMILIES], ids=[c.name for c in FAMILIES],
                         indirect=["task_data"])
def test_parzen_is_not_estimated_from_samples_of_held_out_inputs(cls, task_data):
    from genbench.metrics.parzen import ParzenWindow

    ok, why = ParzenWindow().applies(cls, task_data)
    assert not ok and "held-out inputs" in why


def test_mnist_task_sets_build_from_the_raw_files_and_train():
    caps = load_mnist_captions(root=MNIST_RAW, limit=200)
    assert caps.spec.name == "mnist-captions" and caps.split("test")[CAPTION_KEY].shape == (200, 6)
    words = detokenize(caps.split("test")[CAPTION_KEY][:20])
    assert all(DIGIT_WORDS[int(y)] in w.split() for w, y in zip(words, caps.split("test")["y"][:20]))
    pats = load_mnist_patches(root=MNIST_RAW, limit=200)
    test = pats.split("test")
    assert test[PATCHES_KEY].shape == (200, 3, 1, 10, 10) and test[MASK_KEY].shape == (200, 1, 28, 28)
    assert torch.equal(cut_patches(test["x"], test[POS_KEY], 10), test[PATCHES_KEY])
    for cls, ds in ((Text2ImageGAN, caps), (PuzzleGAN, pats)):
        model = build(cls, ds, batch_size=8)
        losses = train_steps(model, ds, 2)[1]
        assert all(math.isfinite(v) for v in losses.values())


def test_run_all_puts_each_task_set_with_its_family_only(manager):
    from genbench.budget import Budget
    from genbench.suite import plan_trials

    trials = plan_trials(manager, None, None, Budget.parse("1steps"), 1, "test", run_all=True)
    by_dataset = {}
    for t in trials:
        by_dataset.setdefault(t.dataset, set()).add(t.model)
    assert by_dataset["digits-captions"] == {"text2image-gan"}
    assert by_dataset["digits-patches"] == {"puzzle-gan"}
    assert "text2image-gan" not in by_dataset["digits"] and "puzzle-gan" not in by_dataset["digits"]
    assert not any(d.startswith("mnist") for d in by_dataset)  # MNIST sets only by flag
