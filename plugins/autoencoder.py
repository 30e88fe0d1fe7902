"""Deterministic autoencoders, and whether they are generative: a regularised autoencoder sampled
from N(0, I) in code space (``ae-normal``) and from an ex-post density fitted on its training codes
(``ae-gmm``), following Ghosh, Sajjadi, Vergari, Black & Schoelkopf, "From Variational to
Deterministic Autoencoders", ICLR 2020 (arXiv:1903.12436).

Objective: the paper's RAE-L2 loss

    L_RAE = ||x - D(E(x))||^2 + beta * 1/2 ||E(x)||^2 + lambda * ||theta_D||^2

with a deterministic encoder E and decoder D, squared-L2 reconstruction summed over pixels (mean over
the minibatch), the code penalty 1/2 ||z||^2 that bounds the code space, and the L2 penalty on the
decoder's parameters that smooths the decoder.  beta = 1e-4 and lambda = 1e-7 are the published
MNIST values of RAE-L2; setting both to 0 gives the plain autoencoder (the paper's "AE" row).

Sampling: an autoencoder alone has no prior.  ``ae-normal`` decodes z ~ N(0, I), the naive answer; the
paper's answer is ex-post density estimation: after training, fit a Gaussian mixture with 10
components and full covariances to the codes of the training set and decode its samples.  Here the
mixture is scikit-learn's GaussianMixture (EM, k-means initialisation with a fixed seed), fitted
lazily on the first ``sample()`` (or ``prior()``) after training, on the codes of the distinct
training inputs held in a bounded buffer that ``train_step`` fills (``gmm_fit_points`` most recent
inputs, a buffer of the model so it survives checkpoints; every training step discards the fit).
Comparing the two rows' sample scores answers "is an autoencoder generative?" by measurement: the
decoder is good where the codes are, and only the ex-post density knows where that is.

What was scaled, and why: MLPs (two hidden layers of 400 ReLU units) instead of the paper's
convolutional networks with batch norm, and an 8-dimensional code instead of MNIST's 16 -- the 8x8
digits carry far less detail than 28x28 MNIST and a 15-second CPU budget favours small networks;
2-D codes for 2-D point sets.  Adam at 1e-3 with minibatch 100, as in the paper.

The encoder/decoder base, :class:`genbench.toolkit.autoencoders.DeterministicAutoencoder`, is shared
with the adversarial and Wasserstein autoencoders (``aae``, ``wae``).  Deterministic encoders do not
declare the ``latent`` capability (that would promise an ``encode(x)`` distribution and a decoder
likelihood); instead ``codes(x)`` returns the code and ``prior()`` the distribution codes are
sampled from, which is what the aggregate-posterior metric compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import genbench
from genbench.errors import GenbenchError
from genbench.optim import adam
from genbench.toolkit.autoencoders import DeterministicAutoencoder, GaussianMixtureCodes

CODE_CHUNK = 1000  # rows encoded at a time when fitting the ex-post density


@dataclass
class AEConfig:
    latent_dim: int = 0  # 0 = by data: 8 for images, 2 for 2-D points
    hidden: int = 400
    lr: float = 1e-3
    batch_size: int = 100
    code_penalty: float = 1e-4  # beta on 1/2 ||z||^2 (RAE; 0 = plain autoencoder)
    decoder_l2: float = 1e-7  # lambda on ||theta_D||^2 (RAE-L2; 0 = plain autoencoder)


class Autoencoder(DeterministicAutoencoder):
    """Regularised autoencoder (RAE-L2) sampled by decoding z ~ N(0, I)."""

    name = "ae-normal"
    family = "Autoencoder (RAE)"
    paper = "Ghosh et al. 2020, arXiv:1903.12436"
    Config = AEConfig

    def __init__(self, config: AEConfig, spec):
        super().__init__(config, spec)
        self.optimizers = {"ae": adam(self.parameters(), lr=config.lr)}

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L_RAE, mean reconstruction cost, mean code penalty 1/2 ||z||^2) on the batch ``x``."""
        cost, z = self.reconstruction_cost(x)
        rec = cost.mean()
        code = 0.5 * z.pow(2).sum(1).mean()
        loss = rec + self.config.code_penalty * code
        if self.config.decoder_l2:
            loss = loss + self.config.decoder_l2 * sum(p.pow(2).sum() for p in self.decoder.parameters())
        return loss, rec, code

    def train_step(self, batch, progress):
        loss, rec, code = self.loss(batch["x"])
        opt = self.optimizers["ae"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "rec": rec.detach(), "code": code.detach()}


