"""Fixed-shape buckets of a manifest: shapes and padding waste per shape count.

Prints, for each number of shapes, the (batch, seconds, encoder frames)
buckets that ``fixed_shapes: True`` would use
(:class:`latent_rq_brain.training.data.LengthBuckets`) and the padding waste, the
share of computed audio that is padding::

    python -m tools.buckets data/train.csv --max-batch-len 600 --shapes 1 2 4 6 8

Authors
 * latent-rq developers 2026
"""

import argparse
import sys

from latent_rq_brain.training.data import LengthBuckets, read_manifest


def table(durations, max_batch_len, shape_counts, frame_multiple=8):
    """Markdown rows: shapes, their batch sizes and edges, and the waste.

    Example
    -------
    >>> print(table([1.0, 1.5, 2.0, 4.0], 8, [1, 2]).splitlines()[-1])
    | 2 | 3 x 2.23 s, 1 x 4.15 s | 21.6% |
    """
    lines = ["| shapes | batch x seconds | padding waste |", "|---|---|---|"]
    for k in shape_counts:
        b = LengthBuckets(durations, max_batch_len, k, frame_multiple=frame_multiple)
        shapes = ", ".join(
            f"{bs} x {s / b.sample_rate:.2f} s" for bs, s, _ in b.shapes())
        lines.append(f"| {k} | {shapes} | {100 * b.padding_waste:.1f}% |")
    return "\n".join(lines)


def dynamic_batching_waste(durations, max_batch_len, num_buckets, seed=0):
    """Padding waste of one epoch of SpeechBrain's ``DynamicBatchSampler``
    (the ``fixed_shapes: False`` loader), which pads to each batch's longest."""
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.dataio.sampler import DynamicBatchSampler

    data = DynamicItemDataset({str(i): {"duration": d} for i, d in enumerate(durations)})
    sampler = DynamicBatchSampler(
        data, max_batch_length=max_batch_len, num_buckets=num_buckets,
        length_func=lambda x: x["duration"], shuffle=True, batch_ordering="random",
        seed=seed)
    padded = sum(len(b) * max(durations[i] for i in b) for b in sampler)
    return 1.0 - sum(durations) / padded


def main(argv=None):
    """Reads the manifest, filters durations, prints the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest")
    p.add_argument("--max-batch-len", type=float, default=600.0)
    p.add_argument("--shapes", type=int, nargs="+", default=[1, 2, 4, 6, 8])
    p.add_argument("--num-buckets", type=int, default=10,
                   help="num_buckets of the DynamicBatchSampler compared with")
    p.add_argument("--min-duration", type=float, default=1.0)
    p.add_argument("--max-duration", type=float, default=30.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    rows = read_manifest(args.manifest, data_root=".")
    durations = [r["duration"] for r in rows.values()
                 if args.min_duration <= r["duration"] <= args.max_duration]
    print(f"{args.manifest}: {len(durations)} utterances, {sum(durations) / 3600:.2f} h")
    print(table(durations, args.max_batch_len, args.shapes))
    waste = dynamic_batching_waste(durations, args.max_batch_len, args.num_buckets)
    print(f"\nSpeechBrain's DynamicBatchSampler ({args.num_buckets} buckets, "
          f"any shape): padding waste {100 * waste:.1f}%")


if __name__ == "__main__":
    main()
