"""The model: the encoder contract and its architectures (Conformer,
Transformer, Zipformer-like), padding-exact features, span masking, the softmax
heads, paper layer indices, SpeechBrain patches, and the autoencoder's
bottleneck and decoder. The architecture YAMLs live here too."""
