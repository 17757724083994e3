"""Benchmark: BEST-RQ vs Latent-RQ step time, each speed-up's share, quantizer.

In ONE run, on the same model, batch and data, times full training steps
(forward, backward, optimizer) for:

* stage 0 (BEST-RQ) and stage 1 (Latent-RQ) with every fast path on;
* each fast path switched off in turn (``truncate_target_encoder``,
  masked-only forward (off = :func:`plain_forward`), ``target_cache``,
  ``fast_frontend``, ``fast_ffn``, ``fast_attention``), so each one's share
  is visible;
* the compute floor of the online ratio: counted FLOPs of a stage-1 online
  step over those of a stage-0 step (``FlopCounterMode``);
* stage 0 done SpeechBrain's way (its front-end, feed-forward and attention
  modules as they are, one ``speechbrain.nnet.quantisers.
  RandomProjectionQuantizer`` per codebook, heads on all frames);

then times each latent-target variant beyond the paper (anchored, PCA, k-means,
EMA target encoder: ``recipes.reproduce.reproduce.VARIANTS``) online against
BEST-RQ, with the time its transition takes (snapshot and fitting), and
compares our quantizer with SpeechBrain's on 18 x 4096 x 16
(:mod:`tools.bench_quantizer`), and times BEST-RQ with each layer regulariser
(SIGReg, whitening: ``recipes.reproduce.reproduce.REGULARIZERS``) against
plain BEST-RQ. With ``--architectures CONFIG ...`` it also
times stage-0 steps of other configs, each with the Brain its YAML names (e.g.
``hparams/small/latent_rq_zipformer.yaml``, the Zipformer-like encoder at the
small Conformer's parameter count, or ``hparams/small/autoencoder_reproduce.yaml``,
the autoencoder on the reproduction's encoder) round-robin with the ``--config``
one, with their counted FLOPs (``--architectures-only``: that table alone).
Prints markdown tables and, as the last line, a JSON object.

Usage::

    python -m tools.bench --quick                  # CPU, a few minutes
    python -m tools.bench --only-regularizers --config hparams/small/reproduce.yaml
    python -m tools.bench --out results/performance.md
    python -m tools.bench --config hparams/best_rq.yaml --device cuda:0 \\
        --batch-seconds 600                                  # paper model on a GPU
    python -m tools.bench --architectures-only \\
        --architectures hparams/small/latent_rq_zipformer.yaml  # encoders compared

On CUDA it also reports audio seconds per second, peak memory and model-FLOPs
utilisation (MFU), with FLOPs counted as ``6 * P_train * F + 2 * P_target * F``
for the matmul parameters ``P`` (encoder Conformer + front-end projection; heads
counted on masked frames only) over ``F`` encoder frames, plus attention
``12 * L * d * sum(T_b^2)`` (training) and ``4 * L_t * d * sum(T_b^2)``
(target encoder), divided by ``--peak-tflops`` (default 989, H100 SXM bf16 dense).

Authors
 * latent-rq developers 2026
"""

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

import speechbrain as sb
from latent_rq_brain.model.features import valid_frames
from latent_rq_brain.model.sb_patches import set_fast_kernels
from latent_rq_brain.targets.target_encoder import unwrap
from latent_rq_brain.training import synthetic
from tools.bench_quantizer import SpeechBrainQuantizers


SB_WAY = "BEST-RQ, SpeechBrain's way (its quantizer and modules, heads on all frames)"


