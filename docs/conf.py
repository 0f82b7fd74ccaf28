"""Sphinx configuration of scanrnn's documentation site.

Build (from the repository root)::

    python -m pip install -e ".[docs]" && python -m sphinx -W --keep-going -n -b html docs docs/_build/html

Sphinx, because scanrnn's docstrings are reStructuredText (``:func:`` and
``:class:`` cross-references, ``.. math::`` blocks) in the Google style that
``sphinx.ext.napoleon`` reads; MyST-NB executes the tutorials at build time.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

project = "scanrnn"
author = "the scanrnn authors"
copyright = "2026, the scanrnn authors"  # noqa: A001 -- Sphinx's name

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "myst_nb",
    "mathml",  # docs/_ext/mathml.py: the equations as MathML, rendered by the browser, no script
    "canonical",  # docs/_ext/canonical.py: scanrnn.lstm and the like resolve to the page of the object
]

exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]

# -- API reference ---------------------------------------------------------
autosummary_generate = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs" / "api").glob("*.rst"))
autosummary_ignore_module_all = False  # a module's members are its __all__
autosummary_imported_members = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a NamedTuple's Attributes as a field list, not as objects of their own

# Warnings are errors (-W), and every cross-reference must resolve (-n), except
# those into libraries whose inventories a build without a network cannot fetch.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jnp|np|numpy|optax|orbax|torch|keras|flax|equinox|typing|collections|abc|os|pathlib|"
              r"concurrent|subprocess|enum|functools|dataclasses|ml_dtypes|matplotlib|datetime)(\..*)?"),
    ("py:.*", r"(Array|ArrayLike|Callable|Sequence|Mapping|Iterable|Iterator|Optional|Union|Any|NamedTuple|"
              r"PathLike|Path|Initializer|Devices|PyTree|DTypeLike|Shape)"),
    ("py:.*", r"(int|float|str|bool|bytes|tuple|list|dict|object|type|None|complex|slice|Ellipsis)"),
]

# -- Tutorials: executed at every build; a cell that raises fails the build -
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 180
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# -- HTML ------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "scanrnn"
html_math_renderer = "mathml"
html_static_path = ["_static"]
html_favicon = "_static/favicon.png"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}
html_context = {"default_mode": "light"}  # the theme's colour mode before a reader picks one
html_show_sourcelink = False


def _skip_tuple_fields(app, what, name, obj, skip, options):
    """Leave out a NamedTuple's field accessors: the class docstring's Attributes describe the fields."""
    doc = getattr(obj, "__doc__", None) or ""
    return True if what == "class" and doc.startswith("Alias for field number") else None


def _modules_first(import_by_name):
    """autosummary's importer, reading a name that is a module as that module.

    ``scanrnn.unroll`` and ``scanrnn.mamba`` are modules, and also the
    functions the package exports under those names; the reference's
    module pages mean the modules.
    """
    def wrapped(name, *args, **kwargs):
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- not a module: the usual way
            return import_by_name(name, *args, **kwargs)
        parent = sys.modules.get(name.rpartition(".")[0])
        return module, parent, name

    return wrapped


def _drop_type_docstrings(app, what, name, obj, options, lines):
    """A constant with no docstring of its own shows nothing, rather than its type's (``dict``'s) docstring."""
    if what in ("data", "attribute") and lines and inspect.getdoc(type(obj)) == "\n".join(lines).strip():
        lines.clear()


def setup(app):
    import sphinx.ext.autosummary as autosummary

    app.connect("autodoc-process-docstring", _drop_type_docstrings)
    autosummary._import_by_name = _modules_first(autosummary._import_by_name)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
