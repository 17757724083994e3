"""Benchmark: our random-projection quantizer vs SpeechBrain's, time and memory.

BEST-RQ computes its targets with ``N`` frozen codebooks. Ours
(:class:`latent_rq_brain.targets.quantizer.RandomProjectionQuantizer`) does all of them
with one projection matmul and one ``(n, m, V)`` score matmul per chunk of
frames. SpeechBrain's (``speechbrain.nnet.quantisers.RandomProjectionQuantizer``)
holds ONE codebook per object, so the BEST-RQ setting means ``N`` objects, each
of which broadcasts a ``(B, V, T, D)`` difference tensor and takes its norm.

Both are given the SAME projections and codebooks: SpeechBrain's object ``i``
gets ``P = proj[:, i*d:(i+1)*d]`` (its ``x @ P`` convention matches our
``(input_dim, n*d)`` buffer) and ``CB = codebooks[i]``. Both normalise the
projected frame with ``F.normalize`` over the codeword dimension and both
codebooks are unit-norm, so the two definitions are the same::

    argmin_v ||c_v - z||  =  argmin_v (2 - 2 <c_v, z>)  =  argmax_v <c_v, z>

The codes can still differ on near-ties: fp32 rounding of a norm of
differences is not that of a dot product (and a (T, 320) @ (320, 16) slice is
not rounded like one column block of a (T, 320) @ (320, n*d) matmul), so when
two codewords are within ~1e-6 of each other the two implementations may pick
different ones. ``codes_equal`` reports the agreement as measured (expect
> 0.999, not exactly 1) and ``max_tie_gap`` the largest float64 score gap
``<c_ours, z> - <c_sb, z>`` over the disagreeing (frame, codebook) pairs, which
shows they are ties at fp32 precision, not a different definition.

Measurement
-----------
* CUDA: in this process; peak memory is ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats`` minus the memory allocated before the call.
* CPU: each (implementation, frame count) runs in a fresh ``multiprocessing``
  *spawn* child, which builds its quantizer and input and makes one full
  warm-up call (so code pages and the math libraries' one-time buffers, which
  count in the RSS, are resident: with a tiny warm-up they made the peak of a
  1000-frame call vary from 32 to 220 MiB between identical runs), then
  measures the peak resident set size of the next full call above the resident
  size before it. That child runs with ``MALLOC_MMAP_THRESHOLD_=64 KiB`` so that
  freed blocks return to the system and that call's blocks count anew; the
  times come from another child with the default allocator, as in training. The
  peak is read from ``VmHWM`` of ``/proc/self/status`` after
  resetting it with ``/proc/self/clear_refs`` (Linux): ``getrusage``'s
  ``ru_maxrss`` is NOT used when that works, because in a spawn child it starts
  at the *parent's* resident size at spawn time (Linux keeps the pre-exec
  high-water mark), so a large parent would hide the whole measurement. Where
  ``/proc`` cannot be used, it falls back to ``ru_maxrss`` differences
  (reported as ``mem_method``). The time is the median of ``repeats`` calls
  after the warm-up, measured in the child.
* SpeechBrain's point is skipped (``sb_skipped`` holds the reason) when its
  broadcast alone, ``B*V*T*D*4`` bytes, would exceed ``sb_cap_gib`` (default
  8 GiB on CPU, 80% of the free memory on CUDA).

Usage::

    python -m tools.bench_quantizer                     # 18 x 4096 x 16
    python -m tools.bench_quantizer --frames 1000 4000 --device cuda:0
    python -m tools.bench_quantizer --codebooks 2 --vocab 64 --dim 8 \\
        --rows-json rows.json                                      # every field

prints a markdown table and, as the last line, a JSON object with
``quantizer_speedup`` and ``quantizer_memory_ratio`` (at the largest frame count
where both implementations ran).

Authors
 * latent-rq developers 2026
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import statistics
import time

import numpy as np
import torch

MIB = 1024.0**2


def _input(frames, input_dim, seed):
    """Deterministic (frames, input_dim) fp32 frames, built on the CPU."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(frames))
    return torch.randn(frames, input_dim, generator=gen)


