"""Run a callback right after ``timm`` is first imported (a post-import hook, stdlib only).

timm never imports third-party code, so a library's models are known to ``timm.create_model``
only once the library has registered them (huggingface/pytorch-image-models#1751). Registering
at ``import lightning_dlstrat`` would cost timm's import (seconds) on every start of the CLI;
this hook defers it to the moment the user imports timm, whichever of the two comes first.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Callable


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, name: str, callback: Callable[[], object]):
        self.name, self.callback, self.spec = name, callback, None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.spec is not None:
            return None
        sys.meta_path.remove(self)  # find the real spec once, without us in the way
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self.spec, self.real_loader = spec, spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self.real_loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.real_loader
        self.real_loader.exec_module(module)
        self.callback()


def install(callback: Callable[[], object], name: str = "timm") -> None:
    """Call ``callback()`` once ``name`` has been imported for the first time."""
    sys.meta_path.insert(0, _AfterImport(name, callback))
