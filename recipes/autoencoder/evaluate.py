"""Evaluate an autoencoder checkpoint: reconstruction, resynthesis, latent
health and the quick probes, into one report (markdown + JSON).

* **Reconstruction** on held-out audio (a CSV manifest ``ID,duration,wav``):
  the clean (unmasked) input goes through encoder, bottleneck (``z`` = its
  mean) and decoder; over every valid 10 ms frame,

  - ``mel_l1``: the mean absolute error of the normalised log-Mel frames
    (what training minimises);
  - ``mcd_db``: the mel-cepstral distortion, in dB, between the decoder's
    log-Mel (de-normalised with the input utterance's mean and std) and the
    input's: ``(10 / ln 10) * sqrt(2 * sum_k (c_k - c'_k)^2)`` over cepstral
    coefficients ``k = 1..n_cepstra`` (``c_0``, the energy, left out) of the
    orthonormal DCT-II of the natural-log Mel amplitude; averaged over frames;

* **Resynthesis**: for the first ``--prompts`` utterances, wavs made with
  torchaudio's Griffin-Lim from the inverse Mel scale, of the input's
  log-Mel (``*_input_gl.wav``: what the vocoder alone keeps) and of the
  decoder's (``*_decoder_gl.wav``). Griffin-Lim limits both: they say what the
  Mel frames hold, not how a neural vocoder would sound;
* **Latent health**: the effective dimension (participation ratio) of ``z``
  and of every hidden state on the held-out frames;
* **Discrimination**: :mod:`recipes.probes.quick` on every layer and on ``z``
  (``--asterisk FOLDER``, or ``--shared``/``--corpus``; ``--no-probes`` skips).

Usage::

    python -m recipes.autoencoder.evaluate results/small_autoencoder/1000 \\
        --csv demo_data/asterisk/valid.csv --asterisk demo_data/asterisk \\
        --out results/autoencoder/small_sigreg

Writes ``OUT/report.md``, ``OUT/report.json`` and ``OUT/wavs/``.

Authors
 * latent-rq developers 2026
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import torch

from latent_rq_brain.model.features import ms_to_samples

#: cepstral coefficients of the MCD (c_1..c_13)
N_CEPSTRA = 13
#: Griffin-Lim iterations of the resynthesised prompts
GRIFFIN_LIM_ITERS = 32


class Autoencoder(torch.nn.Module):
    """Encoder, bottleneck and decoder of a training checkpoint, frozen.

    ``encoder``: a :class:`~latent_rq_brain.sharing.pretrained.PretrainedEncoder` with
    a bottleneck; ``decoder``: the checkpoint's
    :class:`~latent_rq_brain.model.autoencoder.MelDecoder`.
    """

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_checkpoint(cls, path):
        """Loads a run, save or ``CKPT+`` folder of an autoencoder run."""
        from latent_rq_brain.model.autoencoder import MelDecoder
        from latent_rq_brain.training.checkpoints import ENCODER_FILES, find_checkpoint, require_files
        from latent_rq_brain.sharing.pretrained import EncoderSpec, PretrainedEncoder
        from latent_rq_brain.sharing.safe_load import load_weights

        ckpt = find_checkpoint(path, needed=ENCODER_FILES)
        if "latent_dim" not in EncoderSpec.read(ckpt.paramfiles["encoder_spec"]):
            raise ValueError(f"{ckpt.path} is not an autoencoder's checkpoint (no latent_dim "
                             "in its encoder_spec.ckpt)")
        ckpt = find_checkpoint(path, needed=ENCODER_FILES + ("bottleneck", "decoder"))
        enc = PretrainedEncoder.from_checkpoint(ckpt.path)
        state = load_weights(require_files(ckpt, ["decoder"])["decoder"], map_location="cpu")
        dec = MelDecoder.from_state_dict(state, int(enc.config["n_mels"]),
                                         enc.encoder.downsampling)
        return cls(enc, dec)

    @torch.no_grad()
    def forward(self, wavs, wav_lens=None):
        """Everything the report needs of a batch: ``feats`` (normalised
        log-Mel, B x T x n_mels), ``raw`` (the log-Mel before normalisation, dB),
        ``reconstruction`` (normalised), ``frame_lens``, ``hidden_states``, ``z``
        and ``enc_lens``."""
        enc = self.encoder
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        n_samples = torch.round(wav_lens.float() * wavs.shape[1]).long()
        feats, frame_lens, enc_lens = enc.features(wavs, n_samples)
        raw = enc.features.fbank(wavs.float())
        out, hidden = enc.encoder(feats, enc_lens)
        z = enc.bottleneck(out)[1]
        rec = self.decoder(z, enc_lens)
        return {"feats": feats, "raw": raw, "reconstruction": rec, "frame_lens": frame_lens,
                "hidden_states": list(hidden), "z": z, "enc_lens": enc_lens}


def dct_matrix(n, k):
    """(n, k) orthonormal DCT-II basis: ``x @ dct_matrix(n, k)`` gives the first
    ``k`` coefficients of each row of ``x`` (n values).

    Example
    -------
    >>> m = dct_matrix(8, 8)
    >>> bool(torch.allclose(m.T @ m, torch.eye(8, dtype=m.dtype)))
    True
    """
    i = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(k, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi / n * (i + 0.5) * j) * math.sqrt(2.0 / n)
    m[:, 0] /= math.sqrt(2.0)
    return m


def mel_cepstra(log_mel_db, n_cepstra=N_CEPSTRA):
    """Mel cepstra ``c_1..c_n`` of (N, n_mels) log-Mel power frames in dB:
    the orthonormal DCT-II of the natural-log Mel amplitude."""
    ln_amplitude = log_mel_db.double() * (math.log(10.0) / 20.0)
    return (ln_amplitude @ dct_matrix(log_mel_db.shape[-1], n_cepstra + 1))[:, 1:]


def mcd_db(ref_db, test_db, n_cepstra=N_CEPSTRA):
    """Mean mel-cepstral distortion (dB) between (N, n_mels) log-Mel frames.

    Example
    -------
    >>> x = torch.randn(10, 80) * 10
    >>> mcd_db(x, x)
    0.0
    >>> mcd_db(x, x + 5.0) < 1e-4  # a level change moves c_0 only
    True
    """
    diff = mel_cepstra(ref_db, n_cepstra) - mel_cepstra(test_db, n_cepstra)
    return float((10.0 / math.log(10.0)) * torch.sqrt(2.0 * diff.square().sum(-1)).mean())


def denormalize(rec, raw, n):
    """The decoder's normalised frames (T, n_mels) in the input's dB scale:
    times the std, plus the mean, of the input's first ``n`` raw frames (the
    sentence normalisation of the features, undone)."""
    x = raw[:n].double()
    return rec[:n].double() * x.std(0).clamp(min=1e-10) + x.mean(0)


def griffin_lim(log_mel_db, config, n_iter=GRIFFIN_LIM_ITERS):
    """A waveform from (T, n_mels) log-Mel power frames in dB (torchaudio's
    inverse Mel scale and Griffin-Lim; f_min 0, f_max sample_rate / 2)."""
    import torchaudio

    sr, n_fft = int(config["sample_rate"]), int(config["n_fft"])
    hop, win = ms_to_samples(sr, config["hop_length"]), ms_to_samples(sr, config["win_length"])
    power = torch.pow(10.0, log_mel_db.float() / 10.0).T  # (n_mels, T)
    inv = torchaudio.transforms.InverseMelScale(n_fft // 2 + 1, power.shape[0], sr,
                                                f_min=0.0, f_max=sr / 2,
                                                driver="gelsd")  # empty low filters: rank-deficient
    spec = inv(power).clamp(min=0.0)
    gl = torchaudio.transforms.GriffinLim(n_fft=n_fft, n_iter=n_iter, win_length=win,
                                          hop_length=hop, power=2.0)
    wav = gl(spec)
    return wav / wav.abs().max().clamp(min=1e-8) * 0.9


def read_manifest(path, limit=None):
    """``[(ID, wav)]`` of a CSV manifest (``ID,duration,wav[,...]``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist (a CSV manifest ID,duration,wav)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["ID"], r["wav"]) for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{path} lists no utterance")
    return rows[:limit] if limit else rows


