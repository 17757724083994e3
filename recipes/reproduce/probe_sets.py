"""Which utterances the quick probes evaluate on (and so never pre-train on).

One place decides the item sets of :mod:`recipes.probes.quick`; the corpus
builder (:mod:`recipes.reproduce.prepare_corpus`) removes from pre-training every
utterance returned by :func:`probe_held_ids`: the quick-probe items plus the
valid and test items of every SUPERB-style task of
:mod:`recipes.probes.prepare_shared_packs`.

=============  ====================  ============  =====================================
task           pack / source         label         folds
=============  ====================  ============  =====================================
``keywords``   arabic-commands       keyword       speaker-disjoint (val+test speakers)
``digits``     fsdd                  digit         speaker-disjoint (6 speakers)
``intents``    coffee-intents (58%)  coffeeDrink   stratified (no speaker ids)
``speaker``    librispeech-mini      speaker       stratified (test-other: 10 x 10)
``language``   corpus LID hold-out   lang          prompt-disjoint (same prompt, same fold)
``phones``     librispeech-mini +    phone/frame   speaker-disjoint
               English prompts
=============  ====================  ============  =====================================

Authors
 * latent-rq developers 2026
"""

import os

from latent_rq_brain.training.data import read_manifest
from latent_rq_brain.training.data import stable_hash

#: task -> (pack, label column, group column or None, row filter)
PACK_TASKS = {
    "keywords": ("arabic-commands", "keyword", "speaker", lambda r: r["split"] in ("val", "test")),
    "digits": ("fsdd", "digit", "speaker", lambda r: True),
    # 58 % of the pack (~360 utterances); the rest may be pre-trained on
    "intents": ("coffee-intents", "coffeeDrink", None,
                lambda r: stable_hash("quick|" + r["ID"]) < 0.58),
    "speaker": ("librispeech-mini", "speaker", None, lambda r: r["split"] == "test-other"),
}
#: utterances of librispeech-mini that the phone probe uses (with recognised phones)
PHONE_PACK = ("librispeech-mini", lambda r: r["split"] == "test-other")


def read_pack(shared, pack):
    """Rows of one shared pack, each with its ``ID`` and an absolute ``wav``."""
    rows = read_manifest(os.path.join(shared, pack, "manifest.csv"))
    return [dict(row, ID=uid) for uid, row in rows.items()]


def task_rows(shared, task):
    """The rows of one pack task of :data:`PACK_TASKS`."""
    pack, _, _, keep = PACK_TASKS[task]
    return [r for r in read_pack(shared, pack) if keep(r)]


def probe_held_ids(shared):
    """``{pack: set of IDs}`` that no pre-training corpus may contain.

    The quick-probe items, and the valid/test items of every task of
    :mod:`recipes.probes.prepare_shared_packs`.
    """
    from recipes.probes.prepare_shared_packs import TASKS, split_rows

    held = {pack: set() for pack, *_ in PACK_TASKS.values()}
    for task in PACK_TASKS:
        held[PACK_TASKS[task][0]].update(r["ID"] for r in task_rows(shared, task))
    pack, keep = PHONE_PACK
    held[pack].update(r["ID"] for r in read_pack(shared, pack) if keep(r))
    for pack, label, how in TASKS.values():
        rows = read_pack(shared, pack)
        splits = split_rows(rows, label, how, pack)
        held.setdefault(pack, set()).update(r["ID"] for s in ("valid", "test") for r in splits[s])
    return held
