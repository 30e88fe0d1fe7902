"""Feature extractors for sample-quality metrics.

The default extractor is a *domain classifier*: a small CNN that genbench trains once per image
dataset (fixed seed, training split only) and caches.  FID, KID and precision/recall use its
penultimate layer; IS uses its logits.  Its held-out accuracy is recorded with every result so a
reader can judge the features.  (Inception-v3 is the standard on natural images but its weights
cannot be fetched offline and 8x8 digits are far from its training domain.)

Cache files (the classifier here, real-data features in :mod:`genbench.metrics.fidelity`) are
verified, never trusted as they are: each holds a sha256 over its tensors' bytes and over the
settings that produced it (:func:`save_verified`); a file that does not load, whose digest does not
match, or that another recipe produced is rebuilt, with one warning line on stderr
(:func:`load_verified`).  The classifier's held-out accuracy is recomputed on the test split at
every load and must agree with the stored figure, so a reported accuracy is always measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genbench.datasets import Dataset

CLASSIFIER_VERSION = 2  # bump when the architecture or training recipe changes (invalidates caches)
FEATURE_BATCH = 100  # feature-extraction chunk: large temporary tensors are slow on this machine class


CACHE_FORMAT = 1  # layout of a verified cache file (see save_verified)


def cache_dir() -> Path:
    return Path(os.environ.get("GENBENCH_CACHE", Path.home() / ".cache" / "genbench"))


def content_digest(tensors: dict[str, torch.Tensor], producer: dict) -> str:
    """sha256 over the ``producer`` settings (canonical JSON) and every tensor's name, dtype, shape
    and bytes, in name order."""
    h = hashlib.sha256(json.dumps(producer, sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_warning(path: Path, why: str) -> None:
    """The one line that says a cache file is rebuilt, and why (stderr: a worker's log)."""
    print(f"genbench: warning: cache file {path} {why}; rebuilding it", file=sys.stderr, flush=True)


def save_verified(path: Path, tensors: dict[str, torch.Tensor], producer: dict) -> None:
    """Write ``tensors`` with the settings that produced them and the :func:`content_digest` of
    both, atomically (temp file + rename); loads with ``weights_only=True``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    blob = {"format": CACHE_FORMAT, "producer": producer, "tensors": tensors,
            "sha256": content_digest(tensors, producer)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_verified(path: Path, producer: dict, keys: tuple[str, ...] = ()) -> tuple[dict, dict] | None:
    """(tensors, stored producer) of a cache file written by :func:`save_verified`, or None when
    there is none or it cannot be trusted (unreadable or truncated, another layout, a digest that
    does not match its content, settings other than ``producer``'s, a missing key in ``keys``) --
    then after one warning line, and the caller rebuilds it.  Keys of ``producer`` that the stored
    settings also hold must agree; the stored ones may add results (an accuracy)."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a tensor file at all
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        cache_warning(path, f"cannot be read ({type(exc).__name__}: {first})")
        return None
    if not (isinstance(blob, dict) and blob.get("format") == CACHE_FORMAT and isinstance(blob.get("tensors"), dict)
            and isinstance(blob.get("producer"), dict) and isinstance(blob.get("sha256"), str)):
        cache_warning(path, "has no content hash (written by an earlier genbench or by hand)")
        return None
    tensors, stored = blob["tensors"], blob["producer"]
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        cache_warning(path, "holds something other than tensors")
        return None
    if content_digest(tensors, stored) != blob["sha256"]:
        cache_warning(path, "does not match its content hash (changed after it was written)")
        return None
    differs = sorted(k for k in producer if stored.get(k) != producer[k])
    if differs:
        cache_warning(path, f"was produced with other settings ({', '.join(differs)})")
        return None
    missing = [k for k in keys if k not in tensors]
    if missing:
        cache_warning(path, f"lacks {', '.join(missing)}")
        return None
    return tensors, stored


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


ROTATIONS = 4  # the pretext task of a set without classes: which of 4 quarter turns an image got


def rotation_task(dataset: Dataset) -> bool:
    """Whether ``dataset`` has fewer than two classes (a flat folder of images): its classifier
    then learns to tell which quarter turn an image was given (Gidaris et al. 2018), a task whose
    features see the images' content without labels."""
    return int(dataset.spec.num_classes or int(dataset.split("train")["y"].max()) + 1) < 2


def turned(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) turned by ``k[i]`` quarter turns."""
    out = x.clone()
    for r in range(1, ROTATIONS):
        rows = k == r
        if rows.any():
            out[rows] = torch.rot90(x[rows], r, dims=(-2, -1))
    return out


def classifier_classes(dataset: Dataset) -> int:
    if rotation_task(dataset):
        return ROTATIONS
    return int(dataset.spec.num_classes or int(dataset.split("train")["y"].max()) + 1)


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
    rotations = rotation_task(dataset)
    model = DomainClassifier(dataset.spec.shape[0], classifier_classes(dataset)).to(device)
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
            target = y[idx]
            if rotations:
                target = torch.randint(0, ROTATIONS, (len(xb),), generator=g)
                xb = turned(xb, target)
            _, logits = model(xb.to(device))
            loss = F.cross_entropy(logits, target.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def held_out_task(dataset: Dataset, split: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) the classifier is scored on: the labels, or for a set without classes
    each image turned by a fixed number of quarter turns (index mod 4)."""
    if not rotation_task(dataset):
        return split["x"], split["y"]
    k = torch.arange(len(split["x"])) % ROTATIONS
    return turned(split["x"].cpu(), k), k


def accuracy(model: DomainClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    ext = Extractor("tmp", model, "", 0.0)
    _, logits = ext.features(x)
    return float((logits.argmax(1) == y.cpu()).double().mean())


_MEMO: dict[tuple, Extractor] = {}


def data_fingerprint(dataset: Dataset, split: str = "train") -> str:
    """A short hash of one split's images and labels (train: what the classifier learns from;
    test: what its held-out accuracy is measured on)."""
    data = dataset.split(split)
    h = hashlib.sha256()
    for key in ("x", "y"):
        h.update(data[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_classifier(path: Path, producer: dict, model: DomainClassifier, dataset: Dataset) -> float | None:
    """The held-out accuracy of the verified classifier in ``path``, loaded into ``model``; None
    (after one warning line) when the file cannot be trusted.  The accuracy is measured again on
    the test split, never read from the file alone: a stored figure the weights do not reach (by
    more than one test image) means the file was tampered with."""
    loaded = load_verified(path, producer)
    if loaded is None:
        return None
    tensors, stored = loaded
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, KeyError) as exc:
        cache_warning(path, f"does not fit the classifier ({(str(exc).splitlines() or [''])[0][:120]})")
        return None
    test = dataset.split("test")
    acc = accuracy(model, *held_out_task(dataset, test))
    claimed = stored.get("heldout_accuracy")
    if not isinstance(claimed, float) or abs(claimed - acc) > 1.0 / max(1, len(test["y"])):
        cache_warning(path, f"states a held-out accuracy of {claimed!r}, but its weights reach {acc:.4f}")
        return None
    return acc


def domain_extractor(dataset: Dataset, device="cpu", seed: int = 0) -> Extractor:
    """The cached domain classifier for ``dataset`` (trained on first use, then loaded and verified:
    see the module docstring)."""
    content = data_fingerprint(dataset)
    key = (content, str(device), seed)
    name = f"domain-classifier-{dataset.name}-v{CLASSIFIER_VERSION}"
    if key in _MEMO:  # the same weights, named after the dataset that asks
        return dataclasses.replace(_MEMO[key], name=name)
    spec = dataset.spec
    # Cached by the content of the training split, not the dataset's name: derived task sets that
    # reuse a base set's images (captions, patches) share its classifier instead of training anew.
    path = cache_dir() / "extractors" / f"domain-classifier-v{CLASSIFIER_VERSION}-{content}-seed{seed}.pt"
    num_classes = classifier_classes(dataset)
    producer = {"kind": "domain-classifier", "version": CLASSIFIER_VERSION, "train_data": content,
                "test_data": data_fingerprint(dataset, "test"), "seed": seed, "in_channels": int(spec.shape[0]),
                "num_classes": num_classes}
    if rotation_task(dataset):
        producer["task"] = "quarter-turn prediction (no classes)"
    model = DomainClassifier(spec.shape[0], num_classes)
    acc = _load_classifier(path, producer, model, dataset)
    if acc is None:
        model = train_domain_classifier(dataset, seed=seed, device="cpu")
        test = dataset.split("test")
        acc = accuracy(model, *held_out_task(dataset, test))
        save_verified(path, dict(model.state_dict()), {**producer, "heldout_accuracy": acc})
    model = model.to(device).eval()
    ext = Extractor(name=name, model=model, weights_hash=weights_hash(model), heldout_accuracy=acc)
    _MEMO[key] = ext
    return ext
