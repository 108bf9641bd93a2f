"""U-Net backbone, linear and prototype heads, the model factory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dspseg.models import HEADS, LinearHead, PrototypeHead, SegmentationModel, UNet, build_model


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [(40, 56), (37, 45), (5, 3), (32, 16)])
def test_unet_any_size_keeps_height_and_width(in_channels: int, size: tuple[int, int]) -> None:
    net = UNet(in_channels=in_channels, width=4, levels=5)
    out = net(torch.randn(2, in_channels, *size))
    assert out.shape == (2, 4, *size)
    assert net.out_channels == 4
    assert torch.isfinite(out).all()


def test_unet_channel_plan_and_levels() -> None:
    net = UNet(in_channels=1, width=4, levels=3)
    assert [enc[0].out_channels for enc in net.encoders] == [4, 8, 16]
    assert net.multiple == 4
    assert net(torch.randn(1, 1, 9, 13)).shape == (1, 4, 9, 13)


def test_unet_padding_does_not_change_aligned_input() -> None:
    """Cropping an aligned input's result must equal running it directly (no padding on 32×48)."""
    net = UNet(in_channels=1, width=4, levels=4).eval()
    x = torch.randn(1, 1, 32, 48)
    assert torch.equal(net._pad(x), x)
    padded = net._pad(x[..., :30, :45])
    assert padded.shape[-2:] == (32, 48)
    assert torch.equal(padded[..., :30, :45], x[..., :30, :45])


def test_unet_xavier_init() -> None:
    net = UNet(in_channels=1, width=16, levels=3)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs
    for m in convs:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert m.weight.abs().max() <= bound + 1e-7
        if m.weight.numel() >= 2000:  # std of U(-b, b) is b / sqrt(3); PyTorch's default is far smaller
            assert float(m.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.1)
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.count_nonzero(m.bias) == 0


def test_unet_rejects_bad_input() -> None:
    net = UNet(in_channels=3, width=4)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(2, 1, 8, 8\)"):
        net(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="width"):
        UNet(width=0)


# ---------------------------------------------------------------------------------------- heads


def test_linear_head_shapes() -> None:
    head = LinearHead(6, 4)
    out = head(torch.randn(2, 6, 7, 9))
    assert set(out) == {"logits"} and out["logits"].shape == (2, 4, 7, 9)
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        head(torch.randn(2, 5, 7, 9))


