"""Sharing trained encoders: exported model folders, pre-trained encoders
from checkpoints, weights-only loading of checkpoint files, and the s3prl
upstream."""
