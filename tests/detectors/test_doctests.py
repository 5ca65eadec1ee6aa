"""Every docstring example in the project's packages runs and prints what it says (river's
convention), and every detector documents its constructor the numpydoc way, with an example."""
import ast
import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import detectors
import retrain_trigger
import streams
from detectors import change, drift, estimation, event_windows, metrics, windows
from detectors.base import constructor_arguments

PACKAGES = (detectors, retrain_trigger, streams)
#: every module of the packages, subpackages included (``__main__`` modules run when imported)
MODULES = sorted({package.__name__ for package in PACKAGES} | {
    info.name for package in PACKAGES for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
    if not info.name.endswith(".__main__")})


def test_every_module_is_collected():
    """A source file the walk misses (a folder without ``__init__.py``) would go untested."""
    root = Path(detectors.__file__).resolve().parents[1]
    files = {".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
             for package in PACKAGES for path in Path(package.__file__).resolve().parent.rglob("*.py")
             if path.name != "__main__.py"}
    assert files - set(MODULES) == set()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


DOCUMENTED = [*metrics.METRICS, *drift.DRIFT_DETECTORS, *change.CHANGE_DETECTORS, estimation.CBPE,
              windows.CountWindow, windows.BlockCounts, event_windows.HoppingWindow, event_windows.TumblingWindow]


def _sections(doc: str) -> dict[str, str]:
    """A numpydoc docstring's sections by title (the text before the first is the summary)."""
    parts = re.split(r"^(\w[\w ]*)\n-{3,}\n", doc, flags=re.M)
    return {"Summary": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


@pytest.mark.parametrize("cls", DOCUMENTED, ids=lambda cls: cls.__name__)
def test_every_detector_documents_its_parameters_and_shows_an_example(cls):
    sections = _sections(inspect.getdoc(cls))
    assert {"Parameters", "Examples"} <= set(sections)
    entries = re.findall(r"^(\w+) : ([^\n]+)$", sections["Parameters"], flags=re.M)
    assert [name for name, _ in entries] == list(constructor_arguments(cls))
    signature = inspect.signature(cls.__init__).parameters
    for name, description in entries:
        default = signature[name].default
        stated = re.search(r"default (.+)$", description)
        if default is inspect.Parameter.empty:
            assert not stated and "optional" not in description, name
        elif default is None:  # None stands for a default the class derives: the text says which
            assert stated or "optional" in description, name
        else:
            assert stated and ast.literal_eval(stated.group(1)) == default, name
    assert ">>>" in sections["Examples"]
