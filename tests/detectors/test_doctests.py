"""Every docstring example in detectors/ runs and prints what it says (river's convention)."""
import doctest
import importlib
import pkgutil

import pytest

import detectors

MODULES = [f"detectors.{m.name}" for m in pkgutil.iter_modules(detectors.__path__)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