def evaluate(checkpoint, csv_path, out, prompts=3, max_utterances=200, probes=None,
             log=print):
    """Writes the report of ``checkpoint`` under ``out``; returns its dict.

    ``probes``: keyword arguments of :func:`recipes.probes.quick.evaluate_checkpoint`
    (``shared``, ``corpus``, ``cache``, ``items``...), None = no probes.
    """
    import soundfile

    from latent_rq_brain.training.data import read_audio_checked
    from latent_rq_brain.objectives.sigreg import effective_dimension

    t0 = time.time()
    model = Autoencoder.from_checkpoint(checkpoint)
    enc = model.encoder
    rows = read_manifest(csv_path, max_utterances)
    os.makedirs(os.path.join(out, "wavs"), exist_ok=True)
    l1_sum, l1_n, mcds, zs = 0.0, 0, [], []
    layers = [[] for _ in range(enc.num_hidden_states)]
    wav_files = []
    for k, (uid, path) in enumerate(rows):
        wav = read_audio_checked(path, enc.sample_rate)
        r = model(wav[None])
        n = int(r["frame_lens"][0])
        err = (r["reconstruction"][0, :n] - r["feats"][0, :n]).abs()
        l1_sum, l1_n = l1_sum + float(err.sum()), l1_n + err.numel()
        rec_db = denormalize(r["reconstruction"][0], r["raw"][0], n)
        mcds.append((mcd_db(r["raw"][0, :n], rec_db), n))
        m = int(r["enc_lens"][0])
        zs.append(r["z"][0, :m])
        for i, h in enumerate(r["hidden_states"]):
            layers[i].append(h[0, :m])
        if k < prompts:
            name = "".join(c if c.isalnum() or c in "-_." else "_" for c in uid)
            for kind, mel in (("input", r["raw"][0, :n]), ("decoder", rec_db)):
                target = os.path.join(out, "wavs", f"{name}_{kind}_gl.wav")
                soundfile.write(target, griffin_lim(mel, enc.config).numpy(), enc.sample_rate)
                wav_files.append(os.path.relpath(target, out))
    frames = sum(n for _, n in mcds)
    result = {
        "checkpoint": os.path.abspath(checkpoint),
        "encoder": enc.info,
        "manifest": os.path.abspath(csv_path),
        "utterances": len(rows),
        "frames": frames,
        "latent_dim": enc.latent_dim,
        "latent_regularizer": enc.config.get("latent_regularizer"),
        "reconstruction": {
            "mel_l1": l1_sum / max(l1_n, 1),
            "mcd_db": sum(v * n for v, n in mcds) / max(frames, 1),
            "n_cepstra": N_CEPSTRA,
        },
        "resynthesis": {"vocoder": f"torchaudio Griffin-Lim ({GRIFFIN_LIM_ITERS} iterations)",
                        "wavs": wav_files},
        "latent_health": {
            "z": float(effective_dimension(torch.cat(zs).double())),
            "layers": {str(i - 1): float(effective_dimension(torch.cat(h).double()))
                       for i, h in enumerate(layers)},
        },
    }
    if probes is not None:
        from recipes.probes import quick

        log("quick probes on every layer and z ...")
        result["probes"] = quick.evaluate_checkpoint(checkpoint, log=log, **probes)
    result["seconds"] = time.time() - t0
    write_report(result, out)
    return result


