"""Objectives beside the masked prediction: named loss terms with YAML
weights, and geometric regularisers of embeddings (SIGReg, whitening)."""