@dataclass
class AEGMMConfig(AEConfig):
    gmm_components: int = 10  # the paper's ex-post mixture: 10 components, full covariances
    gmm_fit_points: int = 5000  # most recent training inputs kept for the fit (the whole digits train split)
    gmm_seed: int = 0  # seed of the mixture's k-means initialisation
    gmm_max_iter: int = 500


class AutoencoderExPostGMM(Autoencoder):
    """Regularised autoencoder sampled from a Gaussian mixture fitted on its training codes."""

    name = "ae-gmm"
    Config = AEGMMConfig

    def __init__(self, config: AEGMMConfig, spec):
        super().__init__(config, spec)
        if config.gmm_components < 1 or config.gmm_fit_points < config.gmm_components:
            raise GenbenchError(f"{self.name}: need gmm_components >= 1 and gmm_fit_points >= gmm_components, "
                                f"got {config.gmm_components} and {config.gmm_fit_points}")
        # Training inputs seen most recently (a ring buffer), so the mixture can be fitted on the
        # codes of the final encoder without the model holding the dataset.
        self.register_buffer("seen_inputs", torch.zeros(config.gmm_fit_points, spec.dim))
        self.register_buffer("seen_count", torch.zeros((), dtype=torch.long))
        self.ex_post: GaussianMixtureCodes | None = None  # the fitted mixture; None until sampled

    def train_step(self, batch, progress):
        losses = super().train_step(batch, progress)
        self.remember(batch["x"])
        return losses

    @torch.no_grad()
    def remember(self, x: torch.Tensor) -> None:
        """Add a batch of training inputs to the buffer and discard any fitted mixture."""
        x = x.flatten(1)[-len(self.seen_inputs):]
        rows = (int(self.seen_count) + torch.arange(len(x))) % len(self.seen_inputs)
        self.seen_inputs[rows.to(self.seen_inputs.device)] = x.to(self.seen_inputs)
        self.seen_count += len(x)
        self.ex_post = None

    def load_state_dict(self, *args, **kwargs):
        # a mixture fitted on the codes of the weights being replaced would no longer fit them
        self.ex_post = None
        return super().load_state_dict(*args, **kwargs)

    def training_inputs(self) -> torch.Tensor:
        """The distinct training inputs in the buffer."""
        filled = min(int(self.seen_count), len(self.seen_inputs))
        return torch.unique(self.seen_inputs[:filled], dim=0)

    @torch.no_grad()
    def fit_ex_post(self) -> GaussianMixtureCodes:
        """Fit the mixture on the codes of the buffered training inputs (the paper's ex-post step)."""
        from sklearn.mixture import GaussianMixture

        x = self.training_inputs()
        k = self.config.gmm_components
        if len(x) < k:
            raise GenbenchError(f"{self.name} fits its {k}-component ex-post mixture on the codes of training "
                                f"inputs, and train_step has seen {len(x)} distinct ones: train it first "
                                f"(or lower gmm_components)")
        was_training = self.training
        self.eval()
        z = torch.cat([self.codes(chunk.reshape(-1, *self.spec.shape)) for chunk in x.split(CODE_CHUNK)])
        self.train(was_training)
        gmm = GaussianMixture(n_components=k, covariance_type="full", max_iter=self.config.gmm_max_iter,
                              random_state=self.config.gmm_seed)
        gmm.fit(z.double().cpu().numpy())
        covariances = torch.from_numpy(gmm.covariances_)
        self.ex_post = GaussianMixtureCodes(
            weights=torch.from_numpy(gmm.weights_).float(),
            means=torch.from_numpy(gmm.means_).float(),
            scale_tril=torch.linalg.cholesky(covariances).float(),
        )
        return self.ex_post

    def sample_codes(self, n, generator=None):
        mixture = self.ex_post or self.fit_ex_post()
        return mixture.sample(n, generator, self.device)

    def prior(self):
        return (self.ex_post or self.fit_ex_post()).distribution(self.device)


@genbench.hookimpl
def register_models(register):
    register(Autoencoder)
    register(AutoencoderExPostGMM)
