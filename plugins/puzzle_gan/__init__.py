"""Key-patch "puzzle" GAN (Lee, Yun, Choi, Yoo, Yang & Oh, "Unsupervised Holistic Image Generation
from Key Local Patches", ECCV 2018, arXiv:1703.10730): given a few local patches of an image, with
no hint of where they belong, generate the whole image and a mask of where the patches sit in it.

The dataset
-----------
``digits-patches`` (and ``mnist-patches`` by flag) cuts K = 3 square key patches from every image:
side 3 on the 8x8 digits, 10 on 28x28 MNIST (3/8 of the side).  The paper takes its key patches from
an objectness detector's boxes on faces and cars; on digits the informative regions are the strokes,
so patch positions are drawn with probability proportional to the ink in the window plus a small
floor (a generator seeded with the dataset seed); a new window may share at most one row or one
column with an earlier one (on the 8x8 digits there is always room for that).  Batches carry ``"patches"`` (N, K,
C, s, s), ``"patch_mask"`` (N, 1, H, W; 1 on the union of the patch windows, the paper's ground-truth
mask) and ``"patch_pos"`` (N, K, 2; top-left row and column).

The model (the authors' losses and schedule, at digit scale)
------------------------------------------------------------
* A part encoder shared by the K patches (two 3x3 convolutions with leaky ReLU and a linear layer;
  the authors resize each patch to the full image and run a deep encoder on it -- on 3x3 patches
  that adds nothing but cost, so the encoder reads the patch at its own size); the K codes are
  summed, as in the paper, so the order of the patches does not matter.
* A mask generator and an image generator, both DCGAN generators: the mask generator decodes the
  summed code (sigmoid output), the image generator decodes the code joined to noise z ~ U[-1, 1]
  (8-d, see below).  The two are independent, as in the authors' residual-block variant; their
  U-net variant also feeds the mask generator's feature maps to the image generator.
* A DCGAN discriminator on whole images.

Losses, as in the authors' code (``x`` real, ``x'`` another training image, ``M`` the true mask):

    L_D = -log D(x) - log(1 - D(G)) - log(1 - D(M x' + (1 - M) x)) - log(1 - D(M x + (1 - M) x'))
    L_G = -log D(G) + lambda_M |M_G - M|_1 + lambda_A |M_G * G - M * x|_1

The two composites teach D that real patches pasted into the wrong image are fake, so G must make
the rest of the image agree with the patches (the adversarial loss); the spatial loss lambda_M
trains the mask; the appearance loss lambda_A keeps the patches unchanged where the mask puts them.

Scaled to 8x8 digits and a budget of seconds, each choice measured on digits-patches at 15 s:

* Both weights decay log-linearly over the budget's progress, as the authors' code decays them over
  epochs, but from 100 to 10 instead of 1e-2 to 1e-4: the L1 terms are means over the pixels of an
  8x8 image, and at the published weights the adversarial term alone shaped the output (the
  generator collapsed to one digit whatever the patches).  At 10 -> 1 the patches came out no
  closer to their inputs than a random digit's windows (at-truth fidelity 0.685, chance 0.695); at
  100 -> 10, 0.73 on two seeds with FID 23-24; at 1000 -> 100, 0.755 but FID 64.
* The appearance loss compares the masked images in [0, 1], where a masked-out pixel (0) agrees with
  the digits' black background; in the generator's [-1, 1] range a masked-out pixel is 0, mid-grey,
  and the loss pulled every pixel the mask left out towards grey.
* One G step per D step (the authors: one per two D steps): D sees four terms per step; at 2:1,
  FID 31 against 23 at 1:1 (same seed; with the weaker 10 -> 1 weights D won outright at 2:1,
  FID 288 against 164).
* 8 noise dimensions (z ~ U[-1, 1]): with the weaker 10 -> 1 weights, 64 dimensions collapsed the
  generator towards a few digits in all three seeds tried (FID 156-284) and 8 did not (26-40); at
  the final weights the two are close (FID 24.5 with 64, 22.6 with 8, and at-truth fidelity 0.716
  against 0.735).

Adam with lr 2e-4 and beta1 0.5 for all networks, as in the authors' code.

``sample(n, generator, condition)`` needs key patches: ``condition`` is a tensor (n, K, C, s, s);
``complete(patches, generator)`` returns the image and the mask.  ``condition_key = "patches"``, so
FID and the sample grid use held-out patches.  The family metric ``patch_completion`` reports, on
the test images: ``mask_iou`` (the mask thresholded where it best fits the validation images'
true masks, ``mask_threshold``, against the test images' true masks; the chance mask below gets its
threshold the same way, so neither side is held to a threshold the other is not) and
``mask_iou_half`` (thresholded at 1/2);
``patch_fidelity`` (1 - mean absolute pixel difference between each input patch and the generated
image at the window where it matches best -- the problem gives no positions, so a patch counts as
kept wherever it reappears; pixels in [0, 1]); ``patch_fidelity_at_truth`` (the same at the patch's
true position); and ``patch_fidelity_chance`` / ``patch_fidelity_at_truth_chance``, the two scores
of the patches against a different real test image: what an image that ignores its patches scores
(digits share so many stroke windows that the best-window chance level is high); and
``mask_iou_chance``, the IoU of the best constant mask (the training masks' mean, thresholded where
it best fits the training masks), what a model that predicts one mask whatever its patches scores.

The package: :mod:`~genbench_plugins.puzzle_gan.dataset`, :mod:`~genbench_plugins.puzzle_gan.model` and
:mod:`~genbench_plugins.puzzle_gan.metric`, one file each; here the hooks that register them.
"""

