"""Cross-references to a public object under any name it is exported by.

Each object is documented once, in the module that defines it
(``scanrnn.cells.lstm``). A reference to ``scanrnn.lstm``, or to
``lstm`` from a docstring of the package, or to a name re-exported by
another module (``scanrnn.interop.from_keras``), names the same object: it
is imported, and the reference goes to the page that documents it.
"""

from __future__ import annotations

import importlib


def _import_then_get(parts: list):
    """The longest importable module prefix of ``parts``, then attributes: how ``automodule`` reads a name."""
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except Exception:  # noqa: BLE001 -- not a module name: try a shorter one
            continue
        try:
            for attribute in parts[cut:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return None
        return obj
    return None


def _get_attributes(parts: list):
    """Attribute by attribute from the top package: what ``scanrnn.unroll`` means in a user's code."""
    try:
        obj = importlib.import_module(parts[0])
        for attribute in parts[1:]:
            obj = getattr(obj, attribute)
    except (ImportError, AttributeError):
        return None
    return obj


def _locate(name: str, prefer_modules: bool = False):
    """The object a dotted name denotes, or None.

    ``scanrnn.unroll`` is both a module and the function the package
    exports under that name: a reference by the ``mod`` role means the
    module, any other the function.
    """
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    ways = (_import_then_get, _get_attributes) if prefer_modules else (_get_attributes, _import_then_get)
    for way in ways:
        obj = way(parts)
        if obj is not None:
            return obj
    return None


def _documented(env) -> dict:
    """``id(object) -> documented name`` for every object of the Python domain (rebuilt when it grows)."""
    objects = env.get_domain("py").objects
    cache = getattr(env, "_canonical_cache", None)
    if cache is None or cache[0] != len(objects):
        table = {}
        for name, entry in objects.items():
            if getattr(entry, "aliased", False):
                continue
            obj = _locate(name, prefer_modules=entry.objtype == "module")
            if obj is not None and not isinstance(obj, (int, float, str, tuple)):
                table.setdefault(id(obj), name)
        cache = (len(objects), table)
        env._canonical_cache = cache
    return cache[1]


def resolve(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    context = [node.get("py:module"), "scanrnn"]
    candidates = [target] + [f"{m}.{target}" for m in context if m]
    table = _documented(env)
    domain = env.get_domain("py")
    for candidate in candidates:
        obj = _locate(candidate, prefer_modules=node.get("reftype") == "mod")
        if obj is None:
            continue
        name = table.get(id(obj))
        if name is None or name == candidate:
            continue
        found = domain.resolve_any_xref(env, node["refdoc"], app.builder, name, node, contnode)
        if found:
            return found[0][1]
    return None


def setup(app):
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
