"""genbench's built-in model families, one module per family.

Each module is a pluggy plugin loaded through the ``genbench`` entry-point group declared in
pyproject.toml -- the same way a third-party package's plugin loads.
"""
