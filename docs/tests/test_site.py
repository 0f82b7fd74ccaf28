"""Checks of the built site: every public name has a page, and every internal link resolves.

Run after the build (from the repository root)::

    python -m sphinx -W --keep-going -n -b html docs docs/_build/html
    python -m pytest -p no:xdist docs/tests

``SCANRNN_SITE`` names another build folder.
"""

from __future__ import annotations

import html.parser
import importlib
import inspect
import os
import pathlib
import pkgutil
import urllib.parse

import pytest
from sphinx.util.inventory import InventoryFile

import scanrnn

ROOT = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(os.environ.get("SCANRNN_SITE", ROOT / "docs" / "_build" / "html"))

if not (SITE / "objects.inv").exists():
    pytest.fail(f"no built site at {SITE}: build it first (see this file's docstring)", pytrace=False)


def public_modules() -> list:
    names = [info.name for info in pkgutil.walk_packages(scanrnn.__path__, "scanrnn.")]
    return sorted(n for n in names if not any(part.startswith("_") for part in n.split(".")))


def inventory() -> dict:
    """``name -> (role, page)`` of every object in the site's ``objects.inv``."""
    with open(SITE / "objects.inv", "rb") as file:
        loaded = InventoryFile.load(file, "", posixpath_join)
    entries = {}
    for role, objects in (loaded.data if hasattr(loaded, "data") else loaded).items():
        if not role.startswith("py:"):
            continue
        for name, item in objects.items():
            uri = item.uri if hasattr(item, "uri") else item[2]
            entries[name] = (role, uri.split("#")[0])
    return entries


def posixpath_join(*parts):
    return "/".join(p.strip("/") for p in parts if p)


def test_every_public_name_of_every_module_has_its_own_entry():
    entries = inventory()
    missing = []
    for name in public_modules():
        if f"{name}" not in entries:
            missing.append(name)
        for member in importlib.import_module(name).__all__:
            if f"{name}.{member}" not in entries:
                missing.append(f"{name}.{member}")
    assert not missing, f"public names with no entry in the site's index: {missing}"
    # Functions and classes have a page of their own.
    for name in public_modules():
        module = importlib.import_module(name)
        for member in module.__all__:
            obj = getattr(module, member)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                page = entries[f"{name}.{member}"][1]
                assert page.endswith(f"{name}.{member}.html"), f"{name}.{member} is documented on {page}"


def test_every_name_the_package_exports_leads_to_its_page():
    """``scanrnn.__all__``: each name is its own entry, or the same object documented in its module."""
    entries = inventory()
    by_object = {}
    for name in entries:
        module_name, _, attribute = name.rpartition(".")
        try:
            by_object.setdefault(id(getattr(importlib.import_module(module_name), attribute)), name)
        except (ImportError, AttributeError, ValueError):
            continue
    missing = []
    for member in scanrnn.__all__:
        obj = getattr(scanrnn, member)
        if inspect.ismodule(obj):
            found = obj.__name__ in entries
        else:
            found = f"scanrnn.{member}" in entries or id(obj) in by_object
        if not found:
            missing.append(member)
    assert not missing, f"names of scanrnn.__all__ documented nowhere on the site: {missing}"


class _Links(html.parser.HTMLParser):
    """The ids of a page, and its links and sources."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (tag == "link" and attrs.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(attrs[key])


def _parse(page: pathlib.Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _pages() -> list:
    """The site's HTML pages (not the theme's template fragments under ``_static``)."""
    return [page for page in SITE.rglob("*.html") if "_static" not in page.relative_to(SITE).parts]


def test_every_internal_link_resolves():
    pages = {page: _parse(page) for page in _pages()}
    assert len(pages) > 100, f"only {len(pages)} pages in {SITE}"
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = page if not parts.path else (page.parent / urllib.parse.unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(SITE)}: {link} (no such file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(SITE)}: {link} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links, first 20:\n" + "\n".join(broken[:20])


def test_no_page_loads_anything_from_another_host():
    """The site works offline: no script, style sheet, font or image from another host."""
    remote = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for marker in ('src="http', "src='http", 'rel="stylesheet" href="http'):
            if marker in text:
                remote.append(f"{page.relative_to(SITE)}: {marker}")
    assert not remote, remote[:20]
