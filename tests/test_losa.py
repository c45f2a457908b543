import pytest
import torch
import torch.nn.functional as F
from actloc.methods.detector import Detector
from actloc.methods.losa import LongRange, ShortRange
from actloc.settings import HeadConfig, LosaConfig
from conftest import graph_leaves


HEAD = HeadConfig(width=16, levels=3, window=5, heads=2, regression_ranges=((0, 4), (4, 8), (8, 10000)))
C, L, T, STEPS = 32, 3, 16, 4


def batch(seed=0, padded_from=None):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(2, T, dtype=torch.bool)
    if padded_from:
        mask[1, padded_from:] = False
    return {"pooled": torch.randn(2, L, T, C, generator=g), "temporal": torch.randn(2, L, T, STEPS, C, generator=g),
            "mask": mask}


def detectors(seed=0):
    torch.manual_seed(seed)
    head_only = Detector("head_only", C, L, 3, HEAD)
    torch.manual_seed(seed)
    losa = Detector("losa", C, L, 3, HEAD, LosaConfig(reduction=2, heads=4))
    return head_only, losa


def test_untrained_losa_is_exactly_head_only():
    head_only, losa = detectors()
    b = batch(padded_from=11)
    for ours, theirs in zip(head_only(b), losa(b)):
        for a, c in zip(ours, theirs):
            assert torch.equal(a, c)
    # The adapters themselves are not zero: only the gates make the identity.
    assert any(p.abs().sum() > 0 for p in losa.features.short[0].up.parameters())


def train_step(net, b):
    outputs = net(b)
    targets = [(torch.tensor([[2.0, 9.0]]), torch.tensor([1])), (torch.tensor([[1.0, 5.0]]), torch.tensor([0]))]
    return net.head.loss(outputs, targets)["loss"]


def test_no_backbone_tensor_is_in_the_training_graph_and_gradients_reach_every_adapter():
    _, losa = detectors()
    b = batch()
    loss = train_step(losa, b)
    assert not any(t.requires_grad for t in (b["pooled"], b["temporal"]))
    assert graph_leaves(loss) == {id(p) for p in losa.parameters()}  # exactly the method's parameters
    loss.backward()
    # Step 0: the gates get a gradient (the adapters' outputs), the adapters none yet (gates are 0).
    assert (losa.features.alpha.grad.abs().sum(1) > 0).all() and (losa.features.beta.grad.abs().sum(1) > 0).all()
    torch.optim.AdamW(losa.parameters(), lr=1e-2).step()
    losa.zero_grad()
    train_step(losa, b).backward()
    for name, p in losa.features.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_short_range_sees_only_its_neighbours_and_real_snippets():
    torch.manual_seed(0)
    short = ShortRange(C, 16, 4, window=2)
    b = batch(padded_from=12)
    x, tokens, mask = b["pooled"][:, 0], b["temporal"][:, 0], b["mask"]
    out = short(x, tokens, mask)
    changed = tokens.clone()
    changed[:, 8] += 5.0  # snippet 8 is a neighbour of 6..10 only
    diff = (short(x, changed, mask) - out).abs().sum(-1)[0]
    assert (diff[6:11] > 0).all() and diff[:6].sum() == 0 and diff[11:].sum() == 0
    padded = tokens.clone()
    padded[1, 12:] = 100.0
    torch.testing.assert_close(short(x, padded, mask)[1, :12], out[1, :12])


def test_short_range_equals_attention_written_snippet_by_snippet():
    torch.manual_seed(0)
    short, window, heads = ShortRange(C, 16, 4, window=2), 2, 4
    b = batch(padded_from=12)
    x, tokens, mask = b["pooled"][:, 0], b["temporal"][:, 0], b["mask"]
    q = short.query(short.norm_query(x)).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, H, T, e)
    k, v = short.key_value(short.norm_tokens(tokens)).chunk(2, -1)  # (B, T, t, d)
    expected = torch.zeros(2, T, 16)
    for row in range(2):
        for i in range(T):
            near = [j for j in range(i - window, i + window + 1) if 0 <= j < T and mask[row, j]]
            keys, values = (z[row, near].flatten(0, 1).unflatten(-1, (heads, -1)).transpose(0, 1) for z in (k, v))
            expected[row, i] = F.scaled_dot_product_attention(q[row, :, i:i + 1], keys, values).transpose(0, 1).flatten()
    torch.testing.assert_close(short(x, tokens, mask)[mask], short.up(expected)[mask])  # padding: don't care


@pytest.mark.parametrize("window", [None, 3])
def test_long_range_attends_over_the_video_or_its_band_and_ignores_padding(window):
    torch.manual_seed(0)
    long = LongRange(C, 16, 4, window)
    b = batch(padded_from=12)
    x, mask = b["pooled"][:, 0], b["mask"]
    out = long(x, mask)
    changed = x.clone()
    changed[:, 0] += 5.0
    reach = (long(changed, mask) - out).abs().sum(-1)[0]
    assert (reach > 0).all() if window is None else (reach[:4] > 0).all() and reach[4:].sum() == 0
    padded = x.clone()
    padded[1, 12:] = 100.0
    torch.testing.assert_close(long(padded, mask)[1, :12], out[1, :12])


def test_losa_refuses_a_cache_without_temporal_tokens_and_a_bad_width():
    _, losa = detectors()
    b = batch()
    b["temporal"] = None
    with pytest.raises(ValueError, match="temporal"):
        losa(b)
    with pytest.raises(ValueError, match="multiple of heads"):
        Detector("losa", 30, 2, 3, HEAD, LosaConfig(reduction=4, heads=8))
