"""Feature extractors for sample-quality metrics.

The default extractor is a *domain classifier*: a small CNN that genbench trains once per image
dataset (fixed seed, training split only) and caches.  FID, KID and precision/recall use its
penultimate layer; IS uses its logits.  Its held-out accuracy is recorded with every result so a
reader can judge the features.  (Inception-v3 is the standard on natural images but its weights
cannot be fetched offline and 8x8 digits are far from its training domain.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genbench.datasets import Dataset

CLASSIFIER_VERSION = 2  # bump when the architecture or training recipe changes (invalidates caches)
FEATURE_BATCH = 100  # feature-extraction chunk: large temporary tensors are slow on this machine class


def cache_dir() -> Path:
    return Path(os.environ.get("GENBENCH_CACHE", Path.home() / ".cache" / "genbench"))


class DomainClassifier(nn.Module):
    """Two conv blocks and a 128-d penultimate layer; resolution-agnostic through adaptive pooling."""

    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(64 * 16, self.feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


@dataclass
class Extractor:
    """A trained domain classifier plus what a result row needs to name it."""

    name: str
    model: DomainClassifier
    weights_hash: str
    heldout_accuracy: float

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features, logits) on the CPU in float64, computed in chunks."""
        self.model.eval()
        device = next(self.model.parameters()).device
        feats, logits = [], []
        for chunk in x.split(FEATURE_BATCH):
            f, l = self.model(chunk.to(device).clamp(0, 1).float())
            feats.append(f.double().cpu())
            logits.append(l.double().cpu())
        return torch.cat(feats), torch.cat(logits)

    def fingerprint(self) -> str:
        return f"{self.name}@{self.weights_hash[:12]}"


def weights_hash(module: nn.Module) -> str:
    buf = io.BytesIO()
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for k in sorted(state):
        buf.write(k.encode())
        buf.write(state[k].numpy().tobytes())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def train_domain_classifier(dataset: Dataset, seed: int = 0, epochs: int | None = None,
                            device="cpu") -> DomainClassifier:
    """Train on the training split with small random shifts, fixed seed.  By default 80 epochs of
    a 1000-image set (97% held-out on digits), fewer on larger sets (about 80,000 examples seen,
    at least 5 epochs)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train = dataset.split("train")
    x, y = train["x"].cpu(), train["y"].cpu()
    epochs = epochs or max(5, min(80, 80_000 // len(x)))
    num_classes = int(dataset.spec.num_classes or int(y.max()) + 1)
    model = DomainClassifier(dataset.spec.shape[0], num_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    batch = 100
    pad = max(1, dataset.spec.shape[-1] // 8)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb = x[idx]
            # random translation by up to `pad` pixels: cheap augmentation that helps on 1000 images
            shifted = F.pad(xb, (pad, pad, pad, pad), mode="replicate")
            dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=g).tolist()
            xb = shifted[..., dy : dy + xb.shape[-2], dx : dx + xb.shape[-1]]
            _, logits = model(xb.to(device))
            loss = F.cross_entropy(logits, y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model: DomainClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    ext = Extractor("tmp", model, "", 0.0)
    _, logits = ext.features(x)
    return float((logits.argmax(1) == y.cpu()).double().mean())


_MEMO: dict[tuple, Extractor] = {}


def data_fingerprint(dataset: Dataset) -> str:
    """A short hash of the training images and labels."""
    train = dataset.split("train")
    h = hashlib.sha256()
    for key in ("x", "y"):
        h.update(train[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def domain_extractor(dataset: Dataset, device="cpu", seed: int = 0) -> Extractor:
    """The cached domain classifier for ``dataset`` (trained on first use, then loaded)."""
    content = data_fingerprint(dataset)
    key = (content, str(device), seed)
    name = f"domain-classifier-{dataset.name}-v{CLASSIFIER_VERSION}"
    if key in _MEMO:  # the same weights, named after the dataset that asks
        return dataclasses.replace(_MEMO[key], name=name)
    spec = dataset.spec
    # Cached by the content of the training split, not the dataset's name: derived task sets that
    # reuse a base set's images (captions, patches) share its classifier instead of training anew.
    path = cache_dir() / "extractors" / f"domain-classifier-v{CLASSIFIER_VERSION}-{content}-seed{seed}.pt"
    num_classes = int(spec.num_classes or int(dataset.split("train")["y"].max()) + 1)
    model = DomainClassifier(spec.shape[0], num_classes)
    if path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        acc = float(blob["heldout_accuracy"])
    else:
        model = train_domain_classifier(dataset, seed=seed, device="cpu")
        test = dataset.split("test")
        acc = accuracy(model, test["x"], test["y"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"state_dict": model.state_dict(), "heldout_accuracy": acc}, tmp)
        os.replace(tmp, path)
    model = model.to(device).eval()
    ext = Extractor(name=name, model=model, weights_hash=weights_hash(model), heldout_accuracy=acc)
    _MEMO[key] = ext
    return ext
