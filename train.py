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
with CSV manifests ``ID,duration,wav[,spk_id,wrd]``.

Authors
 * latent-rq developers 2026
"""

import dataclasses
import logging
import sys
import typing

from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb
from latent_rq_brain.brain import LatentRQBrain
from latent_rq_brain.checkpoints import check_resume_fits, guard_checkpointer
from latent_rq_brain.data import dataio_prepare
from latent_rq_brain.ddp_watch import explained, init_ddp, start_rank_watch
from latent_rq_brain.hparams import check_settings, expand_hparams_file, plain_setting
from latent_rq_brain.output_lock import acquire_output_lock, release_output_lock
from latent_rq_brain.pretrained import EncoderSpec
from speechbrain.utils.distributed import if_main_process, run_on_main
from speechbrain.utils.run_opts import RunOptions

logger = logging.getLogger(__name__)


def typed_run_opts(run_opts):
    """Casts command-line run options to their declared types.

    SpeechBrain 1.1 leaves some of them as strings (``--optimizer_step_limit=N``
    then crashes comparing a str with an int).
    """
    hints = typing.get_type_hints(RunOptions)
    changes = {}
    for name in run_opts.overridden_args:
        value = getattr(run_opts, name, None)
        kinds = typing.get_args(hints.get(name)) or (hints.get(name),)
        if not isinstance(value, str):
            continue
        for kind in (int, float):
            if kind in kinds:
                try:
                    changes[name] = kind(value)
                except ValueError:
                    raise ValueError(f"--{name}={value!r} is not a valid {kind.__name__}") from None
                break
    return dataclasses.replace(run_opts, **changes) if changes else run_opts


def build(argv):
    """Parses arguments, prepares data and builds the Brain (no training).

    Returns
    -------
    brain, train_data, valid_data, train_loader_kwargs, valid_loader_kwargs
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    hparams_file, overrides = expand_hparams_file(hparams_file, overrides)
    run_opts = typed_run_opts(run_opts)
    init_ddp(run_opts, plain_setting(hparams_file, overrides, "ddp_timeout_minutes"))
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    # NB: no hparams.update(run_opts): Brain reads run options from both.
    check_settings(hparams, run_opts)
    if hparams.get("checkpointer") is not None:  # disk full named, debris removed
        guard_checkpointer(hparams["checkpointer"])

    # One run per output folder; nothing is written there before the data and
    # the resume (if any) are known to fit this configuration.
    lock = acquire_output_lock(hparams["output_folder"]) if if_main_process() else None
    try:
        if hparams.get("checkpointer") is not None:
            EncoderSpec.register(hparams["checkpointer"], hparams)  # checked on resume
            check_resume_fits(hparams["checkpointer"], _link_recoverables)
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

    brain = LatentRQBrain(
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
        better = explained(err, brain.rank_watch)  # a DDP timeout: which rank is silent
        if better is err:
            raise
        raise better from err
    return brain


if __name__ == "__main__":
    main(sys.argv[1:])