def plain_forward(brain, batch, stage):
    """The reference of :meth:`LatentRQBrain.compute_forward`: targets of every
    valid frame and heads on every frame, then the masked ones kept (what the
    fast path computes on the masked frames only; the tests prove them equal).
    ``stage`` is SpeechBrain's split, the name its evaluate_batch passes it by."""
    batch = batch.to(brain.device)
    x = brain.masked_inputs(batch, stage)
    feats, enc_lens, mask = x["feats"], x["enc_lens"], x["mask"]
    valid = valid_frames(enc_lens, mask.shape[1])
    full = torch.zeros(
        *valid.shape, brain.hparams.n_codebooks, dtype=torch.long, device=brain.device
    )
    full[valid] = brain.compute_targets(feats, enc_lens, valid)
    out, hidden = brain.modules.encoder(brain.modules.mask_embedding(feats, mask), enc_lens)
    logits = brain.modules.heads(out.reshape(-1, out.shape[-1]))
    logits = logits.view(*out.shape[:2], *logits.shape[1:])[mask]
    return {"logits": logits, "targets": full[mask], "mask": mask, "enc_lens": enc_lens,
            "audio_s": x["audio_s"], "hidden_states": hidden}


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(brain, batch, warmup, iters):
    """Median seconds of a full training step (``Brain.fit_batch``)."""
    times = []
    for i in range(warmup + iters):
        _sync(brain.device)
        t0 = time.perf_counter()
        brain.step += 1
        brain.fit_batch(batch)
        _sync(brain.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_params(module):
    """Parameters of a module's 2-D weights (the matmul FLOP carriers)."""
    return sum(p.numel() for n, p in module.named_parameters() if p.dim() >= 2)


def flops_per_step(brain, enc_lens, n_masked, stage):
    """Model FLOPs of one training step, with the formula of the module docstring."""
    enc = unwrap(brain.modules.encoder)
    d, L = enc.d_model, enc.num_layers
    frames = float(enc_lens.sum())
    sq = float((enc_lens.double() ** 2).sum())
    heads = matmul_params(unwrap(brain.modules.heads))
    flops = 6 * matmul_params(enc) * frames + 6 * heads * n_masked + 12 * L * d * sq
    if stage > 0 and brain.targets.target_encoder.active:
        te = brain.targets.target_encoder.module
        flops += 2 * matmul_params(te) * frames + 4 * te.num_layers * d * sq
    return flops


def counted_flops(brain, batch):
    """FLOPs of one training forward + backward, counted op by op.

    Uses :class:`torch.utils.flop_counter.FlopCounterMode` (matmuls,
    convolutions, attention), so the target encoder's forward is included
    whenever the current stage runs it. Same seeded masks for every call.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with FlopCounterMode(display=False) as counter:
            out = brain.compute_forward(batch, sb.Stage.TRAIN)
            loss = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
            loss.backward()
    for p in brain.modules.parameters():
        p.grad = None
    return counter.get_total_flops()


def paired_ratio(times, label, base):
    """Median over rounds of ``times[label][r] / times[base][r]``.

    Each round times every variant once, back to back, so the ratio of one
    round cancels the load drift that both variants of that round saw.

    Example
    -------
    >>> paired_ratio({"a": [2.0, 4.0, 3.0], "b": [1.0, 2.0, 2.0]}, "a", "b")
    2.0
    """
    return statistics.median(t / b for t, b in zip(times[label], times[base]))


def _bench_brain(args):
    """A Brain on one synthetic batch, checkpoints off, fit set up.

    Returns (brain, batch, utterances, audio seconds).
    """
    import train

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="latent_rq_bench_")
    n = max(1, int(round(args.batch_seconds / args.utt_seconds)))
    corpus = synthetic.write_corpus(tmp, [args.utt_seconds] * n, "train")
    argv = [
        args.config,
        f"--output_folder={tmp}/out",
        "--data_prep=null",
        f"--train_csv={corpus}",
        f"--valid_csv={corpus}",
        "--max_batch_len=null",
        f"--train_dataloader_opts={{batch_size: {n}, num_workers: 0}}",
        f"--device={args.device}",
        "--stage_transitions=[]",
        "--initial_stage=0",
        "--init_from=null",
        "--log_interval=1000000",
        "--noprogressbar",
        *args.overrides,
    ]
    brain, train_data, _, train_opts, _ = train.build(argv)
    loader = brain.make_dataloader(train_data, stage=sb.Stage.TRAIN, ckpt_prefix=None, **train_opts)
    brain.checkpointer = None  # no checkpoint writes inside the timings
    brain.on_fit_start()
    brain.train_dataset = train_data
    batch = next(iter(loader)).to(brain.device)
    audio_s = float(sum(args.utt_seconds for _ in range(n)))
    return brain, batch, n, audio_s


def _variants(brain, cache):
    """(label, stage, apply) of every timed variant; ``apply()`` switches the
    Brain to it (stage, forward, quantizer, target encoder, cache, kernels)."""
    ours, sb_quantizer = brain.quantizer, SpeechBrainQuantizers(brain.quantizer)
    truncated = brain.target_encoder
    full = type(truncated)(truncated.target_layers, truncated.norm, truncate=False)
    full.snapshot(brain.modules.encoder, brain.optimizer_step)

    def setup(stage, plain=False, quantizer=ours, target=truncated, cached=False,
              frontend=True, ffn=True, attention=True):
        def apply():
            brain.schedule.stage = stage
            if plain:
                brain.compute_forward = functools.partial(plain_forward, brain)
            else:
                brain.__dict__.pop("compute_forward", None)
            brain.targets.quantizer = quantizer
            brain.targets.target_encoder = target
            brain.target_cache = cache if cached else None
            for module in (unwrap(brain.modules.encoder), truncated.module, full.module):
                set_fast_kernels(module, frontend=frontend, ffn=ffn, attention=attention)
        return apply

    variants = [
        ("BEST-RQ, all fast paths", 0, setup(0)),
        ("BEST-RQ, plain forward (heads and quantizer on all frames)", 0,
         setup(0, plain=True)),
        (SB_WAY, 0,
         setup(0, plain=True, quantizer=sb_quantizer, frontend=False, ffn=False,
               attention=False)),
        ("BEST-RQ, fast_frontend off (SpeechBrain's Conv2d layout)", 0,
         setup(0, frontend=False)),
        ("BEST-RQ, fast_ffn off (SpeechBrain's feed-forward permutation)", 0,
         setup(0, ffn=False)),
        ("BEST-RQ, fast_attention off (SpeechBrain's unfused attention)", 0,
         setup(0, attention=False)),
        ("Latent-RQ online, all fast paths", 1, setup(1)),
        ("Latent-RQ online, plain forward", 1, setup(1, plain=True)),
        ("Latent-RQ online, truncate_target_encoder off", 1, setup(1, target=full)),
        ("Latent-RQ online, fast_frontend, fast_ffn and fast_attention off", 1,
         setup(1, frontend=False, ffn=False, attention=False)),
    ]
    if cache is not None:
        variants.append(("Latent-RQ, target cache (all fast paths)", 1, setup(1, cached=True)))
    return variants, setup


def _time_round_robin(brain, batch, variants, warmup, iters):
    """Step times (and CUDA peak GiB) of every variant, one step each per round."""
    times = {label: [] for label, _, _ in variants}
    peaks = {}
    for r in range(warmup + iters):
        for label, stage, apply in variants:
            apply()
            if str(brain.device).startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t = time_steps(brain, batch, 0, 1)
            if r >= warmup:
                times[label].append(t)
                if str(brain.device).startswith("cuda"):
                    peak = torch.cuda.max_memory_allocated() / 2**30
                    peaks[label] = max(peaks.get(label, 0.0), peak)
    return times, peaks


def _override_brains(args, settings_by_name, extra=None, prepare=None):
    """``{name: (brain, batch, prepare_s)}``: one Brain per named settings dict
    (same model, seed and batch as ``args``; ``extra`` added to each dict), with
    ``prepare(brain)`` run and timed once after it is built (0.0 without it)."""
    from recipes.reproduce.plan import _override_args

    brains = {}
    for name, settings in settings_by_name.items():
        v = argparse.Namespace(**vars(args))
        v.overrides = list(args.overrides) + _override_args({**settings, **(extra or {})})
        brain, batch, _, _ = _bench_brain(v)
        start = time.perf_counter()
        if prepare is not None:
            prepare(brain)
        brains[name] = (brain, batch, time.perf_counter() - start if prepare else 0.0)
    return brains


def _time_against(base, brains, warmup, iters):
    """Step times ``{name: [s, ...]}`` of ``base`` (a ``(brain, batch)`` pair,
    keyed "BEST-RQ") and of every Brain of :func:`_override_brains`, one step
    each per round, back to back."""
    runs = {"BEST-RQ": base, **{name: (b, batch) for name, (b, batch, _) in brains.items()}}
    times = {name: [] for name in runs}
    for r in range(warmup + iters):
        for name, (brain, batch) in runs.items():
            t = time_steps(brain, batch, 0, 1)
            if r >= warmup:
                times[name].append(t)
    return times


def time_target_variants(args, base, batch, warmup, iters):
    """Rows ``{variant, transition_s, step_s, ratio}`` of every latent-target
    variant: its own Brain (same model, seed and batch; online targets), its
    transition timed (snapshot and fitting), then its stage-1 steps timed
    round-robin with ``base`` (a Brain switched to BEST-RQ with every fast path)."""
    from recipes.reproduce.plan import VARIANTS

    brains = _override_brains(args, VARIANTS, extra={"target_cache": False},
                              prepare=lambda brain: brain.transition(1))
    times = _time_against((base, batch), brains, warmup, iters)
    return [{"variant": name, "transition_s": brains[name][2],
             "step_s": statistics.median(times[name]),
             "ratio": paired_ratio(times, name, "BEST-RQ")} for name in brains]


def time_regularizers(args, warmup, iters):
    """Rows ``{variant, step_s, ratio}``: BEST-RQ with each layer regulariser of
    ``recipes.reproduce.reproduce.REGULARIZERS`` (its own Brain: same model,
    seed and batch), timed round-robin with plain BEST-RQ (stage 0)."""
    from recipes.reproduce.plan import REGULARIZERS

    base = _bench_brain(args)[:2]
    brains = _override_brains(args, REGULARIZERS)
    times = _time_against(base, brains, warmup, iters)
    reg = base[0].hparams
    note = (f"{reg.layer_regularizer_frames} frames, {reg.layer_regularizer_slices} slices, "
            f"layers {list(reg.layer_regularizer_layers)}")
    return [{"variant": name, "step_s": statistics.median(times[name]),
             "ratio": paired_ratio(times, name, "BEST-RQ"), "setting": note}
            for name in brains], statistics.median(times["BEST-RQ"])


def _regularizers_markdown(rows, base_s):
    """The table of :func:`time_regularizers`."""
    md = ["## Layer regularisers (stage 0, vs BEST-RQ)", "",
          f"BEST-RQ: {base_s * 1000:.1f} ms / step.", "",
          "| regulariser | ms / step | vs BEST-RQ |", "|---|---|---|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r['step_s'] * 1000:.1f} | {r['ratio']:.3f} |")
    md += ["", f"Each regulariser scores {rows[0]['setting']} per step (the YAML's "
           "layer_regularizer_* settings); its own Brain of the same model, seed and batch, "
           "timed round-robin with BEST-RQ ('vs BEST-RQ': median of the per-round ratios)."]
    return "\n".join(md)


def ratio_spread(times, label, base):
    """(first, third) quartile over rounds of ``times[label][r] / times[base][r]``:
    the noise of :func:`paired_ratio` (None with fewer than 2 rounds).

    Example
    -------
    >>> ratio_spread({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0] * 4}, "a", "b")
    (1.75, 3.25)
    """
    ratios = [t / b for t, b in zip(times[label], times[base])]
    if len(ratios) < 2:
        return None
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return q[0], q[2]


def counted_flops_unfused(brain, batch):
    """:func:`counted_flops` with attention on its math (matmul) kernels, so
    that every encoder's attention is counted alike."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return counted_flops(brain, batch)


