"""Every docstring example in the project's packages runs and prints what it says (river's convention)."""
import doctest
import importlib
import pkgutil

import pytest

import detectors
import retrain_trigger
import streams

# Subpackages included (streams is layered); a package's __main__ would run its command on import.
MODULES = [m.name for package in (detectors, retrain_trigger, streams)
           for m in pkgutil.walk_packages(package.__path__, prefix=f"{package.__name__}.")
           if not m.name.endswith(".__main__")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