def report_text(r):
    """The markdown of a result of :func:`evaluate`."""
    rec, health = r["reconstruction"], r["latent_health"]
    lines = [
        f"# Autoencoder evaluation: `{r['checkpoint']}`",
        "",
        f"Step {r['encoder'].get('step')}, z: {r['latent_dim']} dims per encoder frame, "
        f"regulariser {r['latent_regularizer']}. Held-out audio: `{r['manifest']}` "
        f"({r['utterances']} utterances, {r['frames']} Mel frames).",
        "",
        "## Reconstruction (decoder output against the input, every valid frame)",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| log-Mel L1 (normalised features) | {rec['mel_l1']:.4f} |",
        f"| mel-cepstral distortion (dB, c1..c{rec['n_cepstra']}) | {rec['mcd_db']:.2f} |",
        "",
        "## Resynthesised prompts",
        "",
        f"Vocoder: {r['resynthesis']['vocoder']} from the inverse Mel scale. Griffin-Lim "
        "limits these wavs: `*_input_gl.wav` is the input's own log-Mel through the same "
        "vocoder (the ceiling), `*_decoder_gl.wav` the decoder's; compare the two, not "
        "either with the original audio.",
        "",
    ] + [f"- [{w}]({w})" for w in r["resynthesis"]["wavs"]] + [
        "",
        "## Latent health (effective dimension: participation ratio of the covariance)",
        "",
        "| source | effective dimension |",
        "|---|---:|",
        f"| z ({r['latent_dim']} dims) | {health['z']:.2f} |",
    ] + [f"| layer {k} | {v:.2f} |" for k, v in health["layers"].items()]
    p = r.get("probes")
    if p:
        lines += ["", "## Quick probes (linear, on every layer and on z)", "",
                  "| task | best layer | best acc | all-layer acc (fold std) | z acc (fold std) |",
                  "|---|---:|---:|---:|---:|"]
        for task, s in p["probes"].items():
            z = s.get("z", {})
            lines.append(f"| {task} | {s['best_layer']} | {100 * s['best']:.1f} | "
                         f"{100 * s['all']:.1f} ({100 * s['all_std']:.1f}) | "
                         f"{100 * z.get('acc', float('nan')):.1f} "
                         f"({100 * z.get('std', float('nan')):.1f}) |")
        lines.append(f"| **Avg** | | {100 * p['Avg_best']:.1f} | {100 * p['Avg']:.1f} | "
                     f"{100 * p.get('Avg_z', float('nan')):.1f} |")
    lines += ["", f"({r['seconds']:.0f} s)", ""]
    return "\n".join(lines)


