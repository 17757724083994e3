"""s3prl upstream for latent-rq checkpoints (copy this folder into
``s3prl/upstream/latent_rq/``; see docs/downstream.md, "s3prl (SUPERB)")."""
