"""``logprob_memory``: peak memory of the chunked log-prob forward+backward
(``token_logprobs``) against the naive full-logits one (``naive_token_logprobs``).

Hidden states ``(1, T, H)`` that require grad, a frozen ``nn.Linear(H, V, bias=False)`` head
(the tied LM head of a LoRA policy is frozen), every position after the first a response
position, loss = the sum of the log-probs, ``.backward()``. Each variant runs in a fresh
subprocess (``python -m benchmarks.memory``): the peak is ``ru_maxrss`` after the first
repeat minus the RSS just before its forward; the time is the median of the repeats after it.
Values and gradients of the two are checked in this process at a smaller T. Unit: MiB (lower
is better). The bound share is of the time: the head's products, 2·H·V per position forward
and 2·H·V for the input gradient (the least work; our recompute of each chunk's logits in the
backward is not credited), at the GEMM rate.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    Bench,
    CaseResult,
    bound_share,
    close,
    median,
)
from benchmarks.flops import (
    Gemm,
    total_flops,
)

FULL = {"T": 8192, "V": 49152, "H": 576}
QUICK = {"T": 512, "V": 2048, "H": 64}
CHECK_T = 256
TOLERANCE = 1e-5
VARIANTS = ("chunked", "naive")


def _rss_kib() -> int:
    """The process's resident memory now, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


Inputs = tuple[torch.Tensor, torch.nn.Linear, torch.Tensor, torch.Tensor]


def _inputs(T: int, V: int, H: int) -> Inputs:
    """Seeded hidden states (requiring grad), a frozen head, token ids and the response mask."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, T, H, generator=gen).requires_grad_(True)
    head = torch.nn.Linear(H, V, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(V, H, generator=gen) * H**-0.5)
    head.weight.requires_grad_(False)
    ids = torch.randint(V, (1, T), generator=gen)
    mask = torch.ones(1, T)
    mask[:, 0] = 0
    return hidden, head, ids, mask


def logprobs_module(*, light: bool = False) -> Any:
    """The library's ``backends.causal_lm.logprobs`` module.

    With ``light``, it is loaded from its file when that works: importing it through its
    package runs ``backends.causal_lm``'s ``__init__``, which imports transformers (seconds in
    every subprocess), while the module itself needs only torch. Otherwise, or when the file
    cannot be loaded alone, it is imported as usual.
    """
    name = "constrained_align.backends.causal_lm.logprobs"
    if light and name not in sys.modules:
        root = importlib.util.find_spec("constrained_align")
        if root is not None and root.origin is not None:
            path = Path(root.origin).parent / "backends" / "causal_lm" / "logprobs.py"
            spec = importlib.util.spec_from_file_location("_bench_logprobs", path)
            if spec is not None and spec.loader is not None:
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                    return module
                except ImportError:
                    pass
    return importlib.import_module(name)


def _forward_backward(variant: str, inputs: Inputs, chunk: int, module: Any) -> torch.Tensor:
    """One forward+backward of ``variant``; returns the (detached) log-probs."""
    hidden, head, ids, mask = inputs
    if variant == "chunked":
        out = module.token_logprobs(hidden, ids, mask, head, chunk_size=chunk)
    else:
        out = module.naive_token_logprobs(head(hidden), ids, mask)
    out.sum().backward()
    return out.detach()


def worker(variant: str, T: int, V: int, H: int, chunk: int, repeats: int) -> dict[str, Any]:
    """The subprocess's measurement: the first repeat's peak and the later repeats' times."""
    module = logprobs_module(light=True)
    inputs = _inputs(T, V, H)
    _forward_backward(variant, _inputs(8, V, H), chunk, module)  # kernels, not the peak
    gc.collect()
    before, max_before = _rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = []
    for _ in range(repeats + 1):
        inputs[0].grad = None
        started = time.perf_counter()
        _forward_backward(variant, inputs, chunk, module)
        seconds.append(time.perf_counter() - started)
        if len(seconds) == 1:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024,
        "maxrss_before_mib": max_before / 1024,
        "seconds": median(seconds[1:]),
        "first_seconds": seconds[0],
    }


