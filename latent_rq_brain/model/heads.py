"""Softmax heads: one linear classifier per codebook, computed as one matmul.

Authors
 * latent-rq developers 2026
"""

import torch


class CodebookHeads(torch.nn.Module):
    """N linear softmax heads over V codewords, as one (d -> N * V) layer.

    Arguments
    ---------
    input_size : int
        Encoder width d.
    n_codebooks : int
        Number of codebooks N.
    codebook_size : int
        Codewords per codebook V.

    Example
    -------
    >>> heads = CodebookHeads(16, 3, 10)
    >>> heads(torch.randn(7, 16)).shape
    torch.Size([7, 3, 10])
    """

    def __init__(self, input_size, n_codebooks, codebook_size):
        super().__init__()
        self.n_codebooks = int(n_codebooks)
        self.codebook_size = int(codebook_size)
        self.linear = torch.nn.Linear(input_size, self.n_codebooks * self.codebook_size)

    def reset_parameters(self):
        """Fresh initialisation (PyTorch's Linear default)."""
        self.linear.reset_parameters()

    def forward(self, h):
        """(M, d) encoder frames -> (M, N, V) logits."""
        return self.linear(h).view(h.shape[0], self.n_codebooks, self.codebook_size)
