"""How many codes do latent targets use, for each target normalisation?

Loads a run's latest checkpoint, takes its target encoder (or, in stage 0, its
encoder) and quantizes every valid frame of the validation set through the
configured target layers, once per normalisation (``utterance``, ``layer``,
``none``). Prints codes used and perplexity per codebook, as a markdown table.
Few codes / low perplexity mean near-constant targets, an easy but useless task.

Usage (same arguments as train.py, pointing at an existing output folder)::

    python -m tools.target_usage hparams/small/latent_rq.yaml \\
        --output_folder=results/demo/latent_rq --stage_transitions=[] --initial_stage=1 \\
        --init_from=results/demo/best_rq/save

Authors
 * latent-rq developers 2026
"""

import sys

if __name__ == "__main__":  # a usage error is reported before torch and SpeechBrain load
    from latent_rq_brain.training.arguments import check_or_exit

    check_or_exit(sys.argv[1:], "tools.target_usage")

import torch  # noqa: E402

import speechbrain as sb
from latent_rq_brain.targets.maker import TargetMaker, quantizer_sources
from latent_rq_brain.targets.target_encoder import NORMS, TargetEncoder


def code_usage(brain, loader, norm):
    """Per-codebook (codes used, perplexity) of latent targets with ``norm``."""
    source = brain.target_encoder.module
    if source is None:  # stage 0: no snapshot yet, use the encoder itself
        source = brain.modules.encoder
    te = TargetEncoder(brain.target_encoder.target_layers, norm)
    te.snapshot(source, step=0)
    te.template = brain.modules.encoder
    make = TargetMaker(brain.quantizer, quantizer_sources(  # the layers alone
        brain.quantizer, te, brain.hparams.downsampling, anchor_codebooks=0))
    V = brain.hparams.codebook_size
    counts = None
    for batch in loader:
        feats, enc_lens, _ = brain.batch_features(batch.to(brain.device))
        codes = make.all_frames(feats, enc_lens, stage=1)
        c = torch.stack([torch.bincount(codes[:, i], minlength=V) for i in range(codes.shape[1])])
        counts = c if counts is None else counts + c
    p = counts.double() / counts.sum(1, keepdim=True)
    ent = -(p * p.clamp(min=1e-30).log()).sum(1)
    return (counts > 0).sum(1).tolist(), ent.exp().tolist()


def main(argv):
    """Prints the table for the run described by ``argv`` (train.py arguments)."""
    import train

    brain, _, valid_data, _, valid_opts = train.build(argv, prog="tools.target_usage")
    if valid_data is None:
        raise ValueError("target_usage needs a valid_csv")
    loader = brain.make_dataloader(
        valid_data, stage=sb.Stage.VALID, ckpt_prefix=None, **valid_opts
    )
    brain.on_fit_start()
    step = brain.target_encoder.snapshot_step
    what = f"target encoder (snapshot of step {step})" if step is not None else "encoder"
    print(f"\nCode usage of latent targets, {what}, layers "
          f"{brain.target_encoder.target_layers}, {brain.hparams.codebook_size} codes "
          "per codebook, all valid frames of the validation set\n")
    print("| target_norm | codes used per codebook | mean | perplexity per codebook | mean |")
    print("|---|---|---|---|---|")
    for norm in NORMS:
        used, ppl = code_usage(brain, loader, norm)
        print(f"| {norm} | {used} | {sum(used) / len(used):.0f} "
              f"| {[round(x, 1) for x in ppl]} | {sum(ppl) / len(ppl):.1f} |")


if __name__ == "__main__":
    from latent_rq_brain.training.arguments import exit_on_usage_error

    with torch.no_grad(), exit_on_usage_error("tools.target_usage"):
        main(sys.argv[1:])
