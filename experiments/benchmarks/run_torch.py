"""run.py's torch implementation: ``torch.nn.LSTM/GRU/RNN`` and ``nn.Linear``, its steps and its memory.

Every implementation's weights come from :func:`torch_model` (seeded), so the
torch module is the reference the others are built from.
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Callable

from run_cases import CASES, Case, Impl, make_data

RUN = Path(__file__).resolve().with_name("run.py")  # runs torch_cpu_memory_worker with --torch-memory-worker


def torch_model(case: Case, cell: str, seed: int, device: str):
    """The torch model (recurrent module and linear head), seeded, on ``device``."""
    import torch

    torch.manual_seed(seed)
    kinds = {"lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {}), "rnn": (torch.nn.RNN, {"nonlinearity": "tanh"})}
    cls, kw = kinds[cell]
    rnn = cls(case.inputs, case.hidden, num_layers=case.layers, batch_first=True,
              bidirectional=case.bidirectional, **kw)
    head = torch.nn.Linear(case.hidden * (2 if case.bidirectional else 1), 1)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            _, state = self.rnn(x)
            h_n = state[0] if isinstance(state, tuple) else state  # [L*D, B, H]
            last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if case.bidirectional else h_n[-1]
            return self.head(last)

    return Model().to(device)


def torch_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def torch_step_fns(model, x, y, device: str):
    """``(train, infer)`` closures for a torch model on tensors ``x``, ``y``."""
    import torch

    sync = torch_sync(device)
    mse = torch.nn.functional.mse_loss

    def train():
        model.zero_grad(set_to_none=True)
        loss = mse(model(x), y)
        loss.backward()
        sync()
        return loss

    def infer():
        with torch.inference_mode():
            out = model(x)
        sync()
        return out

    return train, infer


def torch_impls(case: Case, cell: str, seed: int, device: str, data, threads: list) -> list:
    """The torch implementation, one row per CPU thread count in ``threads`` (the first is "torch").

    Each call sets ``torch.set_num_threads`` to its row's count first (it is
    a process-wide setting). On a GPU the memory is measured here; on a CPU
    :func:`start_torch_cpu_memory` measures it for the first row.
    """
    import torch

    model = torch_model(case, cell, seed, device)
    x, y = (torch.from_numpy(a).to(device) for a in data)
    train, infer = torch_step_fns(model, x, y, device)
    torch.set_num_threads(threads[0])
    loss = float(train().detach().cpu())
    grads = {
        "w_hh": model.rnn.weight_hh_l0.grad.detach().cpu().numpy().copy(),
        "head": model.head.weight.grad.detach().cpu().numpy().copy(),
    }
    memory = torch_cuda_memory(train, infer) if device.startswith("cuda") else {}

    def with_threads(fn, n):
        def call():
            torch.set_num_threads(n)
            return fn()

        return call

    impls = []
    for k, n in enumerate(threads):
        name = "torch" if k == 0 else f"torch[threads={n}]"
        mem = memory if k == 0 else {"kind": memory.get("kind"), "train": None, "infer": None}
        impls.append(Impl(name, with_threads(train, n), with_threads(infer, n), loss, grads, mem))
    return impls


def torch_cuda_memory(train, infer) -> dict:
    import torch

    out = {"kind": "torch.cuda.max_memory_allocated growth over one call"}
    for name, fn in (("infer", infer), ("train", train)):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        out[name] = int(torch.cuda.max_memory_allocated() - before)
    return out


def _status_bytes(field: str) -> int:
    """A ``Vm*`` line of /proc/self/status (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS (Linux: ``clear_refs`` value 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def torch_cpu_memory_worker(spec: dict) -> dict:
    """In a fresh process: peak RSS growth of one inference call, then of one training step.

    Before each call the peak RSS is reset to the current RSS, so the growth is
    the call's own: ``VmHWM`` after minus ``VmRSS`` before. Where the peak
    cannot be reset, ``ru_maxrss`` after minus RSS before is an upper bound
    when the call did not raise the process's earlier peak (``*_exact`` false).
    """
    import torch

    torch.set_num_threads(spec["threads"])
    case = CASES[spec["case"]]
    model = torch_model(case, spec["cell"], spec["seed"], "cpu")
    x, y = (torch.from_numpy(a) for a in make_data(case, spec["seed"]))
    train, infer = torch_step_fns(model, x, y, "cpu")
    gc.collect()
    out = {"kind": "peak RSS growth of a fresh process over one call"}
    for name, fn in (("infer", infer), ("train", train)):
        reset = _reset_peak_rss()
        baseline = _status_bytes("VmRSS")
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        fn()
        peak = _status_bytes("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out[name] = max(peak - baseline, 0)
        out[f"{name}_exact"] = reset or peak > peak_before
    return out


def start_torch_cpu_memory(case: Case, cell: str, seed: int, threads: int) -> subprocess.Popen:
    """Start :func:`torch_cpu_memory_worker` in a fresh process; :func:`finish_torch_cpu_memory` reads it."""
    spec = json.dumps({"case": case.name, "cell": cell, "seed": seed, "threads": threads})
    cmd = [sys.executable, str(RUN), "--torch-memory-worker", spec]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_torch_cpu_memory(process: subprocess.Popen) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=600)
        return json.loads(stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, json.JSONDecodeError, IndexError) as error:
        process.kill()
        return {"kind": "peak RSS growth of a fresh process over one call", "train": None, "infer": None,
                "error": f"{type(error).__name__}: {error}"}