def test_prototype_head_shapes_and_unit_embeddings() -> None:
    head = PrototypeHead(6, n_classes=4, n_prototypes=3, embed_dim=8, tau=0.05, return_embeddings=True)
    out = head(torch.randn(2, 6, 7, 9))
    assert out["scores"].shape == out["logits"].shape == (2, 4, 7, 9)
    assert out["embeddings"].shape == (2, 8, 7, 9)
    norms = out["embeddings"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert out["scores"].abs().max() <= 1 + 1e-6
    assert torch.allclose(out["logits"], out["scores"] / 0.05)
    assert torch.equal(out["logits"].argmax(1), out["scores"].argmax(1))
    assert head.prototypes.shape == (4, 3, 8)
    assert torch.allclose(head.prototypes.norm(dim=-1), torch.ones(4, 3), atol=1e-6)


def test_prototype_scores_match_brute_force_eq_1_2() -> None:
    head = PrototypeHead(5, n_classes=3, n_prototypes=4, embed_dim=6, return_embeddings=True).eval()
    with torch.no_grad():  # prototypes of different lengths: eq. 1 divides by ‖p‖ anyway
        head.prototypes.mul_(torch.rand(3, 4, 1) * 3 + 0.2)
    out = head(torch.randn(2, 5, 3, 4))
    f, s = out["embeddings"], out["scores"]
    expected = torch.zeros_like(s)
    for c in range(3):
        for k in range(4):
            p = head.prototypes[c, k].detach()
            for b in range(2):
                for y in range(3):
                    for x in range(4):
                        v = f[b, :, y, x]
                        expected[b, c, y, x] += (v @ p) / (v.norm() * p.norm()) / 4
    assert torch.allclose(s, expected, atol=1e-6)


def test_prototypes_renormalised_every_forward() -> None:
    head = PrototypeHead(5, n_classes=3, n_prototypes=2, embed_dim=4).eval()
    x = torch.randn(1, 5, 4, 4)
    before = head(x)["scores"]
    with torch.no_grad():
        head.prototypes.mul_(torch.tensor([0.1, 2.0, 7.0])[:, None, None])
    assert torch.allclose(head(x)["scores"], before, atol=1e-6)
    assert not torch.allclose(head.prototypes.norm(dim=-1), torch.ones(3, 2))
    head.renormalize_()
    assert torch.allclose(head.prototypes.norm(dim=-1), torch.ones(3, 2), atol=1e-6)
    assert torch.allclose(head(x)["scores"], before, atol=1e-6)


def test_prototype_head_gradcheck_float64() -> None:
    head = PrototypeHead(3, n_classes=2, n_prototypes=2, embed_dim=4, tau=0.5).double()
    feats = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    protos = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(f: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return functional_call(head, {"prototypes": p}, (f,))["logits"]

    assert torch.autograd.gradcheck(fn, (feats, protos), eps=1e-6, atol=1e-5)


def _reference_prototype_head(head: PrototypeHead, feats: torch.Tensor) -> torch.Tensor:
    """The head as eq. 1-2 read, with autograd: unit embeddings f (B, D, H, W), unit prototypes
    p (C, K, D), s_c = mean_k cos(f, p_c^k) as an einsum over every prototype."""
    f = F.normalize(head.embed(feats), dim=1)
    p = F.normalize(head.prototypes, dim=-1)
    return torch.einsum("bdhw,ckd->bckhw", f, p).mean(dim=2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_prototype_head_fast_path_matches_eq_1_2_with_autograd(monkeypatch, channels_last: bool) -> None:
    """Scores (max |Δ| ≤ 1e-5) and every gradient of the blocked head with its hand-written
    backward against eq. 1-2 through autograd, over several blocks and a partial last one."""
    import dspseg.models.cosine_rows as cosine_rows

    monkeypatch.setattr(cosine_rows, "block_rows", lambda device: 50)
    torch.manual_seed(0)
    head = PrototypeHead(6, n_classes=4, n_prototypes=5, embed_dim=16, tau=0.05)
    ref = PrototypeHead(6, n_classes=4, n_prototypes=5, embed_dim=16, tau=0.05)
    ref.load_state_dict(head.state_dict())
    with torch.no_grad():  # prototypes of different lengths
        for h in (head, ref):
            h.prototypes.mul_(torch.linspace(0.3, 3.0, 20).view(4, 5, 1))
    x = torch.randn(3, 6, 11, 13)  # 429 rows: 8 full blocks and one of 29
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3, 4, 11, 13)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = head(xa)
    expected = _reference_prototype_head(ref, xb)
    assert (out["scores"] - expected).abs().max() <= 1e-5
    (out["logits"] * weight).sum().backward()
    (expected / 0.05 * weight).sum().backward()
    assert xa.grad.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    pairs = [(xa.grad, xb.grad)] + [(p.grad, q.grad) for p, q in zip(head.parameters(), ref.parameters())]
    for got, want in pairs:
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert torch.equal(head.embed[0].running_mean, ref.embed[0].running_mean)
    with torch.no_grad():  # inference takes the unblocked path: the same scores
        assert (head(x)["scores"] - out["scores"]).abs().max() <= 1e-6


def test_prototype_head_fast_backward_matches_autograd_under_autocast() -> None:
    """bfloat16 products, float32 scores: the hand-written backward against autograd through the same ops."""
    from dspseg.models.cosine_rows import _CosineRows, cosine_rows, pixel_rows

    torch.manual_seed(0)
    head = PrototypeHead(4, n_classes=3, n_prototypes=2, embed_dim=8)
    bn, conv1, act, conv2 = head.embed
    feats = torch.randn(2, 4, 5, 7)
    g = torch.randn(70, 3)
    grads = []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for fast in (True, False):
            x = feats.clone().requires_grad_()
            params = [conv1.weight.flatten(1), conv1.bias, conv2.weight.flatten(1), conv2.bias]
            dirs = head.normalized_prototypes(torch.float32).mean(1)
            args = (*params, dirs, act.negative_slope, torch.bfloat16)
            with torch.autocast("cpu", enabled=False):
                s = _CosineRows.apply(x, *args) if fast else cosine_rows(pixel_rows(x), *args)[3]
            assert s.dtype == torch.float32
            grads.append([s, *torch.autograd.grad((s * g).sum(), [x, conv1.weight, conv2.bias, head.prototypes])])
    assert torch.equal(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1:], grads[1][1:]):  # bfloat16 rounding (weight gradients: fp32 sums over blocks)
        assert torch.allclose(a, b, rtol=2e-2, atol=1e-2 * float(b.abs().max()))


def test_prototype_head_backward_twice_with_retained_graph() -> None:
    head = PrototypeHead(3, n_classes=2, n_prototypes=2, embed_dim=4)
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = head(x)["logits"].square().sum()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    assert torch.allclose(x.grad, 2 * first)


def test_prototype_model_gradients_reach_prototypes_and_backbone() -> None:
    model = build_model(1, 3, width=4, head="prototype", n_prototypes=2, embed_dim=8)
    x, y = torch.randn(2, 1, 20, 24), torch.randint(0, 3, (2, 20, 24))
    F.cross_entropy(model(x)["logits"], y).backward()
    first_conv = model.backbone.encoders[0][0].weight
    for g in (model.head.prototypes.grad, first_conv.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_prototype_scores_float32_under_autocast() -> None:
    head = PrototypeHead(4, n_classes=2, n_prototypes=2, embed_dim=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(torch.randn(1, 4, 3, 3))
    assert out["scores"].dtype == out["logits"].dtype == torch.float32


def test_prototype_head_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="tau"):
        PrototypeHead(4, 2, tau=0.0)
    with pytest.raises(ValueError, match="n_prototypes"):
        PrototypeHead(4, 2, n_prototypes=0)


# ---------------------------------------------------------------------------------------- factory


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_build_model(head: str, in_channels: int) -> None:
    model = build_model(in_channels, 4, width=4, head=head)
    out = model(torch.randn(2, in_channels, 37, 45))
    assert out["logits"].shape == (2, 4, 37, 45)
    assert isinstance(model.head, HEADS[head])


def test_build_model_errors() -> None:
    with pytest.raises(ValueError, match="unknown head 'mlp'"):
        build_model(1, 3, width=4, head="mlp")
    with pytest.raises(ValueError, match="bad option for head 'linear'"):
        build_model(1, 3, width=4, head="linear", tau=0.1)


def test_any_backbone_plugs_in() -> None:
    backbone = nn.Conv2d(2, 5, 3, padding=1)  # has out_channels
    model = SegmentationModel(backbone, PrototypeHead(5, 3, n_prototypes=2, embed_dim=4))
    assert model(torch.randn(1, 2, 6, 7))["logits"].shape == (1, 3, 6, 7)
    bare = SegmentationModel(backbone, nn.Conv2d(5, 3, 1))  # a head returning a tensor
    assert set(bare(torch.randn(1, 2, 6, 7))) == {"logits"}
    with pytest.raises(ValueError, match="out_channels"):
        SegmentationModel(nn.ReLU(), LinearHead(5, 3))
