#!/usr/bin/env python3
"""Pre-train a Conformer with BEST-RQ (stage 0) and Latent-RQ (stages >= 1).

Usage::

    python train.py hparams/best_rq.yaml --data_folder=/data/LibriSpeech
    python train.py hparams/latent_rq_stage1.yaml --data_folder=... \\
        --init_from=results/best_rq/1000/save
    python train.py hparams/latent_rq_schedule.yaml --data_folder=... \\
        --target_layers=[11,12,13,14,15,16]
    torchrun --nproc_per_node=4 train.py hparams/latent_rq_schedule.yaml ...

Any corpus: ``--data_prep=null --train_csv=train.csv --valid_csv=valid.csv``
with CSV manifests ``ID,duration,wav[,spk_id,wrd]`` (no ``--data_folder``
needed then).

The command line is checked before torch and SpeechBrain are imported
(:mod:`latent_rq_brain.training.arguments`): a usage error or a mistyped setting is
reported at once. Under ``torchrun`` without CUDA the DDP backend is
``gloo`` unless ``--distributed_backend`` says otherwise.

Authors
 * latent-rq developers 2026
"""

import dataclasses
import logging
import os
import sys

# Light imports only at the top: torch and SpeechBrain load in build(), after
# the command line has been checked.
from latent_rq_brain.training.arguments import (UsageError, check_command_line,  # noqa: F401
                                       exit_on_usage_error, no_folders_left_on_refusal,
                                       parse_arguments, typed_run_opts)

logger = logging.getLogger(__name__)


def ddp_backend(run_opts, cuda_available=None):
    """Run options with ``distributed_backend: gloo`` under ``torchrun`` on a
    machine without CUDA (SpeechBrain's default, ``nccl``, needs GPUs), unless
    ``--distributed_backend`` was given. Returns ``(run_opts, message)``;
    ``message`` (None when nothing changed) is for the log.
    """
    launched = os.environ.get("RANK") is not None and os.environ.get("LOCAL_RANK") is not None
    if not launched or "distributed_backend" in run_opts.overridden_args:
        return run_opts, None
    if run_opts.distributed_backend != "nccl":
        return run_opts, None
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return run_opts, None
    message = ("DDP without CUDA: distributed_backend gloo (nccl needs GPUs; "
               "--distributed_backend=... chooses another)")
    # Brain takes a run option from run_opts only if it is marked as given
    given = set(run_opts.overridden_args) | {"distributed_backend"}
    return dataclasses.replace(run_opts, distributed_backend="gloo", overridden_args=given), message


def build(argv, prog="train.py"):
    """Parses arguments, prepares data and builds the Brain (no training);
    ``prog`` names the script in usage errors.

    Returns
    -------
    brain, train_data, valid_data, train_loader_kwargs, valid_loader_kwargs
    """
    hparams_file, run_opts, overrides = parse_arguments(argv, prog)  # checked before torch loads
    with no_folders_left_on_refusal(hparams_file, overrides):  # a refusal leaves nothing
        return _build(hparams_file, run_opts, overrides)


def _build(hparams_file, run_opts, overrides):
    """:func:`build` once the command line is read."""
    from hyperpyyaml import load_hyperpyyaml

    import speechbrain as sb
    from latent_rq_brain.training.brain import LatentRQBrain
    from latent_rq_brain.training.branching import check_branch_fits
    from latent_rq_brain.training.checkpointer import check_guarded
    from latent_rq_brain.training.resume import check_resume_fits
    from latent_rq_brain.training.data import dataio_prepare
    from latent_rq_brain.training.ddp_watch import init_ddp, start_rank_watch
    from latent_rq_brain.training.hparams import check_settings, plain_setting
    from latent_rq_brain.model.architectures import EncoderSpec
    from latent_rq_brain.training.output_lock import acquire_output_lock, release_output_lock
    from speechbrain.utils.distributed import if_main_process, run_on_main

    run_opts, backend_note = ddp_backend(run_opts)
    init_ddp(run_opts, plain_setting(hparams_file, overrides, "ddp_timeout_minutes"))
    with open(hparams_file, encoding="utf-8") as fin:
        # a thin file may add settings (the command line's are checked above)
        hparams = load_hyperpyyaml(fin, overrides, overrides_must_match=False)
    # NB: no hparams.update(run_opts): Brain reads run options from both.
    check_settings(hparams, run_opts)
    check_guarded(hparams.get("checkpointer"), hparams_file)  # disk full named, debris removed

    # One run per output folder; nothing is written there before the data and
    # the resume (if any) are known to fit this configuration.
    lock = acquire_output_lock(hparams["output_folder"]) if if_main_process() else None
    try:
        resumable = None
        if hparams.get("checkpointer") is not None:
            EncoderSpec.register(hparams["checkpointer"], hparams)  # checked on resume
            resumable = check_resume_fits(hparams["checkpointer"], _link_recoverables)
        if resumable is None and hparams.get("init_from"):
            check_branch_fits(hparams)
        data = None
        if hparams.get("data_prep") is None:  # check given manifests before writing
            data = dataio_prepare(hparams)
    except BaseException:
        if lock is not None:
            release_output_lock(lock)
        raise
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    if backend_note:
        logger.info(backend_note)
    # DDP: names a rank that stops answering
    rank_watch = start_rank_watch(hparams["output_folder"], hparams.get("ddp_timeout_minutes"))
    if data is None:
        run_on_main(hparams["data_prep"])
        data = dataio_prepare(hparams)
    train_data, valid_data, train_opts, valid_opts = data
    for dataset in (train_data, valid_data):  # now that the log file is set up
        if getattr(dataset, "filter_report", None):
            logger.info(dataset.filter_report)

    if hparams.get("use_tensorboard"):
        from speechbrain.utils.train_logger import TensorboardLogger

        hparams["tensorboard_logger"] = TensorboardLogger(hparams["tensorboard_dir"])

    brain_class = hparams.get("brain_class") or LatentRQBrain  # the YAML names its Brain
    brain = brain_class(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.rank_watch = rank_watch
    return brain, train_data, valid_data, train_opts, valid_opts


def _link_recoverables(recoverables):
    """Links copies of the recoverables as on_fit_start links the originals."""
    recoverables["target_encoder"].attach(recoverables["encoder"])


def main(argv):
    """Builds everything and trains; returns the Brain."""
    brain, train_data, valid_data, train_opts, valid_opts = build(argv)
    try:
        brain.fit(
            brain.hparams.epoch_counter,
            train_data,
            valid_data,
            train_loader_kwargs=train_opts,
            valid_loader_kwargs=valid_opts,
        )
    except RuntimeError as err:
        from latent_rq_brain.training.ddp_watch import explained

        better = explained(err, brain.rank_watch)  # a DDP timeout: which rank is silent
        if better is err:
            raise
        raise better from err
    return brain


if __name__ == "__main__":
    with exit_on_usage_error("train.py"):  # a command line that cannot run: no traceback
        main(sys.argv[1:])
