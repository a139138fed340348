"""Progressive GAN layers and networks (2D and 3D); torch only, no Lightning import."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from matdyn.models import (
    Discriminator,
    EqualizedConv,
    EqualizedLinear,
    Generator,
    MinibatchStd,
    PixelNorm,
    downsample,
    stage_resolution,
    upsample,
)

FILTERS = [16, 16, 8]  # stages at 4, 8, 16 px


def _nets(ndim: int, channels: int, seed: int = 0) -> tuple[Generator, Discriminator]:
    torch.manual_seed(seed)
    return (Generator(latent_dim=8, channels=channels, ndim=ndim, filters=FILTERS),
            Discriminator(channels=channels, ndim=ndim, filters=FILTERS))


@pytest.mark.parametrize("ndim,channels", [(2, 1), (2, 2), (3, 3)])
def test_shapes_at_every_stage_and_no_growth(ndim, channels):
    g, d = _nets(ndim, channels)
    keys_g, keys_d = list(g.state_dict()), list(d.state_dict())
    z = torch.randn(4, 8)
    for stage in range(len(FILTERS)):
        r = stage_resolution(stage)
        for alpha in (0.0, 0.3, 1.0):
            x = g(z, stage, alpha)
            assert x.shape == (4, channels, *(r,) * ndim)
            s = d(x, stage, alpha)
            assert s.shape == (4,) and torch.isfinite(s).all()
    # all stages exist from the start: nothing is added by running later stages
    assert list(g.state_dict()) == keys_g and list(d.state_dict()) == keys_d
    assert g.max_resolution == d.max_resolution == 16


@pytest.mark.parametrize("ndim", [2, 3])
def test_generator_fade_endpoints(ndim):
    g, _ = _nets(ndim, 2)
    z = torch.randn(3, 8)
    with torch.no_grad():
        for stage in (1, 2):
            # alpha = 0: exactly the previous stage's image, nearest-upsampled
            assert torch.equal(g(z, stage, 0.0), upsample(g(z, stage - 1, 1.0)))
            # alpha = 1: exactly the new path (blocks up to `stage`, then its to-image layer)
            h = g.base(g.dense(g.latent_norm(z)).view(3, FILTERS[0], *(4,) * ndim))
            for k in range(1, stage + 1):
                h = g.blocks[k - 1](h)
            assert torch.equal(g(z, stage, 1.0), g.to_image[stage](h))
            # in between: the linear blend of the two
            mid = g(z, stage, 0.25)
            assert torch.allclose(mid, 0.75 * g(z, stage, 0.0) + 0.25 * g(z, stage, 1.0), atol=1e-5)
            # a tensor alpha (no recompiles under torch.compile) gives the same result
            assert torch.allclose(g(z, stage, torch.tensor(0.25)), mid, atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_discriminator_fade_endpoints(ndim):
    _, d = _nets(ndim, 1)
    with torch.no_grad():
        for stage in (1, 2):
            x = torch.randn(4, 1, *(stage_resolution(stage),) * ndim)
            # alpha = 0: exactly the previous stage's critic on the downsampled input
            assert torch.equal(d(x, stage, 0.0), d(downsample(x), stage - 1, 1.0))
            # alpha = 1: exactly the new path
            h = d.blocks[stage - 1](d.from_image[stage](x))
            for k in range(stage - 1, 0, -1):
                h = d.blocks[k - 1](h)
            assert torch.equal(d(x, stage, 1.0), d.head(h).squeeze(1))


def test_wrong_stage_or_input_is_rejected():
    g, d = _nets(2, 1)
    with pytest.raises(ValueError, match="stage 3"):
        g(torch.randn(2, 8), 3)
    with pytest.raises(AssertionError, match="expected a tensor shaped"):
        d(torch.randn(2, 1, 8, 8), 2)  # stage 2 wants 16 px
    with pytest.raises(ValueError, match="ndim"):
        Generator(ndim=1)


def test_equalized_learning_rate_scaling():
    torch.manual_seed(0)
    conv = EqualizedConv(64, 32, 3, ndim=2)
    lin = EqualizedLinear(256, 128, gain=1.0)
    conv3 = EqualizedConv(16, 8, 3, ndim=3, gain=1.0)
    # stored weights are unit-variance; the runtime scale is gain / sqrt(fan_in)
    for layer in (conv, lin, conv3):
        assert abs(layer.weight.std().item() - 1.0) < 0.05
        assert abs(layer.weight.mean().item()) < 0.05
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))
    assert lin.scale == pytest.approx(1 / math.sqrt(256))
    assert conv3.scale == pytest.approx(1 / math.sqrt(16 * 27))
    x = torch.randn(2, 64, 8, 8)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    # with gain 1 a unit-variance input keeps unit variance through the layer
    y = lin(torch.randn(4096, 256))
    assert abs(y.std().item() - 1.0) < 0.05
    assert conv3(torch.randn(8, 16, 8, 8, 8)).shape == (8, 8, 8, 8, 8)


def test_pixel_norm_gives_unit_rms():
    x = 5.0 * torch.randn(3, 7, 4, 4) + 2.0
    y = PixelNorm()(x)
    rms = y.square().mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-5)


def test_minibatch_std_adds_one_channel():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    y = MinibatchStd(group_size=4)(x)
    assert y.shape == (4, 4, 5, 5)
    assert torch.equal(y[:, :3], x)
    # one group of 4: the mean over features of the per-feature (biased) batch std
    expected = torch.sqrt(x.var(dim=0, unbiased=False) + 1e-8).mean()
    assert torch.allclose(y[:, 3], expected.expand(4, 5, 5), atol=1e-6)
    # identical samples have no spread
    same = MinibatchStd()(torch.ones(4, 2, 4, 4, 4))
    assert same.shape == (4, 3, 4, 4, 4) and same[:, 2].abs().max() < 1e-3
    # a batch of 6 with group 4 falls back to groups of 3 (2 groups, 2 values)
    y6 = MinibatchStd(group_size=4)(torch.randn(6, 2, 4, 4))
    assert y6.shape == (6, 3, 4, 4) and y6[:, 2, 0, 0].unique().numel() == 2


def test_resampling_helpers():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(downsample(upsample(x)), x)
    v = torch.randn(2, 3, 4, 4, 4)
    assert upsample(v).shape == (2, 3, 8, 8, 8) and downsample(v).shape == (2, 3, 2, 2, 2)


def test_channels_last_matches_contiguous():
    g, d = _nets(2, 1)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        ref = d(x, 2, 0.5)
        d_cl = d.to(memory_format=torch.channels_last)
        out = d_cl(x.contiguous(memory_format=torch.channels_last), 2, 0.5)
    assert torch.allclose(ref, out, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_fade_branch_is_skipped_at_alpha_one_without_changing_the_result(ndim):
    g, _ = _nets(ndim, 1)
    calls = []
    g.to_image[1].register_forward_hook(lambda *_: calls.append(1))
    z = torch.randn(3, 8)
    with torch.no_grad():
        skipped = g(z, 2, 1.0)
        assert calls == []  # the previous stage's to-image layer did not run
        blended = g(z, 2, torch.tensor(1.0))  # a tensor alpha always blends (static graphs)
    assert calls == [1] and torch.equal(skipped, blended)
    # the critic alike: its previous from-image layer runs only when blending
    _, d = _nets(ndim, 1)
    seen = []
    d.from_image[1].register_forward_hook(lambda *_: seen.append(1))
    x = torch.randn(4, 1, *(16,) * ndim)
    skipped, blended = d(x, 2, 1.0), d(x, 2, torch.tensor(1.0))
    assert seen == [1] and torch.equal(skipped, blended)
    skipped.sum().backward()
    assert d.from_image[1][0].weight.grad is None and d.from_image[2][0].weight.grad is not None


def test_bf16_autocast_keeps_a_float32_output_layer():
    g, _ = _nets(2, 1)
    z = torch.randn(4, 8)
    with torch.no_grad():
        ref = g(z, 2, 0.5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = g(z, 2, 0.5)
    assert out.dtype == torch.float32  # full grey-level resolution, not bf16's 256 per octave
    assert torch.allclose(out, ref, atol=0.1) and not torch.equal(out, ref)
    assert out.flatten().unique().numel() > 0.9 * out.numel()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsampled_conv_is_upsample_then_conv(ndim, channels_last):
    """The transposed-conv form (issue 15) is the same linear map as nearest ×2 + 3×3 conv:
    outputs and gradients (input, weight, bias) agree to float rounding."""
    torch.manual_seed(1)
    conv = EqualizedConv(6, 5, 3, ndim)
    conv.bias.data.normal_()
    x = torch.randn(2, 6, *(4,) * ndim)
    if channels_last:
        fmt = torch.channels_last if ndim == 2 else torch.channels_last_3d
        x, conv = x.contiguous(memory_format=fmt), conv.to(memory_format=fmt)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref = conv(upsample(x1))
    fast = conv.forward_upsampled(x2)
    assert fast.shape == ref.shape == (2, 5, *(8,) * ndim)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    gx1, gw1, gb1 = torch.autograd.grad(ref, (x1, conv.weight, conv.bias), g)
    gx2, gw2, gb2 = torch.autograd.grad(fast, (x2, conv.weight, conv.bias), g)
    for a, b in ((gx1, gx2), (gw1, gw2), (gb1, gb2)):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="3-tap"):
        EqualizedConv(6, 5, 1, ndim).forward_upsampled(x)


def _plain_copy(net: torch.nn.Module) -> torch.nn.Module:
    """The same network with every in-place activation / pixel norm switched off."""
    import copy

    net = copy.deepcopy(net)
    for m in net.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return net


@pytest.mark.parametrize("ndim", [2, 3])
def test_inplace_layers_change_neither_values_nor_gradients(ndim):
    """In-place LeakyReLU / PixelNorm (issue 15) give bit-identical scores and gradients,
    including the critic's second-order gradient-penalty path."""
    from matdyn.training.losses import gradient_penalty

    g, d = _nets(ndim, 1)
    g2, d2 = _plain_copy(g), _plain_copy(d)
    assert any(getattr(m, "inplace", False) for m in d.modules())
    assert not any(getattr(m, "inplace", False) for m in d2.modules())
    z = torch.randn(4, 8)
    real = torch.randn(4, 1, *(16,) * ndim)
    grads = []
    for gen, crit in ((g, d), (g2, d2)):
        torch.manual_seed(3)  # the penalty's interpolation weights
        fake = gen(z, 2, 0.5)
        loss = crit(fake, 2, 0.5).mean() + gradient_penalty(
            lambda x, c=crit: c(x, 2, 0.5), real, fake.detach())
        params = list(gen.parameters()) + list(crit.parameters())
        grads.append(torch.autograd.grad(loss, params, allow_unused=True))
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b)
    with torch.no_grad():  # inference: the latents handed in are never overwritten
        z0 = z.clone()
        g(z, 2, 1.0)
        assert torch.equal(z, z0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_linear_upsampling_generator_keeps_shapes_fade_and_config(ndim):
    # the linear filter ([1, 3, 3, 1] / 4 per axis) keeps a constant and reproduces a ramp
    # away from the border; averaging it back down returns the interior exactly
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    up = upsample(ramp, "linear")
    assert up.shape == (1, 1, 16, 16)
    assert torch.allclose(up[0, 0, 5, 1:-1], torch.arange(1, 15) / 2.0 - 0.25)
    assert torch.allclose(downsample(up)[..., 1:-1], ramp[..., 1:-1])
    assert torch.equal(upsample(torch.ones(1, 2, *(4,) * ndim), "linear"),
                       torch.ones(1, 2, *(8,) * ndim))
    with pytest.raises(ValueError, match="upsample mode"):
        upsample(ramp, "cubic")

    torch.manual_seed(0)
    g = Generator(latent_dim=8, channels=2, ndim=ndim, filters=FILTERS, upsample="linear")
    assert g.config["upsample"] == "linear"
    z = torch.randn(3, 8)
    with torch.no_grad():
        for stage in (1, 2):
            x = g(z, stage, 1.0)
            assert x.shape == (3, 2, *(stage_resolution(stage),) * ndim)
            # alpha = 0 is the previous stage's image, upsampled with the same filter
            assert torch.equal(g(z, stage, 0.0), upsample(g(z, stage - 1, 1.0), "linear"))
        # same weights, other filter: a different image (the option is not ignored)
        h = Generator(**{**g.config, "upsample": "nearest"})
        h.load_state_dict(g.state_dict())
        assert not torch.allclose(h(z, 2, 1.0), g(z, 2, 1.0), atol=1e-3)
        rebuilt = Generator(**g.config)
        rebuilt.load_state_dict(g.state_dict())
        assert torch.equal(rebuilt(z, 2, 1.0), g(z, 2, 1.0))
    with pytest.raises(ValueError, match="upsample must be"):
        Generator(latent_dim=8, filters=FILTERS, upsample="bicubic")


@pytest.mark.parametrize("ndim", [2, 3])
def test_output_floor_bounds_the_image_and_keeps_it_above_the_kink(ndim):
    torch.manual_seed(0)
    lin = Generator(latent_dim=8, channels=3, ndim=ndim, filters=FILTERS)
    flo = Generator(**{**lin.config, "output_floor": -1.0})
    flo.load_state_dict(lin.state_dict())  # no new parameters: same weights, floored output
    assert "output_floor" not in lin.config and flo.config["output_floor"] == -1.0
    # scale the to-image layers up so the linear images reach far below the floor
    with torch.no_grad():
        for g in (lin, flo):
            for layer in g.to_image:
                layer.weight.mul_(20.0)
        z = torch.randn(16, 8)
        for alpha in (0.3, 1.0):
            a, b = lin(z, 2, alpha), flo(z, 2, alpha)
            assert a.min() < -3.0  # a linear output goes where densities cannot
            assert b.min() >= -1.0  # the floor holds, fade-in blend included
            # softplus(β (a + 1)) / β: a voxel half a unit above the floor is within 7e-4 of
            # the linear value, half a unit below within 7e-4 of the floor
            above, below = a > -0.5, a < -1.5
            assert above.any() and below.any()
            assert torch.allclose(b[above], a[above], atol=7e-4)
            assert torch.all(b[below] - (-1.0) < 7e-4)
        rebuilt = Generator(**flo.config)
        rebuilt.load_state_dict(flo.state_dict())
        assert torch.equal(rebuilt(z, 2, 1.0), flo(z, 2, 1.0))
    with pytest.raises(ValueError, match="output_floor must lie"):
        Generator(latent_dim=8, filters=FILTERS, output_floor=1.5)


def _penalty_grads(d, x_real, x_fake, mix, stage, alpha, *, penalty_pass, bf16=False):
    """Critic parameter gradients of the gradient penalty, with or without penalty_pass."""
    import contextlib

    import matdyn.training.losses as losses
    from matdyn.models import layers

    d.zero_grad(set_to_none=True)
    saved = losses.penalty_pass
    losses.penalty_pass = layers.penalty_pass if penalty_pass else contextlib.nullcontext
    try:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            gp = losses.gradient_penalty(lambda x: d(x, stage, alpha).float(), x_real, x_fake,
                                         gp_mix=mix)
            gp.backward()
    finally:
        losses.penalty_pass = saved
    return gp.detach(), {n: (torch.zeros_like(p) if p.grad is None else p.grad.clone())
                         for n, p in d.named_parameters()}


@pytest.mark.parametrize("ndim,channels_last,alpha", [(2, False, 0.5), (2, True, 1.0),
                                                      (3, False, 0.3)])
def test_penalty_pass_gives_the_penalty_and_its_gradients_of_plain_autograd(ndim, channels_last,
                                                                            alpha):
    """penalty_pass (input-gradient-only convs and LeakyReLUs in the penalty's critic pass)
    changes the cost of the second-order backward, not its values: same penalty, same
    gradient for every critic parameter (biases and the minibatch-stddev path included)."""
    torch.manual_seed(1)
    d = Discriminator(channels=2, ndim=ndim, filters=[16, 16, 8])
    real, fake = torch.randn(2, 4, 2, *(16,) * ndim)
    if channels_last:
        d = d.to(memory_format=torch.channels_last)
    mix = torch.rand(4)
    gp_fast, fast = _penalty_grads(d, real, fake, mix, 2, alpha, penalty_pass=True)
    gp_ref, ref = _penalty_grads(d, real, fake, mix, 2, alpha, penalty_pass=False)
    assert torch.equal(gp_fast, gp_ref)
    nonzero = [n for n in ref if ref[n].abs().max() > 0]
    assert any(n.endswith("bias") for n in nonzero)  # the curved (mbstd) path reaches biases
    for n in ref:
        scale = ref[n].abs().max().clamp_min(1e-6)
        assert (fast[n] - ref[n]).abs().max() / scale < 1e-4, n


def test_penalty_pass_keeps_first_order_gradients_and_bf16_penalty_gradients():
    """Outside create_graph, a critic pass recorded under penalty_pass back-propagates the full
    first-order gradients (inputs, weights, biases). Under bf16 autocast its penalty gradients
    stay within a few % of float32 for every conv weight (torch 2.13's own conv double backward
    misses most of them on CPU: README, Performance)."""
    from matdyn.models.layers import penalty_pass

    torch.manual_seed(2)
    d = Discriminator(channels=1, ndim=2, filters=[32, 32, 16]).to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 16, 16, requires_grad=True)
    d(x, 2, 0.5).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}
    ref["x"] = x.grad.clone()
    d.zero_grad(set_to_none=True)
    x.grad = None
    with penalty_pass():
        d(x, 2, 0.5).square().sum().backward()
    got = {n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None}
    got["x"] = x.grad.clone()
    assert got.keys() == ref.keys() and any(n.endswith("bias") for n in got)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-4, atol=1e-6), n

    real, fake = torch.randn(2, 8, 1, 16, 16)
    mix = torch.rand(8)
    _, f32 = _penalty_grads(d, real, fake, mix, 2, 0.5, penalty_pass=False)
    _, b16 = _penalty_grads(d, real, fake, mix, 2, 0.5, penalty_pass=True, bf16=True)
    convs = [n for n in f32 if n.endswith("weight") and f32[n].dim() == 4 and f32[n].norm() > 0]
    assert len(convs) >= 5
    for n in convs:
        assert (b16[n] - f32[n]).norm() / f32[n].norm() < 0.1, n
