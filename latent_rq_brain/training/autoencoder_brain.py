"""The autoencoder's Brain: LatentRQBrain plus a bottleneck and a decoder
(:mod:`latent_rq_brain.model.autoencoder` has the parts and the loss terms).

Authors
 * latent-rq developers 2026
"""

import speechbrain as sb
from latent_rq_brain.training.brain import LatentRQBrain


class AutoencoderBrain(LatentRQBrain):
    """:class:`~latent_rq_brain.training.brain.LatentRQBrain` plus a bottleneck and a
    decoder (``modules``: ``bottleneck``, ``decoder``): the forward pass adds
    ``z``, ``z_mean``, ``z_logvar`` and ``reconstruction``; the objectives are
    the named loss terms of the YAML (:class:`~latent_rq_brain.model.autoencoder.Reconstruction`,
    :class:`~latent_rq_brain.model.autoencoder.LatentRegularizer`)."""

    def compute_forward(self, batch, stage):
        """LatentRQBrain's forward pass, then ``z`` (sampled in training for
        a variational bottleneck) and the decoder's Mel frames."""
        out = super().compute_forward(batch, stage)
        if out.get("skipped"):
            return out
        z, mean, logvar = self.modules.bottleneck(out["encoder_out"],
                                                  sample=stage == sb.Stage.TRAIN)
        out.update(z=z, z_mean=mean, z_logvar=logvar,
                   reconstruction=self.modules.decoder(z, out["enc_lens"]))
        return out