def _ours(n_codebooks, codebook_size, codebook_dim, input_dim, seed):
    from latent_rq_brain.targets.quantizer import RandomProjectionQuantizer

    return RandomProjectionQuantizer(
        {"mel": (input_dim, n_codebooks)}, codebook_size, codebook_dim, seed
    )


class SpeechBrainQuantizers:
    """The one adapter of SpeechBrain's quantizer: our quantizer's buffers in
    ``speechbrain.nnet.quantisers.RandomProjectionQuantizer`` objects, one per
    codebook, with our call ``(x (M, input_dim), source) -> (M, n)`` codes.

    Example
    -------
    >>> ours = _ours(2, 16, 4, 8, seed=1)
    >>> x = _input(5, 8, seed=1)
    >>> bool(torch.equal(SpeechBrainQuantizers(ours)(x, "mel"), ours(x, "mel")))
    True
    """

    def __init__(self, ours, device=None):
        from speechbrain.nnet.quantisers import RandomProjectionQuantizer as SBQ

        self.groups = {}
        d = ours.codebook_dim
        for name, (input_dim, n) in ours.sources.items():
            proj, cb = ours.projection(name), ours.codebooks(name)
            qs = []
            for i in range(n):
                q = SBQ(input_dim, d, ours.codebook_size)
                if tuple(q.P.shape) != (input_dim, d) or tuple(q.CB.shape) != tuple(
                    cb[i].shape
                ):
                    raise RuntimeError(
                        f"unexpected SpeechBrain buffer shapes P {tuple(q.P.shape)}, "
                        f"CB {tuple(q.CB.shape)}"
                    )
                q.P.copy_(proj[:, i * d : (i + 1) * d])
                q.CB.copy_(cb[i])
                qs.append(q.to(device or proj.device))
            self.groups[name] = qs

    @torch.no_grad()
    def __call__(self, x, name):
        xb = x.float()[None]  # (1, T, input_dim): the shape SpeechBrain expects
        return torch.stack([q(xb)[0] for q in self.groups[name]], 1)

    def checksum(self):
        """Not used for identity here; present for the Brain's interface."""
        return "speechbrain"


def sb_estimate_bytes(frames, codebook_size, codebook_dim, batch=1):
    """Bytes of the (B, V, T, D) fp32 difference one SpeechBrain object builds.

    Example
    -------
    >>> sb_estimate_bytes(16000, 4096, 16) / 1024**3
    3.90625
    """
    return int(batch) * int(codebook_size) * int(frames) * int(codebook_dim) * 4


def _callable(impl, spec, device):
    """Builds (outside any measurement) ``call(x (M, input_dim)) -> (M, n)`` codes
    and the benchmark's input frames ``x``."""
    ours = _ours(
        spec["n_codebooks"],
        spec["codebook_size"],
        spec["codebook_dim"],
        spec["input_dim"],
        spec["seed"],
    ).to(device)
    x = _input(spec["frames"], spec["input_dim"], spec["seed"]).to(device)
    if impl == "ours":

        @torch.no_grad()
        def call(x):
            return ours(x, "mel")

        return call, x
    sbq = SpeechBrainQuantizers(ours, device)
    del ours

    def call(x):
        return sbq(x, "mel")

    return call, x