def time_architectures(args, base, batch, warmup, iters):
    """Rows ``{config, brain, encoder, layers, params, gflop, step_s, ratio, spread}``
    of stage-0 training steps: ``base`` (the ``--config`` Brain, at stage 0)
    and one Brain per ``--architectures`` config (same overrides, seed and
    synthetic batch), timed round-robin, one step each per round."""
    brains = {args.config: (base, batch)}
    for config in args.architectures:
        v = argparse.Namespace(**vars(args))
        v.config = config
        brains[config] = _bench_brain(v)[:2]
    for brain, _ in brains.values():
        brain.schedule.stage = 0
    times = {config: [] for config in brains}
    for r in range(warmup + iters):
        for config, (brain, b) in brains.items():
            t = time_steps(brain, b, 0, 1)
            if r >= warmup:
                times[config].append(t)
    rows = []
    for config, (brain, b) in brains.items():
        enc = unwrap(brain.modules.encoder)
        rows.append({
            "config": config, "brain": type(brain).__name__, "encoder": type(enc).__name__,
            "layers": enc.num_layers,
            "params": sum(p.numel() for p in enc.parameters()),
            "gflop": counted_flops_unfused(brain, b) / 1e9,
            "step_s": statistics.median(times[config]),
            "ratio": paired_ratio(times, config, args.config),
            "spread": ratio_spread(times, config, args.config),
        })
    return rows


