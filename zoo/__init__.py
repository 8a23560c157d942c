"""The model zoo's published models, one folder each in Hub model-repo layout (see README.md).

This folder is the zoo's one home. The wheel ships it as the package ``lightning_dlstrat.zoo_models``
(a setuptools ``package-dir`` mapping in pyproject.toml), which is what this file is for; it
holds no code. ``lightning_dlstrat.zoo`` finds the folders.
"""
