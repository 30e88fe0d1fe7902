"""Pieces of the image-to-image translation families (CycleGAN, StarGAN): the domains of a derived
task set (their names in the ``DataSpec``, each image's index under the ``"domain"`` key), the
classifier of those domains (shared by the translation metrics and model selection), and the ring
buffer of recent training images that ``sample`` translates."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from genbench.errors import DatasetError, GenbenchError
from genbench.model import DataSpec

DOMAIN_KEY = "domain"  # the batch and split key of each image's domain index, in derived task sets


def domain_names(spec: DataSpec) -> list[str]:
    """The domain names of a derived dataset, in index order."""
    extra = spec.extras.get(DOMAIN_KEY)
    if not extra or "names" not in extra:
        raise DatasetError(
            f"dataset {spec.name!r} has no domains: a translation model needs a derived set whose "
            f"DataSpec.extras has {{'domain': {{'names': [...]}}}}, such as digits-domains or digits-pair"
        )
    return list(extra["names"])


def domain_index_view(dataset):
    """The dataset relabelled by domain index (``"y"`` := ``"domain"``), for a domain classifier."""
    from genbench.datasets import Dataset

    names = domain_names(dataset.spec)
    spec = dataclasses.replace(dataset.spec, name=f"{dataset.name}-domain-index", num_classes=len(names), extras={})
    splits = {s: {"x": d["x"], "y": d[DOMAIN_KEY]} for s, d in dataset.splits.items()}
    return Dataset(spec=spec, splits=splits, description=f"{dataset.name} labelled by domain")


def domain_index_extractor(dataset, device="cpu"):
    """genbench's cached domain classifier trained to predict the domain index of ``dataset``."""
    from genbench.features import domain_extractor

    return domain_extractor(domain_index_view(dataset), device)


def domain_index(names: Sequence[str], domain: int | str) -> int:
    """The index of ``domain`` (an index or a name) among ``names``, with an error naming the choices."""
    if isinstance(domain, str):
        if domain not in names:
            raise GenbenchError(f"unknown domain {domain!r}; the domains are {list(names)}")
        return list(names).index(domain)
    idx = int(domain)
    if not 0 <= idx < len(names):
        raise GenbenchError(f"domain index {idx} is out of range; the domains are {list(enumerate(names))}")
    return idx


class RecentImages(nn.Module):
    """A ring buffer of the latest training images and their domains (part of the state dict), from
    which ``sample`` draws the images it translates."""

    def __init__(self, size: int, shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("x", torch.zeros(size, *shape))
        self.register_buffer("domain", torch.zeros(size, dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def add(self, x: torch.Tensor, domain: torch.Tensor) -> None:
        size = len(self.x)
        x, domain = x[-size:], domain[-size:]
        idx = (int(self.count) + torch.arange(len(x), device=self.x.device)) % size
        self.x[idx] = x.detach().to(self.x.dtype)
        self.domain[idx] = domain.to(self.domain.device)
        self.count += len(x)

    def draw(self, n: int, generator: torch.Generator | None, model_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        filled = min(int(self.count), len(self.x))
        if filled == 0:
            raise GenbenchError(
                f"{model_name}.sample() translates recent training images and has none yet: call "
                "train_step first, or translate your own images with translate(x, source, target)"
            )
        idx = torch.randint(filled, (n,), generator=generator).to(self.x.device)
        return self.x[idx], self.domain[idx]


def batch_domains(batch: dict[str, torch.Tensor], model_name: str) -> torch.Tensor:
    """The domain indices of a training batch, or a clear error for a dataset without them."""
    if DOMAIN_KEY not in batch:
        raise GenbenchError(f"{model_name} trains on batches with a 'domain' key; use a derived set such as "
                            "digits-pair or digits-domains")
    return batch[DOMAIN_KEY]
