"""The toolkit for family authors: pieces that several model families share, so that a new family
is built from them instead of copying another family's module.

========================  ==================================================================
module                    what it holds
========================  ==================================================================
``genbench.toolkit.gan``  GAN losses (:func:`bce_with_logits` for the minimax and non-saturating
                          losses, the hinge loss), WGAN-GP's :func:`gradient_penalty`, and
                          :class:`GaussianObservationDecoder`, which gives a generator a
                          likelihood model for AIS
``genbench.toolkit.       :class:`DeterministicAutoencoder` (encoder/decoder base with ``codes(x)``),
autoencoders``            :func:`code_discriminator`, :class:`GaussianMixtureCodes`
``genbench.toolkit.mmd``  the unbiased MMD^2 (:func:`mmd2_unbiased`) and WAE's IMQ kernel sum
                          (:func:`imq_mmd2`, :func:`imq_kernels`)
``genbench.toolkit.conv`` image geometry (a power-of-two canvas: :func:`canvas_size`,
                          :func:`pad_to`, :func:`crop_to`, :class:`CanvasImages`), DCGAN's
                          :func:`dcgan_init`, and DCGAN's generator and discriminator sized to a
                          canvas (:class:`DCGANGenerator`, :class:`DCGANDiscriminator`), N(0, std)
                          initialisation (:func:`init_normal`), :func:`check_divisible_size`
``genbench.toolkit.       a derived set's domains (:data:`DOMAIN_KEY`, :func:`domain_names`,
translation``             :func:`domain_index`, :func:`batch_domains`), their classifier
                          (:func:`domain_index_extractor`) and :class:`RecentImages`, the
                          buffer of training images a translation model's ``sample`` translates
``fid_between``           FID between two image batches on an extractor's features, for a
                          family's own metric (from :mod:`genbench.metrics.fidelity`)
========================  ==================================================================

Networks as MLPs and Gaussians are in :mod:`genbench.nn`; optimisers and learning-rate schedules
(:func:`genbench.optim.adam`, :func:`~genbench.optim.linear_decay`, :func:`~genbench.optim.set_lr`)
in :mod:`genbench.optim`.
"""

from genbench.toolkit.conv import (
    CanvasImages,
    DCGANDiscriminator,
    DCGANGenerator,
    canvas_size,
    check_divisible_size,
    check_image_spec,
    crop_to,
    dcgan_init,
    doublings,
    init_normal,
    pad_to,
    start_resolution,
)
from genbench.toolkit.gan import (
    GaussianObservationDecoder,
    bce_with_logits,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from genbench.toolkit.mmd import IMQ_SCALES, imq_kernels, imq_mmd2, mmd2_unbiased
from genbench.toolkit.translation import (
    DOMAIN_KEY,
    RecentImages,
    batch_domains,
    domain_index,
    domain_index_extractor,
    domain_index_view,
    domain_names,
)

__all__ = [
    "DOMAIN_KEY", "IMQ_SCALES", "CanvasImages", "DCGANDiscriminator", "DCGANGenerator",
    "GaussianObservationDecoder", "RecentImages", "batch_domains", "bce_with_logits", "canvas_size",
    "check_divisible_size", "check_image_spec", "crop_to", "dcgan_init", "domain_index",
    "domain_index_extractor", "domain_index_view", "domain_names", "doublings", "fid_between",
    "gradient_penalty", "hinge_discriminator_loss", "hinge_generator_loss", "imq_kernels", "imq_mmd2",
    "init_normal", "mmd2_unbiased", "pad_to", "start_resolution"
]


def __getattr__(name: str):
    # fid_between lives with the other FID code, which imports torch-fidelity and genbench's metrics;
    # the metrics import this toolkit, so it is imported on first use
    if name == "fid_between":
        from genbench.metrics.fidelity import fid_between

        return fid_between
    raise AttributeError(f"module 'genbench.toolkit' has no attribute {name!r}")
