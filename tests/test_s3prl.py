"""The s3prl upstream: hub entry, -k, -f, and s3prl's own interfaces.

The last test runs only where s3prl is importable (``make s3prl-check``
builds such an environment); it is skipped otherwise.

Authors
 * latent-rq developers 2026
"""

import os

import pytest
import torch

from latent_rq_brain.sharing.pretrained import PretrainedEncoder, find_checkpoint
from latent_rq_brain.sharing.s3prl_upstream.expert import UpstreamExpert
from latent_rq_brain.sharing.s3prl_upstream.hubconf import latent_rq_local
from test_export import fake_run


def waves():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16000, generator=g), torch.randn(9000, generator=g)]


def test_hub_exports_only_the_local_entry():
    """s3prl lists every public callable of hub.py; names without _local count as ready."""
    namespace = {}
    exec("from latent_rq_brain.sharing.s3prl_upstream.hubconf import *", namespace)
    public = sorted(n for n, v in namespace.items() if not n.startswith("_") and callable(v))
    assert public == ["latent_rq_local"]


def test_hub_k_must_be_one_ckpt_folder(tmp_path):
    run = fake_run(str(tmp_path / "run"))
    newest = find_checkpoint(run).path
    with pytest.raises(ValueError, match=r"give one CKPT\+ folder, e.g. its newest now, -k .*CKPT\+"):
        latent_rq_local(run)
    with pytest.raises(ValueError, match="needs -k"):
        latent_rq_local(None)
    expert = latent_rq_local(newest, refresh=False)
    assert expert.model.info["checkpoint"] == str(newest)


def test_upstream_fine_tunes_under_f_and_is_frozen_without():
    expert = UpstreamExpert(PretrainedEncoder.from_config(PretrainedEncoder.tiny_config(), seed=0))
    # every encoder parameter but the final LayerNorm, which no hidden state passes
    params = {n: p for n, p in expert.named_parameters() if ".pretrained.encoder." in n}
    frozen = sorted(n for n, p in params.items() if not p.requires_grad)
    assert frozen == sorted(n for n in params if ".encoder.norm." in n) and len(frozen) == 2
    # -f: s3prl calls train(), runs forward with autograd, steps an optimizer over parameters()
    expert.train()
    out = expert(waves())
    sum(h.pow(2).mean() for h in out["hidden_states"]).backward()
    assert sorted(n for n, p in params.items() if p.grad is None) == frozen
    before = [h.detach().clone() for h in out["hidden_states"]]
    torch.optim.SGD(params.values(), lr=0.1).step()
    # without -f: eval() and torch.no_grad(); the weights moved, so the states did too
    expert.eval()
    with torch.no_grad():
        after = expert(waves())["hidden_states"]
    assert all(h.grad_fn is None for h in after)
    assert not torch.allclose(before[-1], after[-1])


def _s3prl():
    """s3prl's hub and nn modules, or a skip (s3prl missing or not importable here)."""
    try:
        from s3prl import hub
        from s3prl.nn import Featurizer, S3PRLUpstream
    except Exception as err:  # noqa: BLE001 - e.g. torchaudio >= 2.9 breaks its import
        if os.environ.get("S3PRL_REQUIRED"):  # make s3prl-check: no silent skip
            raise
        pytest.skip(f"s3prl not importable: {type(err).__name__}: {err}")
    return hub, S3PRLUpstream, Featurizer


def test_upstream_through_s3prl_interfaces(tmp_path, monkeypatch):
    hub, S3PRLUpstream, Featurizer = _s3prl()
    ckpt = find_checkpoint(fake_run(str(tmp_path / "run"))).path
    # as after `echo "from s3prl.upstream.latent_rq.hubconf import *" >> s3prl/hub.py`
    monkeypatch.setattr(hub, "latent_rq_local", latent_rq_local, raising=False)
    assert "latent_rq_local" in S3PRLUpstream.available_names()
    assert not any("latent_rq" in n for n in S3PRLUpstream.available_names(only_registered_ckpt=True))
    upstream = S3PRLUpstream("latent_rq_local", path_or_url=str(ckpt)).eval()
    assert upstream.num_layers == 3 and set(upstream.downsample_rates) == {640}
    wavs = torch.nn.utils.rnn.pad_sequence(waves(), batch_first=True)
    wavs_len = torch.LongTensor([16000, 9000])
    with torch.no_grad():
        hs, hs_len = upstream(wavs, wavs_len)
        featurizer = Featurizer(upstream)
        feats, feats_len = featurizer(hs, hs_len)
    assert feats.shape == (2, hs[0].shape[1], 32) and feats_len.tolist() == hs_len[0].tolist()
    ref, ref_lens = PretrainedEncoder.from_checkpoint(ckpt)(wavs, wavs_len / 16000)
    # s3prl trims to, and counts, round(samples / 640) frames; ours count
    # ceil((samples // 160 + 1) / 4), one more here: compare the shared frames
    assert abs(int(ref_lens[0]) - int(hs_len[0][0])) <= 1
    assert abs(hs[-1].shape[1] - ref[-1].shape[1]) <= 1
    n = min(int(ref_lens[0]), hs[-1].shape[1])
    torch.testing.assert_close(hs[-1][0, :n], ref[-1][0, :n], atol=1e-4, rtol=1e-4)
