"""run.py's report: the tables printed per case and as a summary, and the Markdown report (results.md)."""

from __future__ import annotations

from common import markdown_table, table
from run_checks import GRAD_RTOL, LOSS_RTOL


def mib(value) -> str:
    """Bytes as MiB with one decimal; ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def case_label(case: dict) -> str:
    """``name (B=.., T=.., I=.., H=..)`` of a case (as recorded in results.json)."""
    return f"{case['name']} (B={case['batch']}, T={case['steps']}, I={case['inputs']}, H={case['hidden']})"


def case_table(result: dict) -> tuple:
    """``(rows, header)`` of one (case, cell): each implementation's times, ratios, GFLOP/s and memory."""
    header = ["impl", "train ms", "IQR", "min", "÷ scanrnn", "GFLOP/s", "infer ms", "IQR", "min", "÷ scanrnn",
              "GFLOP/s", "train MiB", "infer MiB"]
    lines = []
    for row in result["rows"]:
        tr, inf, mem = row["train"], row["infer"], row["memory"]
        mark = ""
        if mem.get("train_exact") is False or mem.get("infer_exact") is False:
            mark = " (≤)"
        lines.append([
            row["impl"], f"{tr['median_ms']:.3f}", f"{tr['iqr_ms']:.3f}", f"{tr['min_ms']:.3f}", f"{tr['ratio']:.2f}",
            f"{tr['gflops']:.2f}", f"{inf['median_ms']:.3f}", f"{inf['iqr_ms']:.3f}", f"{inf['min_ms']:.3f}",
            f"{inf['ratio']:.2f}", f"{inf['gflops']:.2f}", mib(mem.get("train")) + mark, mib(mem.get("infer")),
        ])
    return lines, header


def summary_table(results: list) -> tuple:
    """``(rows, header)`` of the summary: scanrnn's times and every other row's ratio to them, per (case, cell)."""
    peers = []
    for res in results:
        for row in res["rows"][1:]:
            if row["impl"] not in peers:
                peers.append(row["impl"])
    header = ["case", "cell", "scanrnn train ms", *[f"{p} ÷ scanrnn train" for p in peers],
              "scanrnn infer ms", *[f"{p} ÷ scanrnn infer" for p in peers], "checks"]
    rows = []
    for res in results:
        by = {row["impl"]: row for row in res["rows"]}
        base = res["rows"][0]

        def ratio(p, kind):
            return f"{by[p][kind]['ratio']:.2f}" if p in by else "-"

        checks = "ok" if all(c["ok"] for c in res["checks"].values()) else "FAILED: " + ", ".join(
            n for n, c in res["checks"].items() if not c["ok"])
        rows.append([res["case"]["name"], res["cell"], f"{base['train']['median_ms']:.3f}",
                     *[ratio(p, "train") for p in peers], f"{base['infer']['median_ms']:.3f}",
                     *[ratio(p, "infer") for p in peers], checks])
    return rows, header


def check_table(results: list) -> tuple:
    """``(rows, header)`` of the correctness checks: every implementation's loss and errors against scanrnn's."""
    header = ["case", "cell", "impl", "loss", "loss rel. err vs scanrnn", "grad rel. err (w_hh, head)", "ok"]
    rows = []
    for res in results:
        rows.append([res["case"]["name"], res["cell"], "scanrnn", f"{res['rows'][0]['loss']:.6g}", "-", "-", "-"])
        for name, c in res["checks"].items():
            rows.append([res["case"]["name"], res["cell"], name, f"{c['loss']:.6g}", f"{c['loss_rel_err']:.1e}",
                         f"{c['grad_rel_err']:.1e}", "yes" if c["ok"] else "NO"])
    return rows, header


MEMORY_NOTE = (
    "Memory (MiB): for scanrnn and flax, XLA's `memory_analysis()` of the compiled step, temp + argument + "
    "output bytes (exact for the executable). For torch on CPU, the peak RSS growth of a fresh process over "
    "one call (the peak RSS, reset before the call, minus the RSS before it; includes allocator slack; `(≤)` "
    "marks an upper bound, where the peak could not be reset and the earlier peak was not exceeded); on a GPU, `torch.cuda.max_memory_allocated` "
    "during the call minus the memory allocated before it. The two measures are not the same thing."
)