def _architectures_markdown(rows, iters):
    """The table of :func:`time_architectures`."""
    md = ["## Configs compared (stage-0 training steps of each config's Brain, same batch)", "",
          "| config | Brain | encoder | layers | encoder parameters | GFLOP / step | ms / step "
          "| vs first | per-round quartiles |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        spread = "-" if r["spread"] is None else f"{r['spread'][0]:.3f} - {r['spread'][1]:.3f}"
        md.append(f"| `{r['config']}` | {r['brain']} | {r['encoder']} | {r['layers']} "
                  f"| {r['params'] / 1e6:.3f}M | {r['gflop']:.2f} | {r['step_s'] * 1000:.1f} | {r['ratio']:.3f} | {spread} |")
    md += ["", f"Each round times one step of every config, back to back ({iters} rounds after "
           "warm-up); 'vs first' is the median over rounds of the ratio to the first row's step "
           "of the same round, with its first and third quartiles. GFLOP: forward + backward, "
           "counted by `FlopCounterMode` with attention on its math kernels."]
    return "\n".join(md)


def _summary(rows, flops, qrows, cache, cache_s):
    """The JSON summary: ratios to BEST-RQ, FLOP floor, quantizer, compile, MFU."""
    step = {r["variant"]: r["step_s"] for r in rows}
    ratio = {r["variant"]: r["ratio"] for r in rows if r["ratio"] is not None}
    t0 = step["BEST-RQ, all fast paths"]
    both = [r for r in qrows if r.get("speedup") and r.get("memory_ratio")]
    qbest = max(both, key=lambda r: r["frames"]) if both else {}
    summary = {
        "step_time_ratio_online": ratio["Latent-RQ online, all fast paths"],
        "step_time_ratio_cached": ratio.get("Latent-RQ, target cache (all fast paths)"),
        "step_time_ratio_online_flop_floor": flops[1] / flops[0],
        "sb_way_vs_ours_stage0": ratio[SB_WAY],
        "fast_frontend_speedup": ratio[
            "BEST-RQ, fast_frontend off (SpeechBrain's Conv2d layout)"],
        "fast_ffn_speedup": ratio[
            "BEST-RQ, fast_ffn off (SpeechBrain's feed-forward permutation)"],
        "fast_attention_speedup": ratio[
            "BEST-RQ, fast_attention off (SpeechBrain's unfused attention)"],
        "quantizer_speedup": qbest.get("speedup"),
        "quantizer_memory_ratio": qbest.get("memory_ratio"),
        "target_cache_build_s": cache_s if cache is not None else None,
        "best_rq_step_s": t0,
        "latent_rq_online_step_s": step["Latent-RQ online, all fast paths"],
        "latent_rq_cached_step_s": step.get("Latent-RQ, target cache (all fast paths)"),
    }
    summary["online_over_floor"] = (
        summary["step_time_ratio_online"] / summary["step_time_ratio_online_flop_floor"])
    best = next(r for r in rows if r["variant"] == "BEST-RQ, all fast paths")
    summary["audio_s_per_s_best_rq"] = best["audio_s_per_s"]
    if best.get("peak_gib") is not None:
        summary["peak_gib_best_rq"] = best["peak_gib"]
    compiled = {r["stage"]: r for r in rows if "torch.compile" in r["variant"]}
    if compiled:
        summary["audio_s_per_s_best_rq_compiled"] = compiled[0]["audio_s_per_s"]
        summary["step_time_ratio_online_compiled"] = compiled[1]["step_s"] / compiled[0]["step_s"]
        summary["compile_speedup_best_rq"] = t0 / compiled[0]["step_s"]
    mfu = {r["variant"]: r["mfu"] for r in rows if "mfu" in r}
    if mfu:
        summary["mfu_best_rq"] = mfu["BEST-RQ, all fast paths"]
        summary["mfu_best_rq_compiled"] = compiled[0].get("mfu") if compiled else None
    return summary


def _markdown(args, brain, rows, flops, qrows, n, audio_s, cache, cache_s):
    """The markdown report of :func:`run`."""
    hp = brain.hparams
    t0 = {r["variant"]: r["step_s"] for r in rows}["BEST-RQ, all fast paths"]
    enc = unwrap(brain.modules.encoder)
    params = sum(p.numel() for m in brain.modules.values() for p in m.parameters())
    dev = (
        torch.cuda.get_device_name(brain.device)
        if str(brain.device).startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads"
    )
    md = [
        "## Training step time (same model, batch and data, one run)",
        "",
        f"- machine: {dev}; torch {torch.__version__}; speechbrain {sb.__version__}",
        f"- config: `{args.config}` {' '.join(args.overrides)}; model: "
        f"{enc.num_layers} Conformer layers, d={enc.d_model}, {params / 1e6:.2f}M parameters; "
        f"{hp.n_codebooks} codebooks x {hp.codebook_size}; target layers "
        f"{brain.target_encoder.target_layers}; precision {brain.precision}",
        f"- batch: {n} x {args.utt_seconds} s synthetic speech ({audio_s:.0f} s of audio); "
        f"median of {args.iters} steps after {args.warmup} warm-up steps",
        "",
        "| variant | stage | ms / step | vs BEST-RQ | audio s / s |"
        + (" peak GiB | MFU |" if rows and "mfu" in rows[0] else ""),
        "|---|---|---|---|---|" + ("---|---|" if rows and "mfu" in rows[0] else ""),
    ]
    for r in rows:
        line = (
            f"| {r['variant']} | {r['stage']} | {r['step_s'] * 1000:.1f} "
            f"| {r['ratio'] if r['ratio'] is not None else r['step_s'] / t0:.3f} "
            f"| {r['audio_s_per_s']:.1f} |"
        )
        if "mfu" in r:
            line += f" {r['peak_gib']:.1f} | {100 * r['mfu']:.1f}% |"
        md.append(line)
    md += [
        "",
        "'vs BEST-RQ' is the median over rounds of the ratio to the BEST-RQ step timed in "
        "the same round (every variant runs once per round, back to back).",
        "",
        f"Compute floor of the online ratio: a training step counts {flops[0] / 1e9:.1f} "
        f"GFLOP in stage 0 and {flops[1] / 1e9:.1f} GFLOP in stage 1 online "
        "(`torch.utils.flop_counter.FlopCounterMode`: matmuls, convolutions, attention; "
        "forward + backward), a ratio of "
        f"**{flops[1] / flops[0]:.3f}**: the target encoder's forward alone, before any "
        "overhead. An online step cannot be cheaper than that at equal efficiency; the "
        "target cache removes it.",
    ]
    if cache is not None:
        md += ["", f"Target cache: built for {n} utterances in {cache_s:.2f} s "
               "(transition included), then read every step."]
    if qrows:
        from tools.bench_quantizer import format_table

        md += ["", "## Quantizer: ours vs SpeechBrain's (18 x 4096 x 16, input 320)", "",
               format_table(qrows)]
    return "\n".join(md)


def run(args):
    """Runs every measurement; returns (markdown, summary dict)."""
    if args.only_regularizers:
        rrows, base_s = time_regularizers(args, args.warmup, args.iters)
        summary = {"BEST-RQ": base_s, "regularizers": {
            r["variant"]: {"step_s": r["step_s"], "ratio": r["ratio"]} for r in rrows}}
        return _regularizers_markdown(rrows, base_s), summary
    brain, batch, n, audio_s = _bench_brain(args)
    if args.architectures_only:
        arows = time_architectures(args, brain, batch, args.warmup, args.iters)
        return _architectures_markdown(arows, args.iters), _architectures_summary(arows)
    rows = []

    # Snapshot + target cache first, so that every variant can be switched on
    # by cheap toggles; variants are then timed round-robin (one step each per
    # round), so that drift and background load hit them all alike.
    cache_start = time.perf_counter()
    brain.transition(1)
    cache_s = time.perf_counter() - cache_start
    cache = brain.target_cache
    variants, setup = _variants(brain, cache)
    times, peaks = _time_round_robin(brain, batch, variants, args.warmup, args.iters)

    base = "BEST-RQ, all fast paths"

    def add_row(label, stage, s, peak_gib=None, ratio=None):
        row = {"variant": label, "stage": stage, "step_s": s, "audio_s_per_s": audio_s / s,
               "ratio": ratio}
        if str(brain.device).startswith("cuda"):
            row["peak_gib"] = peak_gib
            with torch.no_grad():
                out = brain.compute_forward(batch, sb.Stage.TRAIN)
            f = flops_per_step(brain, out["enc_lens"], int(out["mask"].sum()), stage)
            row["mfu"] = f / s / (args.peak_tflops * 1e12)
        rows.append(row)
        print(f"  {label}: {s * 1000:.1f} ms/step", file=sys.stderr, flush=True)

    for label, stage, apply in variants:
        apply()
        add_row(label, stage, statistics.median(times[label]), peaks.get(label),
                paired_ratio(times, label, base))
    # The compute floor of the online ratio: what any implementation that runs
    # the target encoder's forward every step must add, in counted FLOPs.
    # Counted on SpeechBrain's attention (explicit matmuls): FlopCounterMode
    # does not see every fused attention kernel (the CPU one without grad).
    flops = {}
    for stage in (0, 1):
        setup(stage, attention=False)()
        flops[stage] = counted_flops(brain, batch)
    setup(1)()
    if args.compile:  # compiled separately: compilation changes every variant
        brain.modules.encoder = torch.compile(brain.modules.encoder, dynamic=False)
        brain.target_encoder.compile = True  # static shapes: one fixed batch
        for label, stage in (("BEST-RQ, torch.compile(encoder)", 0),
                             ("Latent-RQ online, torch.compile(encoder)", 1)):
            setup(stage)()
            s = time_steps(brain, batch, args.warmup, args.iters)
            peak = None
            if str(brain.device).startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
                time_steps(brain, batch, 0, 1)
                peak = torch.cuda.max_memory_allocated() / 2**30
            add_row(label, stage, s, peak)
    vrows = []
    if args.target_variants:
        setup(0)()
        vrows = time_target_variants(args, brain, batch, args.warmup, args.iters)
        setup(1)()
    qrows = []
    if args.quantizer_frames:
        from tools.bench_quantizer import compare_quantizers

        qrows = compare_quantizers(
            frame_counts=args.quantizer_frames, device=str(brain.device)
        )
    summary = _summary(rows, flops, qrows, cache, cache_s)
    summary["target_variants"] = {r["variant"]: {k: r[k] for k in ("step_s", "ratio", "transition_s")}
                                  for r in vrows}
    md = _markdown(args, brain, rows, flops, qrows, n, audio_s, cache, cache_s)
    if vrows:
        md += "\n\n" + _variants_markdown(vrows, cache_s)
    if args.regularizers:
        rrows, base_s = time_regularizers(args, args.warmup, args.iters)
        summary["regularizers"] = {r["variant"]: {"step_s": r["step_s"], "ratio": r["ratio"]}
                                   for r in rrows}
        md += "\n\n" + _regularizers_markdown(rrows, base_s)
    if args.architectures:
        setup(0)()
        arows = time_architectures(args, brain, batch, args.warmup, args.iters)
        md += "\n\n" + _architectures_markdown(arows, args.iters)
        summary.update(_architectures_summary(arows))
    return md, summary


def _architectures_summary(rows):
    """``{"architectures": {config: {step_s, ratio, gflop, params}}}``."""
    return {"architectures": {r["config"]: {k: r[k] for k in ("step_s", "ratio", "gflop", "params")}
                              for r in rows}}


def _variants_markdown(vrows, paper_transition_s):
    """The table of :func:`time_target_variants`."""
    md = ["## Latent-target variants (online targets, vs BEST-RQ)", "",
          "| variant | ms / step | vs BEST-RQ | transition s |", "|---|---|---|---|"]
    for r in vrows:
        md.append(f"| {r['variant']} | {r['step_s'] * 1000:.1f} | {r['ratio']:.3f} "
                  f"| {r['transition_s']:.2f} |")
    md += ["", "Each variant is its own Brain of the same model, seed and batch, timed "
           "round-robin with BEST-RQ; 'transition s' is its stage transition (snapshot, "
           "fitting of PCA / k-means on the batch's frames), against "
           f"{paper_transition_s:.2f} s for the paper's (snapshot and target cache)."]
    return "\n".join(md)


def model_arguments(p, batch_seconds):
    """Options of :func:`_bench_brain` (config, device, batch), shared by tools."""
    p.add_argument("--config", default="hparams/small/latent_rq.yaml")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-seconds", type=float, default=batch_seconds)
    p.add_argument("--utt-seconds", type=float, default=10.0)


def parse_with_overrides(p, argv):
    """Parses ``argv``; unknown ``--key=value`` options join the YAML overrides."""
    p.add_argument("overrides", nargs="*", help="YAML overrides, e.g. --d_model=256")
    args, unknown = p.parse_known_args(argv)
    args.overrides = list(args.overrides) + unknown
    return args


def parse_args(argv):
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized run of a few minutes")
    model_arguments(p, 60.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--quantizer-frames", type=int, nargs="*", default=None,
                   help="frame counts of the quantizer comparison (none: skip it)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(encoder)")
    p.add_argument("--no-target-variants", dest="target_variants", action="store_false",
                   help="skip the latent-target variants' step times")
    p.add_argument("--no-regularizers", dest="regularizers", action="store_false",
                   help="skip the layer regularisers' step times")
    p.add_argument("--only-regularizers", action="store_true",
                   help="time only the layer regularisers against BEST-RQ")
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--architectures", nargs="*", default=[], metavar="CONFIG",
                   help="training YAMLs of other encoders, timed against --config "
                        "(e.g. hparams/small/latent_rq_zipformer.yaml)")
    p.add_argument("--architectures-only", action="store_true",
                   help="time only --config against --architectures (BEST-RQ steps)")
    p.add_argument("--out", help="also write the markdown (and the JSON) to this file")
    args = parse_with_overrides(p, argv)
    if args.out:  # refused before the benchmark runs, not after
        try:
            splice_generated(args.out, "")
        except ValueError as err:
            p.error(str(err))
    if args.architectures_only and not args.architectures:
        p.error("--architectures-only needs --architectures CONFIG [CONFIG ...]")
    if args.quantizer_frames is None:
        args.quantizer_frames = [1000, 4000] if args.quick else [1000, 4000, 16000]
    if args.quick:
        args.iters, args.warmup = min(args.iters, 5), min(args.warmup, 2)
    return args


