"""The family authors' toolkit: each piece against its closed form, and the rule that built-in
families build on it instead of on each other."""

import ast
from pathlib import Path

import pytest
import torch

from genbench.errors import GenbenchError
from genbench.toolkit import (
    fid_between,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
    imq_kernels,
    imq_mmd2,
    mmd2_unbiased,
)

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def test_hinge_losses_match_their_definition():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # relu(1 - real) = 0, 0.5, 2 ; relu(1 + fake) = 0, 1, 2
    assert float(hinge_discriminator_loss(real, fake)) == pytest.approx(2.5 / 3 + 3.0 / 3)
    assert float(hinge_generator_loss(fake)) == pytest.approx(2.0 / 3)


def test_gradient_penalty_draws_its_own_points_when_none_are_given():
    torch.manual_seed(0)
    real, fake = torch.randn(16, 1, 4, 4), torch.randn(16, 1, 4, 4)
    w = torch.randn(16)
    # a linear critic has the gradient w everywhere: the penalty is (|w| - 1)^2 wherever x_hat falls
    gp = gradient_penalty(lambda v: v.flatten(1) @ w, real, fake)
    assert float(gp) == pytest.approx((float(w.norm()) - 1) ** 2, rel=1e-5)


def _naive_imq_mmd2(x, y, base, scales):
    def k(a, b):
        return sum(base * s / (base * s + float(((a - b) ** 2).sum())) for s in scales)
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_imq_mmd2_is_the_unbiased_estimate_for_unequal_sample_sizes():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64) + 1
    scales = (0.5, 1.0, 2.0)
    want = _naive_imq_mmd2(x, y, base=6.0, scales=scales)
    assert float(imq_mmd2(x, y, base=6.0, scales=scales)) == pytest.approx(want, rel=1e-10)
    assert float(mmd2_unbiased(x, y, imq_kernels(6.0, scales))) == pytest.approx(want, rel=1e-10)


def test_mmd2_is_differentiable_and_rejects_too_few_samples():
    x = torch.randn(10, 2, requires_grad=True)
    imq_mmd2(x, torch.randn(10, 2) + 2.0, base=4.0).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(GenbenchError, match="at least 2 samples"):
        imq_mmd2(torch.randn(1, 2), torch.randn(5, 2), base=4.0)


class _IdentityFeatures:
    """A stand-in extractor whose features are the flattened images."""

    def features(self, x):
        return x.flatten(1).double(), torch.zeros(len(x), 2, dtype=torch.float64)


def test_fid_between_has_the_closed_form_of_two_gaussians():
    # FID between N(0, I) and N(mu, I) in d dimensions is |mu|^2; the estimate from 20k samples is close
    g = torch.Generator().manual_seed(2)
    d = 4
    a = torch.randn(20_000, 1, 2, 2, generator=g)
    b = torch.randn(20_000, 1, 2, 2, generator=g) + 0.5
    assert fid_between(a, b, _IdentityFeatures()) == pytest.approx(d * 0.25, rel=0.05)
    assert fid_between(a, a, _IdentityFeatures()) == pytest.approx(0.0, abs=1e-6)


# --- the families use the toolkit, not each other --------------------------------------------------

# IWAE and the flow-posterior VAE are the VAE's networks trained on another bound or with another
# posterior: they subclass it on purpose, so that the three rows differ only where their papers do
VARIANTS = {"iwae": {"vae"}, "vae_flow": {"vae"}}


def _imported_plugin_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genbench_plugins"):
            out.add(node.module.split(".", 1)[1] if "." in node.module else "")
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith("genbench_plugins."))
    return out


def test_no_family_imports_another_familys_module():
    offenders = {}
    for path in sorted(PLUGINS.glob("*.py")):
        if path.name == "__init__.py":
            continue
        imported = _imported_plugin_modules(path) - VARIANTS.get(path.stem, set())
        if imported:
            offenders[path.stem] = sorted(imported)
    assert not offenders, f"plugins importing other plugin modules (use genbench.toolkit): {offenders}"


def test_no_genbench_module_imports_one_that_imports_it_back():
    # no module of genbench imports a module that imports it back
    import importlib
    import pkgutil

    import genbench

    graph = {}
    root = Path(genbench.__file__).parent
    for info in pkgutil.walk_packages([str(root)], prefix="genbench."):
        path = Path(importlib.util.find_spec(info.name).origin)
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genbench"):
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("genbench"))
        graph[info.name] = deps
    cycles = sorted((a, b) for a in graph for b in graph[a] if b in graph and a in graph[b] and a < b)
    assert not cycles, f"modules that import each other: {cycles}"
    assert len(graph) > 20  # the walk found the package
