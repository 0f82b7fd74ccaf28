"""Where the LRU's training step spends its time on a CPU, against the LSTM of the same parameter count.

The model is ``linear_recurrences.py``'s: ``serial(recurrent(lru(N)), dense(H))``
with ``N = H`` complex states, the loss the sum of the squared outputs, the
training step ``jax.value_and_grad`` of it, at ``B = 16``, ``H = 128``,
``T = 16,384`` (``--batch``, ``--width``, ``--length``). Its peer is
``serial(recurrent(lstm(h)), dense(H))`` with ``h`` matched to the parameter
count. The ablations take the LRU apart, in plain JAX on the same params:

- ``lru, plain JAX``: the whole layer written out (``B x`` as one product,
  the recurrence by ``scanrnn.linear_scans.sequential_scan``, ``Re(C h) + D
  x`` as one product), checked against scanrnn's loss;
- ``lru, no recurrence``: the same with ``h = gamma B x`` (every product and
  elementwise map of the step, no scan);
- ``recurrence, complex``: only ``h = lambda h + b`` over ``b [B, T, N]``
  and ``sum |h|^2``, by ``sequential_scan``;
- ``recurrence, lax.scan of complex`` and ``recurrence, lax.scan of real
  pairs``: the same by JAX's own derivative of a scan, on complex numbers
  and on ``(Re h, Im h)`` pairs;
- ``products only``: the two products of the layer and the dense layer,
  with nothing between them.

For each it reports the median step time over interleaved repeats, and
XLA's own count of floating-point operations and bytes accessed from the
compiled step's ``cost_analysis()``, so that the time can be set against the
work.

Usage (from the repository root)::

    python experiments/benchmarks/lru_profile.py             # T = 16,384, B = 16, H = 128
    python experiments/benchmarks/lru_profile.py --quick     # T = 256, B = 2, H = 8

Writes ``results.json`` and ``results.md`` to ``--out`` (default
``experiments/results/benchmarks-lru-profile/``; with ``--quick``
``runs/benchmarks-lru-profile-quick/``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import scanrnn
from scanrnn.linear_scans import sequential_scan

from common import (
    command_line, default_out, describe, load_average, machine_info, markdown_table, table, time_round_robin,
    write_results,
)
from linear_recurrences import count_params, matched_hidden, peer_model


def lru_pieces(params, x):
    """``(bx, a, gamma)`` of an LRU layer: the input product ``[T, 2N]``, ``lambda [N]`` and ``gamma [N]``."""
    modulus = jnp.exp(-jnp.exp(params.nu_log))
    phase = jnp.exp(params.theta_log)
    lam = jax.lax.complex(modulus * jnp.cos(phase), modulus * jnp.sin(phase))
    return x @ params.b.T, lam, jnp.exp(params.gamma_log)


def read_out(params, h, x):
    """``Re(C h) + D x`` as one product of ``[Re h, -Im h]``."""
    return jnp.concatenate([jnp.real(h), -jnp.imag(h)], axis=-1) @ params.c.T + params.d[None, :] * x


def real_pairs_scan(lam, b):
    """``h = lambda h + b`` on ``(Re h, Im h)``, by lax.scan of real numbers."""
    ar, ai = jnp.real(lam), jnp.imag(lam)

    def step(h, bt):
        hr, hi = h
        br, bi = bt
        h = (ar * hr - ai * hi + br, ar * hi + ai * hr + bi)
        return h, h

    zero = jnp.zeros(lam.shape, ar.dtype)
    return jax.lax.scan(step, (zero, zero), (jnp.real(b), jnp.imag(b)))[1]


def build(args):
    """The cases: name -> (loss, params, inputs), every loss a scalar function of ``(params, inputs)``."""
    B, T, H = args.batch, args.length, args.width
    key = jax.random.key(args.seed)
    k_model, k_peer, k_x, k_b = jax.random.split(key, 4)
    x = jax.random.normal(k_x, (B, T, H), jnp.float32)
    dense = scanrnn.dense(H)
    model = scanrnn.serial(scanrnn.recurrent(scanrnn.lru(H)), dense)  # linear_recurrences.model_of
    params = model.init(k_model, H)
    target = count_params(model, H)
    hidden = matched_hidden("lstm", target, H)
    peer = peer_model("lstm", hidden, H)
    peer_params = peer.init(k_peer, H)

    def batch_loss(apply):
        return lambda p, x: jnp.sum(jnp.square(jax.vmap(apply, in_axes=(None, 0))(p, x)))

    lru_params = params[0]
    n = lru_params.nu_log.shape[0]
    b = jax.lax.complex(*jax.random.normal(k_b, (2, B, T, n), jnp.float32))

    def recurrence(scan):
        def loss(p, b):
            lam = lru_pieces(p, x[0, :1])[1]
            hs = jax.vmap(lambda b: scan(lam, b))(b)
            return sum(jnp.sum(jnp.square(jnp.abs(h))) for h in (hs if isinstance(hs, tuple) else (hs,)))
        return loss

    def plain_scan(lam, b):
        return jax.lax.scan(lambda h, bt: (lam * h + bt,) * 2, jnp.zeros_like(lam), b)[1]

    def ours(lam, b):
        return sequential_scan(jnp.zeros_like(lam), jnp.broadcast_to(lam, b.shape), b)

    def products_only(p, x):
        lru, dense_params = p
        y = jax.vmap(lambda x: dense.apply(dense_params, (x @ lru.b.T) @ lru.c.T))(x)
        return jnp.sum(jnp.square(y))

    cases = {
        "lru (scanrnn, sequential)": (batch_loss(model.apply), params, x),
        f"lstm({hidden}) (scanrnn)": (batch_loss(peer.apply), peer_params, x),
        "lru, plain JAX": (batch_loss(lambda p, x: _plain(p, x, True, dense)), params, x),
        "lru, no recurrence": (batch_loss(lambda p, x: _plain(p, x, False, dense)), params, x),
        "recurrence, complex (sequential_scan)": (recurrence(ours), lru_params, b),
        "recurrence, lax.scan of complex": (recurrence(plain_scan), lru_params, b),
        "recurrence, lax.scan of real pairs": (recurrence(real_pairs_scan), lru_params, b),
        "products only": (products_only, params, x),
    }
    counts = {"lru": target, f"lstm({hidden})": count_params(peer, H)}
    return cases, counts


def _plain(params, x, recurrence: bool, dense):
    """The model's output for one sequence, the LRU layer written out and scanrnn's dense layer after it."""
    lru, dense_params = params
    bx, lam, gamma = lru_pieces(lru, x)
    n = lam.shape[0]
    b = jax.lax.complex(gamma[None, :] * bx[:, :n], gamma[None, :] * bx[:, n:])
    h = sequential_scan(jnp.zeros((n,), b.dtype), jnp.broadcast_to(lam, b.shape), b) if recurrence else b
    return dense.apply(dense_params, read_out(lru, h, x))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T = 256, B = 2, H = 8")
    parser.add_argument("--length", type=int, default=None, help="T (default 16384; 256 with --quick)")
    parser.add_argument("--batch", type=int, default=None, help="B (default 16; 2 with --quick)")
    parser.add_argument("--width", type=int, default=None, help="H = N (default 128; 8 with --quick)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.length = args.length or (256 if args.quick else 16384)
    args.batch = args.batch or (2 if args.quick else 16)
    args.width = args.width or (8 if args.quick else 128)
    out = args.out or default_out("benchmarks-lru-profile", args.quick)
    started = time.perf_counter()
    info = machine_info()
    cases, counts = build(args)

    steps, rows, results = {}, [], {}
    for name, (loss, params, inputs) in cases.items():
        compiled = jax.jit(jax.value_and_grad(loss)).lower(params, inputs).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        value = float(jax.block_until_ready(compiled(params, inputs))[0])
        results[name] = {"loss": value, "flops": float(cost.get("flops", np.nan)),
                         "bytes_accessed": float(cost.get("bytes accessed", np.nan))}
        steps[name] = (lambda c=compiled, p=params, i=inputs: jax.block_until_ready(c(p, i)))
        print(f"{name}: compiled, loss {value:.6g}", flush=True)
    plain, ours = results["lru, plain JAX"]["loss"], results["lru (scanrnn, sequential)"]["loss"]
    check = abs(plain - ours) / max(abs(ours), 1e-30)
    print(f"check: plain-JAX LRU loss against scanrnn's, relative difference {check:.1e}", flush=True)
    if not check <= 1e-4:
        raise SystemExit(f"the plain-JAX LRU differs from scanrnn's by {check:.1e} relative")
    times = time_round_robin(steps, repeats=args.repeats, warmup=0, min_time=0.05)
    lstm = next(name for name in results if name.startswith("lstm"))
    for name, r in results.items():
        r.update(times[name])
        rows.append([name, f"{r['median_ms']:,.0f}", f"{r['median_ms'] / times[lstm]['median_ms']:.2f}",
                     f"{r['flops'] / 1e9:,.1f}", f"{r['bytes_accessed'] / 1e9:,.1f}"])
    header = ["step", "ms (median)", "/ LSTM time", "GFLOP (XLA)", "GB accessed (XLA)"]
    print(table(rows, header, "lrrrr"))
    data = {"date": datetime.date.today().isoformat(), "command": command_line(__file__, argv), "machine": info,
            "load_average_at_end": load_average(), "shapes": {"B": args.batch, "T": args.length, "H": args.width,
                                                               "N": args.width},
            "params": counts, "check_rel_diff": check, "cases": results,
            "seconds": time.perf_counter() - started}
    md = (f"# Where the LRU's training step spends its time\n\n`{data['command']}` on {describe(info)}, "
          f"{data['date']}; B = {args.batch}, T = {args.length:,}, H = N = {args.width}; parameters: "
          + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f"; medians of {args.repeats}.\n\n"
          + markdown_table(rows, header, "lrrrr"))
    paths = write_results(out, data, md)
    print("wrote " + " and ".join(str(p) for p in paths) + f" ({data['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