#: the lines around the part of an ``--out`` file this tool writes; the text
#: outside them (sections written by hand) is kept when the command is rerun
BEGIN = "<!-- tools.bench: generated from here; rerun the command below to replace it -->"
END = "<!-- tools.bench: end of the generated part -->"


def splice_generated(path, block):
    """The text of ``path`` with its generated part (between :data:`BEGIN` and
    :data:`END`) replaced by ``block``; a new file when ``path`` does not exist.
    Refuses a file that holds text this tool did not write (no markers), so
    that nothing written by hand is lost.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "perf.md")
    >>> new = splice_generated(path, "one")
    >>> _ = open(path, "w").write(new + "## By hand\\n")
    >>> splice_generated(path, "two").endswith("two\\n" + END + "\\n## By hand\\n")
    True
    >>> _ = open(path, "w").write("# Notes\\n")
    >>> splice_generated(path, "x")
    Traceback (most recent call last):
    ...
    ValueError: ...perf.md holds text tools.bench did not write ...
    """
    if not os.path.exists(path):
        return f"# Performance\n\n{BEGIN}\n{block}\n{END}\n"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(
            f"{path} holds text tools.bench did not write (no '<!-- tools.bench: ...' markers "
            "around a generated part): pass a new --out file, or put the markers around the "
            "part to replace")
    return text[:start] + f"{BEGIN}\n{block}\n" + text[end:]


def main(argv=None):
    """Runs the benchmark, prints markdown and a final JSON line; ``--out``
    replaces the generated part of its file (:func:`splice_generated`)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    md, summary = run(args)
    js = json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()})
    print(md)
    print()
    print(js)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        cmd = "python -m tools.bench " + " ".join(sys.argv[1:] if argv is None else argv)
        text = splice_generated(args.out, f"Produced by `{cmd}`.\n\n{md}\n\n```json\n{js}\n```")
        with open(args.out + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(args.out + ".tmp", args.out)
    return summary


if __name__ == "__main__":
    main()