from __future__ import annotations

import genbench
from genbench.datasets import DatasetEntry
from genbench_plugins.puzzle_gan.dataset import (
    DEFAULT_SEED,
    DIGITS_PATCHES_SPEC,
    INK_FLOOR,
    MASK_KEY,
    MNIST_PATCHES_SPEC,
    N_PATCHES,
    PATCHES,
    PATCHES_KEY,
    POS_KEY,
    choose_windows,
    cut_patches,
    load_digits_patches,
    load_mnist_patches,
    make_patch_dataset,
    patch_side,
    patch_spec,
    windows_mask,
)
from genbench_plugins.puzzle_gan.metric import (
    MASK_THRESHOLDS,
    PatchCompletion,
    at_truth_error,
    best_constant_mask,
    best_threshold,
    best_window_error,
    mask_iou,
)
from genbench_plugins.puzzle_gan.model import PartEncoder, PuzzleGAN, PuzzleGANConfig


@genbench.hookimpl
def register_models(register):
    register(PuzzleGAN)


@genbench.hookimpl
def register_datasets(register):
    register(DatasetEntry("digits-patches", "image", DIGITS_PATCHES_SPEC, load_digits_patches,
                          f"digits with {N_PATCHES} key patches of 3x3 per image and their mask"))
    register(DatasetEntry("mnist-patches", "image", MNIST_PATCHES_SPEC, load_mnist_patches,
                          f"MNIST with {N_PATCHES} key patches of 10x10 per image and their mask",
                          in_default_suite=False))


@genbench.hookimpl
def register_metrics(register):
    register(PatchCompletion())


__all__ = ["DEFAULT_SEED", "DIGITS_PATCHES_SPEC", "INK_FLOOR", "MASK_KEY", "MASK_THRESHOLDS", "MNIST_PATCHES_SPEC",
           "N_PATCHES", "PATCHES", "PATCHES_KEY", "POS_KEY", "PartEncoder", "PatchCompletion", "PuzzleGAN",
           "PuzzleGANConfig", "at_truth_error", "best_constant_mask", "best_threshold", "best_window_error",
           "choose_windows", "cut_patches", "load_digits_patches", "load_mnist_patches", "make_patch_dataset",
           "mask_iou", "patch_side", "patch_spec", "windows_mask"]
