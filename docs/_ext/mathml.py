"""Equations as MathML, converted at build time by latex2mathml.

Browsers render MathML themselves, so the site loads no maths script and
works offline. A formula latex2mathml cannot convert is a build warning
(an error under ``-W``), naming the formula.
"""

from __future__ import annotations

import html
import re

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _prepare(latex: str, display: str) -> str:
    """The LaTeX in the forms latex2mathml reads: ``split`` for aligned lines, ``\\operatorname`` for ``\\arg``."""
    latex = latex.replace(r"\begin{aligned}", r"\begin{split}").replace(r"\end{aligned}", r"\end{split}")
    latex = re.sub(r"\\arg(?![a-zA-Z])", r"\\operatorname{arg}", latex)
    latex = re.sub(r"\\text\{([^{}]*)\}", lambda m: r"\text{" + m.group(1).replace(r"\_", "_") + "}", latex)
    if display == "block" and "\\\\" in latex and r"\begin" not in latex:
        latex = r"\begin{split}" + latex + r"\end{split}"
    return latex


def _mathml(self, node, latex: str, display: str) -> str:
    try:
        mathml = convert(_prepare(latex, display), display=display)
    except Exception as error:  # noqa: BLE001 -- latex2mathml raises many kinds
        logger.warning("cannot render the formula %r as MathML: %s: %s", latex, type(error).__name__, error,
                       location=node)
        return f"<code>{html.escape(latex)}</code>"
    unknown = re.findall(r"<m[io][^>]*>(\\[a-zA-Z]+)</m[io]>", mathml)
    if unknown:
        logger.warning("the formula %r uses commands latex2mathml does not know: %s", latex, ", ".join(unknown),
                       location=node)
    return mathml


def visit_math(self, node):
    self.body.append(f'<span class="math">{_mathml(self, node, node.astext(), "inline")}</span>')
    raise nodes.SkipNode


def visit_displaymath(self, node):
    # One block may hold several equations separated by blank lines (docutils' math directive).
    parts = [p for p in node.astext().split("\n\n") if p.strip()] if not node.get("nowrap") else [node.astext()]
    body = "".join(_mathml(self, node, part, "block") for part in parts)
    self.body.append(f'<div class="math">{body}</div>\n')
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