def write_report(result, out):
    """``out/report.json`` and ``out/report.md``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(report_text(result))


def main(argv=None):
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="run, save/ or CKPT+ folder of an autoencoder run")
    p.add_argument("--csv", required=True, help="held-out CSV manifest (ID,duration,wav)")
    p.add_argument("--out", required=True, help="report folder (report.md, report.json, wavs/)")
    p.add_argument("--prompts", type=int, default=3, help="utterances resynthesised")
    p.add_argument("--max-utterances", type=int, default=200)
    p.add_argument("--no-probes", action="store_true", help="skip the quick probes")
    p.add_argument("--asterisk", default=None, metavar="FOLDER",
                   help="probe tasks from the Asterisk demo corpus (recipes.probes.quick)")
    p.add_argument("--shared", default="../shared/data")
    p.add_argument("--corpus", default="data/pretrain")
    p.add_argument("--cache", default="results/quick_probe_cache")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    probes = None
    if not args.no_probes:
        from recipes.probes import quick

        items = quick.asterisk_items(args.asterisk) if args.asterisk else None
        probes = {"shared": args.shared, "corpus": args.corpus or None, "cache": args.cache,
                  "threads": args.threads, "items": items}
    try:
        r = evaluate(args.checkpoint, args.csv, args.out, args.prompts, args.max_utterances,
                     probes)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(report_text(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
