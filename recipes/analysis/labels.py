"""Frame-level labels for the target-quality analysis: phones and speakers.

Labels are given per **encoder frame** (40 ms: Mel frames ``4j .. 4j+3``, the
frames whose stacked Mel vector is quantized for the ``mel`` source), as a list
whose entries are a label string or ``None`` (unlabelled: ignored in scores).

* **Speakers** come from a manifest column (``speaker``, ``spk_id``): one label
  for every frame of an utterance.
* **Phones** come from PocketSphinx (PyPI ``pocketsphinx``, which ships the
  CMU US-English acoustic model, dictionary and a phone language model),
  in 10 ms frames, then a majority vote over the 4 Mel frames of each encoder
  frame (ties: the earliest label):

  - ``align``: forced alignment to a known transcript (two passes: words, then
    phones). Used when the manifest has a transcript column (``wrd``, or
    ``digit`` with the words ``zero`` .. ``nine`` for FSDD). Transcripts with
    a word missing from the CMU dictionary fall back to ``allphone``.
  - ``allphone``: phone recognition with the phone bigram model, no
    transcript (LibriSpeech-mini has none). Noisy: a phone recogniser of this
    kind gets roughly a third of the phones wrong, so PNMI against these labels
    underestimates the true value; use it to *compare* sources on the same
    labels, not as an absolute number.

  Labels are the 39 CMU phones (no stress) plus ``SIL`` and noise fillers
  (``+NSN+``, ``+SPN+`` ...), which are kept as labels of their own unless
  dropped with ``ignore``.

Authors
 * latent-rq developers 2026
"""

import os
from collections import Counter

import numpy as np

DIGIT_WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
}
#: Manifest columns tried, in order, for speaker labels and transcripts.
SPEAKER_COLUMNS = ("speaker", "spk_id", "spk")
TRANSCRIPT_COLUMNS = ("wrd", "words", "transcript", "text", "digit")


def n_mel_frames(n_samples, hop=160):
    """Mel frames of ``n_samples`` samples (STFT with center=True).

    Example
    -------
    >>> n_mel_frames(16000), n_enc_frames(16000)
    (101, 26)
    """
    return int(n_samples) // hop + 1


def n_enc_frames(n_samples, hop=160, downsampling=4):
    """Encoder frames: ceil(Mel frames / downsampling), as the encoder's enc_lens."""
    return -(-n_mel_frames(n_samples, hop) // downsampling)


def segments_to_frames(segments, n_frames, downsampling=4):
    """Encoder-frame labels from 10 ms segments, by majority vote.

    Arguments
    ---------
    segments : list of (str, int, int)
        ``(label, first 10 ms frame, last 10 ms frame inclusive)``.
    n_frames : int
        Encoder frames of the utterance (``enc_lens``).
    downsampling : int
        10 ms frames per encoder frame.

    Returns
    -------
    list
        ``n_frames`` labels (``None`` where no segment covers the frame).

    Example
    -------
    >>> segments_to_frames([("SIL", 0, 2), ("AH", 3, 8)], 3)
    ['SIL', 'AH', 'AH']
    >>> segments_to_frames([("S", 0, 1), ("IY", 2, 3)], 2)  # tie: earliest
    ['S', None]
    """
    fine = [None] * (n_frames * downsampling)
    for label, start, end in segments:
        for t in range(max(0, int(start)), min(len(fine), int(end) + 1)):
            fine[t] = label
    out = []
    for j in range(n_frames):
        votes = [v for v in fine[j * downsampling : (j + 1) * downsampling] if v is not None]
        if not votes:
            out.append(None)
            continue
        counts = Counter(votes)
        best = max(counts.values())
        out.append(next(v for v in votes if counts[v] == best))
    return out


def find_column(row, candidates, what, path="manifest"):
    """The first of ``candidates`` present (case-insensitively) in ``row``.

    Example
    -------
    >>> find_column({"Speaker": "a", "wav": "x"}, SPEAKER_COLUMNS, "speaker")
    'Speaker'
    """
    lower = {k.lower(): k for k in row if k is not None}
    for c in candidates:
        if c.lower() in lower:
            return lower[c.lower()]
    raise ValueError(
        f"{path} has no {what} column: tried {list(candidates)}, it has "
        f"{sorted(k for k in row if k is not None)}"
    )


def transcript_words(text):
    """Lower-case words of a transcript; a lone digit becomes its English word.

    Example
    -------
    >>> transcript_words("7"), transcript_words("Hello, WORLD! it's")
    ('seven', "hello world it's")
    """
    text = str(text).strip()
    if text in DIGIT_WORDS:
        return DIGIT_WORDS[text]
    keep = "".join(ch if ch.isalnum() or ch in "' " else " " for ch in text.lower())
    return " ".join(keep.split())


class PocketSphinxPhones:
    """Phone segments of 16 kHz speech with PocketSphinx's US-English model.

    Arguments
    ---------
    sample_rate : int
        Must be 16000 (the model's rate).

    Example
    -------
    >>> import pytest; _ = pytest.importorskip("pocketsphinx")
    >>> ps = PocketSphinxPhones()
    >>> segs, how = ps(np.zeros(8000, dtype="float32"))
    >>> how, all(isinstance(s[0], str) for s in segs)
    ('allphone', True)
    """

    def __init__(self, sample_rate=16000):
        try:
            import pocketsphinx
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError(
                "phone labels need PocketSphinx: pip install pocketsphinx==5.1.1"
            ) from err
        if sample_rate != 16000:
            raise ValueError(f"PocketSphinx's model needs 16000 Hz audio, got {sample_rate}")
        self._ps = pocketsphinx
        model = os.path.join(pocketsphinx.get_model_path(), "en-us")
        self._aligner = pocketsphinx.Decoder(samprate=16000, lm=None, logfn=os.devnull)
        self._recogniser = pocketsphinx.Decoder(
            samprate=16000,
            lm=None,
            allphone=os.path.join(model, "en-us-phone.lm.bin"),
            backtrace=True,
            beam=1e-20,
            pbeam=1e-20,
            lw=2.0,
            logfn=os.devnull,
        )

    @staticmethod
    def _pcm(wav):
        wav = np.asarray(wav, dtype=np.float32)
        return (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2").tobytes()

    def can_align(self, words):
        """Whether every word is in the pronunciation dictionary."""
        return bool(words) and all(
            self._aligner.lookup_word(w) is not None for w in words.split()
        )

    def align(self, wav, words):
        """Phone segments of ``wav`` forced-aligned to ``words``."""
        pcm = self._pcm(wav)
        d = self._aligner
        d.set_align_text(words)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        d.set_alignment()
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        alignment = d.get_alignment()
        if alignment is None:
            raise RuntimeError(f"PocketSphinx could not align the transcript {words!r}")
        return [
            (p.name, p.start, p.start + p.duration - 1) for w in alignment for p in w
        ]

    def recognise(self, wav):
        """Phone segments of ``wav`` from phone recognition (no transcript)."""
        d = self._recogniser
        d.start_utt()
        d.process_raw(self._pcm(wav), full_utt=True)
        d.end_utt()
        return [(s.word, s.start_frame, s.end_frame) for s in d.seg()]

    def __call__(self, wav, words=None):
        """``(segments, how)``: forced alignment when ``words`` can be aligned,
        else phone recognition; ``how`` is ``"align"`` or ``"allphone"``."""
        if words and self.can_align(words):
            try:
                return self.align(wav, words), "align"
            except RuntimeError:
                pass
        return self.recognise(wav), "allphone"