def render_markdown(report: dict) -> str:
    """The Markdown report of a run (results.md), from its record (results.json)."""
    m = report["machine"]
    lines = ["# Benchmarks", ""]
    if report["label"]:
        lines += [f"**{report['label']}**", ""]
    lines += [
        "scanrnn against `torch.nn` and `flax.linen` recurrent layers on the same float32 data and weights: "
        "a many-to-one model (the last hidden state of the last layer, a dense layer to 1 output, MSE against a "
        "target). *train* is the loss and its gradients w.r.t. all params (`jax.jit(jax.value_and_grad(loss))`; "
        "torch forward + `loss.backward()`), *infer* the forward pass alone. Times are per step, the median of "
        f"{report['settings']['repeats']} measurements taken round-robin over the implementations after "
        f"{report['settings']['warmup']} warm-up calls each, with their interquartile range (IQR) and minimum. "
        "`÷ scanrnn` is the time of the row divided by scanrnn's: above 1 means scanrnn is faster. GFLOP/s counts "
        "`24 B T H (I+H)` FLOPs for an LSTM training step (GRU 18, simple RNN 6), a third of that for inference, "
        "twice for two directions, summed over layers.",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores" + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
        + f"; JAX backend `{m['jax_backend']}`, torch device `{m['torch_device']}`",
        f"- Versions: python {m['python']}, jax {m['jax']}, jaxlib {m['jaxlib']}, torch {m['torch']}, "
        f"flax {m['flax']}, numpy {m['numpy']}; scanrnn {m['scanrnn_source']}",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}; wall time {report['wall_time_s']:.0f} s; load average (1, 5, 15 min) "
        f"{report['load_before']} before, {report['load_after']} after",
        f"- torch CPU threads: {report['settings']['torch_threads'][0]} for the `torch` rows"
        + "".join(f", {n} for `torch[threads={n}]`" for n in report["settings"]["torch_threads"][1:])
        + f"; seed {report['settings']['seed']}",
        "",
        "## Summary",
        "",
        markdown_table(*summary_table(report["results"])),
        "",
        "## Per case",
        "",
        MEMORY_NOTE,
        "",
    ]
    for res in report["results"]:
        lines += [f"### {case_label(res['case'])}, {res['cell']}, {res['case']['layers']} layer(s)"
                  + (", bidirectional" if res["case"]["bidirectional"] else ""), "",
                  f"Step FLOPs: train {res['flops_train'] / 1e9:.3f} G, infer {res['flops_infer'] / 1e9:.3f} G.", ""]
        lines += [markdown_table(*case_table(res)), ""]
        for note in res["skipped_variants"]:
            lines += [f"- skipped {note}", ""]
    lines += ["## Correctness checks", "",
              f"Losses must agree within {LOSS_RTOL:g} relative, gradients of the first layer's (forward) "
              f"recurrent kernel and of the head within {GRAD_RTOL:g} (max-norm relative); torch weights are "
              "copied to scanrnn with `scanrnn.interop.from_torch` and to flax by an exact mapping of gates and "
              "biases (`flax_params_from_torch` in `experiments/benchmarks/run_flax.py`).", "",
              markdown_table(*check_table(report["results"])), ""]
    return "\n".join(lines)


def print_case(res: dict) -> None:
    """One (case, cell)'s table, checks and skipped variants, on the terminal."""
    case = res["case"]
    print(f"\n{case_label(case)}, {res['cell']}, {case['layers']} layer(s)"
          + (", bidirectional" if case["bidirectional"] else "")
          + f"  [build, compile and check {res['build_and_check_s']:.0f} s, timing {res['timing_s']:.0f} s]")
    print(table(*case_table(res)))
    for impl, c in res["checks"].items():
        status = "ok" if c["ok"] else "FAILED"
        print(f"  check {impl}: loss rel. err {c['loss_rel_err']:.1e}, grad rel. err "
              f"{c['grad_rel_err']:.1e}: {status}")
    for note in res["skipped_variants"]:
        print(f"  skipped {note}")


def print_summary(results: list) -> None:
    """The summary table on the terminal."""
    print("\nSummary (÷ scanrnn: above 1 means scanrnn is faster)")
    print(table(*summary_table(results)))
