"""Every public module declares its public names in ``__all__``, and the documentation's reference lists them all.

The documentation site (``docs/``) generates one page per name of these
``__all__`` lists; this test keeps the lists honest without building it:
a function or class defined in a module is either underscored or in its
``__all__``, and every name listed exists.
"""

import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest

import scanrnn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def public_modules() -> list:
    """``scanrnn`` and every submodule whose name has no leading underscore (``__main__`` excluded)."""
    names = [info.name for info in pkgutil.walk_packages(scanrnn.__path__, "scanrnn.")]
    return ["scanrnn"] + sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


@pytest.mark.parametrize("name", public_modules())
def test_all_lists_every_public_definition(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    listed = list(module.__all__)
    assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
    missing = [n for n in listed if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names the module lacks: {missing}"
    defined = [
        n for n, v in vars(module).items()
        if not n.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v)) and v.__module__ == name
    ]
    unlisted = sorted(set(defined) - set(listed))
    assert not unlisted, f"{name} defines public functions or classes missing from __all__: {unlisted}"


def test_the_reference_names_every_public_module():
    """Each public module appears in one of the reference's group pages (docs/api/*.rst)."""
    pages = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "api").glob("*.rst")))
    listed = set(re.findall(r"^\s*(scanrnn(?:\.[a-z_0-9]+)*)\s*$", pages, flags=re.M))
    assert listed == set(public_modules()), (
        f"missing from docs/api: {sorted(set(public_modules()) - listed)}; "
        f"not a public module: {sorted(listed - set(public_modules()))}"
    )