def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def _reset_hwm():
    """Resets the peak RSS to the current RSS; returns the current RSS (KiB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmHWM")


def _measure_cpu(impl, spec, timed=True):
    """Runs in a spawn child: build, warm-up call, then either (``timed``) the
    median time of ``repeats`` calls or the peak RSS of one call."""
    import gc

    call, x = _callable(impl, spec, "cpu")
    # A full warm-up call first, so that code pages and the one-time buffers of
    # the math libraries (which count in the RSS, and whose size varied from run
    # to run when the warm-up was smaller) are resident: the peak below is the
    # data's. For the memory child the parent sets MALLOC_MMAP_THRESHOLD_, so
    # freed blocks go back to the system and every call's blocks count anew.
    call(x)
    if timed:
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            call(x)
            times.append(time.perf_counter() - t0)
        return {"seconds": statistics.median(times), "threads": torch.get_num_threads()}
    gc.collect()
    try:
        before = _reset_hwm()
        method = "VmHWM"
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss"
    codes = call(x)
    if method == "VmHWM":
        after = _status_kib("VmHWM")
    else:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = max(after - before, 0) / 1024.0
    return {
        "peak_mib": peak_mib,
        "codes": codes.to(torch.int32).numpy(),
        "mem_method": method,
        "threads": torch.get_num_threads(),
    }


def _measure_cuda(impl, spec, device):
    """In this process: warm call, then peak allocated memory and timing."""
    call, x = _callable(impl, spec, device)
    call(x)  # warm-up (kernels, cuBLAS workspace)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    codes = call(x)
    torch.cuda.synchronize(device)
    peak_mib = (torch.cuda.max_memory_allocated(device) - before) / MIB
    times = []
    for _ in range(spec["repeats"]):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        call(x)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    out = {
        "seconds": statistics.median(times),
        "peak_mib": peak_mib,
        "codes": codes.to(torch.int32).cpu().numpy(),
        "mem_method": "cuda_max_allocated",
        "threads": torch.get_num_threads(),
    }
    del call, x, codes
    torch.cuda.empty_cache()
    return out


def _measure(impl, spec, device):
    if torch.device(device).type == "cuda":
        return _measure_cuda(impl, spec, device)
    ctx = multiprocessing.get_context("spawn")
    # Times in a child with the default allocator (as in training)...
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        timed = pool.submit(_measure_cpu, impl, spec).result()
    # ... and memory in one whose freed blocks go back to the system: glibc's
    # default threshold adapts upwards after frees, after which freed blocks up
    # to 32 MiB stay resident and a later call's peak would not be seen.
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 16)
    try:
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            memory = pool.submit(_measure_cpu, impl, spec, False).result()
    finally:
        if saved is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    return dict(memory, seconds=timed["seconds"])


def _max_tie_gap(spec, ours_codes, sb_codes):
    """Largest float64 score gap <c_ours, z> - <c_sb, z> where the codes differ."""
    diff = np.nonzero(ours_codes != sb_codes)
    if len(diff[0]) == 0:
        return 0.0
    q = _ours(
        spec["n_codebooks"],
        spec["codebook_size"],
        spec["codebook_dim"],
        spec["input_dim"],
        spec["seed"],
    )
    frames, books = (torch.as_tensor(a) for a in diff)
    x = _input(spec["frames"], spec["input_dim"], spec["seed"])[frames].double()
    d = q.codebook_dim
    proj = q.projection("mel").double().view(spec["input_dim"], -1, d)[:, books]
    z = torch.nn.functional.normalize(torch.einsum("mi,imd->md", x, proj), dim=-1)
    cb = q.codebooks("mel").double()
    c_ours = cb[books, torch.as_tensor(ours_codes[diff]).long()]
    c_sb = cb[books, torch.as_tensor(sb_codes[diff]).long()]
    gap = ((c_ours - c_sb) * z).sum(-1).abs()
    return float(gap.max())


def compare_quantizers(
    frame_counts=(1000, 4000, 16000),
    n_codebooks=18,
    codebook_size=4096,
    codebook_dim=16,
    input_dim=320,
    device="cpu",
    repeats=3,
    seed=0,
    sb_cap_gib=None,
):
    """Times our quantizer and SpeechBrain's on the same frames and buffers.

    Arguments
    ---------
    frame_counts : sequence of int
        Numbers of frames ``M`` to quantize (one row each).
    n_codebooks : int
        Codebooks ``N`` (SpeechBrain: ``N`` objects).
    codebook_size : int
        Codewords per codebook ``V``.
    codebook_dim : int
        Codeword dimension ``D``.
    input_dim : int
        Frame dimension (320 = 4 stacked 80-dim Mel frames).
    device : str
        ``"cpu"`` (each point in a spawn child) or a CUDA device.
    repeats : int
        Timed calls per point, after one warm-up call; the median is reported.
    seed : int
        Seed of the quantizer buffers and input frames.
    sb_cap_gib : float or None
        Skip SpeechBrain's point when its ``(1, V, T, D)`` fp32 broadcast would
        exceed this; ``None``: 8 GiB on CPU, 80% of the free memory on CUDA.

    Returns
    -------
    list of dict
        One row per frame count, with keys ``frames``, ``ours_s``, ``sb_s``
        (median seconds per call), ``speedup`` (``sb_s / ours_s``),
        ``ours_peak_mib``, ``sb_peak_mib``, ``memory_ratio``
        (``sb_peak_mib / ours_peak_mib``), ``codes_equal`` (fraction of
        (frame, codebook) codes equal), ``max_tie_gap`` (see the module
        docstring), ``sb_estimate_gib``, ``sb_skipped`` (``None`` or the
        reason), ``mem_method`` and ``threads``. SpeechBrain's fields are
        ``None`` when its point was skipped or failed.
    """
    device = str(device)
    is_cuda = torch.device(device).type == "cuda"
    if sb_cap_gib is None:
        if is_cuda:
            sb_cap_gib = 0.8 * torch.cuda.mem_get_info(device)[0] / 1024**3
        else:
            sb_cap_gib = 8.0
    rows = []
    for frames in frame_counts:
        spec = {
            "frames": int(frames),
            "n_codebooks": int(n_codebooks),
            "codebook_size": int(codebook_size),
            "codebook_dim": int(codebook_dim),
            "input_dim": int(input_dim),
            "seed": int(seed),
            "repeats": max(1, int(repeats)),
        }
        est_gib = sb_estimate_bytes(frames, codebook_size, codebook_dim) / 1024**3
        ours = _measure("ours", spec, device)
        row = {
            "frames": int(frames),
            "ours_s": ours["seconds"],
            "sb_s": None,
            "speedup": None,
            "ours_peak_mib": ours["peak_mib"],
            "sb_peak_mib": None,
            "memory_ratio": None,
            "codes_equal": None,
            "max_tie_gap": None,
            "sb_estimate_gib": est_gib,
            "sb_skipped": None,
            "mem_method": ours["mem_method"],
            "threads": ours["threads"],
        }
        if est_gib > sb_cap_gib:
            row["sb_skipped"] = (
                f"estimated {est_gib:.2f} GiB broadcast > cap {sb_cap_gib:.2f} GiB"
            )
        else:
            try:
                sb = _measure("sb", spec, device)
            except (RuntimeError, MemoryError, OSError,
                    concurrent.futures.process.BrokenProcessPool) as e:
                row["sb_skipped"] = f"failed: {type(e).__name__}: {e}"[:200]
            else:
                row["sb_s"] = sb["seconds"]
                row["speedup"] = sb["seconds"] / ours["seconds"]
                row["sb_peak_mib"] = sb["peak_mib"]
                if ours["peak_mib"] > 0:
                    row["memory_ratio"] = sb["peak_mib"] / ours["peak_mib"]
                row["codes_equal"] = float((sb["codes"] == ours["codes"]).mean())
                row["max_tie_gap"] = _max_tie_gap(spec, ours["codes"], sb["codes"])
        rows.append(row)
    return rows


def _fmt(value, spec):
    return "—" if value is None else format(value, spec)


def format_table(rows):
    """Markdown table of :func:`compare_quantizers` rows.

    Example
    -------
    >>> row = {"frames": 1000, "ours_s": 0.01, "sb_s": 0.5, "speedup": 50.0,
    ...        "ours_peak_mib": 20.0, "sb_peak_mib": 250.0, "memory_ratio": 12.5,
    ...        "codes_equal": 0.9999, "sb_skipped": None}
    >>> print(format_table([row]))
    | frames | ours ms | SpeechBrain ms | speed-up | ours peak MiB | SpeechBrain peak MiB | memory ratio | codes equal |
    |---|---|---|---|---|---|---|---|
    | 1000 | 10.0 | 500.0 | 50.0x | 20.0 | 250.0 | 12.5x | 0.99990 |
    >>> print(format_table([dict(row, sb_s=None, speedup=None, sb_peak_mib=None,
    ...     memory_ratio=None, codes_equal=None, sb_skipped="too big")]).splitlines()[-1])
    | 1000 | 10.0 | skipped: too big | — | 20.0 | — | — | — |
    """
    lines = [
        "| frames | ours ms | SpeechBrain ms | speed-up | ours peak MiB "
        "| SpeechBrain peak MiB | memory ratio | codes equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sb_ms = (
            f"skipped: {r['sb_skipped']}"
            if r.get("sb_skipped")
            else _fmt(r["sb_s"] and r["sb_s"] * 1000, ".1f")
        )
        speedup = None if r.get("speedup") is None else f"{r['speedup']:.1f}x"
        ratio = None if r.get("memory_ratio") is None else f"{r['memory_ratio']:.1f}x"
        lines.append(
            f"| {r['frames']} | {r['ours_s'] * 1000:.1f} | {sb_ms} "
            f"| {speedup or '—'} | {_fmt(r['ours_peak_mib'], '.1f')} "
            f"| {_fmt(r.get('sb_peak_mib'), '.1f')} | {ratio or '—'} "
            f"| {_fmt(r.get('codes_equal'), '.5f')} |"
        )
    return "\n".join(lines)


def summary(rows):
    """Speed-up and memory ratio at the largest frame count where both ran.

    Example
    -------
    >>> summary([{"frames": 10, "speedup": 2.0, "memory_ratio": 3.0},
    ...          {"frames": 99, "speedup": None, "memory_ratio": None}])
    {'quantizer_speedup': 2.0, 'quantizer_memory_ratio': 3.0, 'frames': 10}
    """
    both = [r for r in rows if r.get("speedup") and r.get("memory_ratio")]
    best = max(both, key=lambda r: r["frames"]) if both else {}
    return {
        "quantizer_speedup": best.get("speedup"),
        "quantizer_memory_ratio": best.get("memory_ratio"),
        "frames": best.get("frames"),
    }


def parse_args(argv=None):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--device", default="cpu")
    p.add_argument("--codebooks", type=int, default=18)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--input-dim", type=int, default=320)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sb-cap-gib", type=float, default=None)
    p.add_argument("--rows-json", default=None, help="also write every row here")
    return p.parse_args(argv)


def main(argv=None):
    """Runs the comparison, prints the table, then the JSON summary line."""
    args = parse_args(argv)
    rows = compare_quantizers(
        frame_counts=args.frames,
        n_codebooks=args.codebooks,
        codebook_size=args.vocab,
        codebook_dim=args.dim,
        input_dim=args.input_dim,
        device=args.device,
        repeats=args.repeats,
        seed=args.seed,
        sb_cap_gib=args.sb_cap_gib,
    )
    print(
        f"Quantizer: ours vs SpeechBrain's ({args.codebooks} x {args.vocab} x "
        f"{args.dim}, input {args.input_dim}, device {args.device}, "
        f"{rows[0]['threads']} threads, memory via {rows[0]['mem_method']}, "
        f"median of {args.repeats} calls after a warm-up)\n"
    )
    print(format_table(rows))
    gaps = [r["max_tie_gap"] for r in rows if r.get("max_tie_gap") is not None]
    if gaps:
        print(f"\nlargest score gap where codes differ: {max(gaps):.2e}")
    if args.rows_json:
        with open(args.rows_json, "w") as f:
            json.dump(rows, f, indent=1)
    out = summary(rows)
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}
    print(json.dumps(out))
    return rows


if __name__ == "__main__":
    main()