def _measure(bench: Bench, variant: str, dims: dict[str, int], chunk: int) -> dict[str, Any]:
    """``worker`` in a fresh Python process."""
    root = Path(__file__).resolve().parents[1]
    args = [f"--{k}={v}" for k, v in dims.items()]
    args += [f"--variant={variant}", f"--chunk={chunk}", f"--repeats={bench.settings.repeats}"]
    args += [f"--threads={bench.settings.threads}"]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    command = [sys.executable, "-m", "benchmarks.memory", *args]
    # Linux keeps a process's ru_maxrss across exec, and a process spawned from this one starts
    # with this (large) process's RSS as its high-water mark. A shell that forks the worker
    # (the command is not its last, so it cannot exec it) gives it a fresh, small one.
    shell = shutil.which("sh")
    if shell:
        command = [shell, "-c", '"$@"; exit $?', "sh", *command]
    done = subprocess.run(
        command,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{variant} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(V: int, H: int, chunk: int) -> tuple[float, float]:
    """Largest value and gradient differences of the two variants at T = :data:`CHECK_T`."""
    out, module = {}, logprobs_module()
    for variant in VARIANTS:
        inputs = _inputs(CHECK_T, V, H)
        values = _forward_backward(variant, inputs, chunk, module)
        out[variant] = (values, inputs[0].grad)
    (v1, g1), (v2, g2) = out["chunked"], out["naive"]
    return close(v1, v2), close(g1, g2)


def logprob_memory(bench: Bench) -> CaseResult:
    """Peak MiB of the chunked log-prob forward+backward against the naive one."""
    from constrained_align.backends.causal_lm import LMSettings

    dims = QUICK if bench.settings.quick else FULL
    T, V, H = dims["T"], dims["V"], dims["H"]
    chunk = LMSettings().chunk_size  # the library's default
    if bench.settings.quick:
        chunk = min(chunk, T // 4)  # so that the tiny case still has several chunks
    ours, naive = (_measure(bench, v, dims, chunk) for v in VARIANTS)
    value_diff, grad_diff = _check(V, H, min(chunk, CHECK_T // 4))
    gemms = [Gemm(T - 1, H, V), Gemm(T - 1, V, H)]
    bound = total_flops(gemms) / bench.meter.weighted_rate(gemms)
    return CaseResult(
        name="logprob_memory",
        ours=ours["peak_mib"],
        peer=naive["peak_mib"],
        unit="MiB",
        higher_is_better=False,
        share_ours=bound_share(ours["seconds"], bound, False),
        share_peer=bound_share(naive["seconds"], bound, False),
        details={
            **dims,
            "chunk_size": chunk,
            "seconds_ours": ours["seconds"],
            "seconds_naive": naive["seconds"],
            "time_ratio_ours_over_naive": ours["seconds"] / naive["seconds"],
            "bound_seconds": bound,
            "bound_share_is_of": "the forward+backward time",
            "rss_before_mib_ours": ours["rss_before_mib"],
            "rss_before_mib_naive": naive["rss_before_mib"],
            "maxrss_before_mib_ours": ours["maxrss_before_mib"],
            "maxrss_before_mib_naive": naive["maxrss_before_mib"],
            "check_T": CHECK_T,
            "value_max_abs_diff": value_diff,
            "grad_max_abs_diff": grad_diff,
        },
        checks={
            "values_within_1e-5": value_diff <= TOLERANCE,
            "gradients_within_1e-5": grad_diff <= TOLERANCE,
        },
    )


def main() -> None:
    """Subprocess entry: measure one variant and print the result as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    for name in ("T", "V", "H", "chunk", "repeats", "threads"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = worker(args.variant, args.T, args.V, args.H, args.chunk, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
