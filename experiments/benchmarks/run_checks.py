"""run.py's correctness checks: every implementation's loss and gradients against scanrnn's, before timing."""

from __future__ import annotations

from common import rel_err
from run_cases import Impl

LOSS_RTOL = 1e-4  # relative error of the loss
GRAD_RTOL = 1e-3  # max-norm relative error of the compared gradients (first layer's w_hh, the head)


def check(reference: Impl, impl: Impl) -> dict:
    """``impl``'s loss and compared gradients against ``reference``'s, and whether both are within tolerance."""
    loss_err = abs(impl.loss - reference.loss) / max(abs(impl.loss), 1e-30)
    grad_err = max(rel_err(reference.grads[k], impl.grads[k]) for k in reference.grads)
    return {"loss": impl.loss, "loss_rel_err": loss_err, "grad_rel_err": grad_err,
            "ok": bool(loss_err <= LOSS_RTOL and grad_err <= GRAD_RTOL)}


def check_all(impls: list) -> dict:
    """``{name: check}`` of every implementation after the first (scanrnn with its defaults) against the first."""
    return {impl.name: check(impls[0], impl) for impl in impls[1:]}


def failures(results: list) -> list:
    """``case/cell/impl`` of every failed check in run.py's results."""
    return [f"{r['case']['name']}/{r['cell']}/{name}" for r in results for name, c in r["checks"].items() if not c["ok"]]
