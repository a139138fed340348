"""Building blocks of the progressive GAN, for 2D images and 3D volumes alike.

Every layer takes ``ndim`` (2 or 3) and works on channels-first tensors
``[N, C, H, W]`` (2D) or ``[N, C, D, H, W]`` (3D); channels_last memory formats pass
through unchanged. Equalized learning rate (Karras et al. 2018, §4.1): weights are stored
as N(0, 1) samples and multiplied at run time by ``gain / sqrt(fan_in)``, so Adam's
per-parameter step sizes act alike on every layer.

Speed (issue 15): nearest ×2 upsampling followed by a 3×3 conv is computed as one stride-2
transposed conv with a 4-tap kernel folded from the 3×3 one
(:meth:`EqualizedConv.forward_upsampled`): the same linear map, exact up to float
rounding, with 16/36 of the multiply-adds in 2D (64/216 in 3D) and no upsampled tensor in
memory. Activations and pixel norm work in place on intermediate tensors where autograd
allows it (fresh memory is a large part of the cost of an elementwise pass on CPU).

Gradient penalty (issue 15): inside :func:`penalty_pass` the convs and LeakyReLUs record
autograd functions whose backward, when autograd builds a graph of it (the penalty's
``create_graph=True`` pass), gives the input gradient only, written as a transposed conv and a
LeakyReLU backward on detached activations. The penalty's second-order backward then runs as
ordinary convolution backward calls; torch's own double backward of a conv computes the
weight gradient as a convolution with batch and channels swapped (a 64×64 "kernel" at 64 px,
plus two transposed copies), allocates an all-zero gradient for every LeakyReLU input, and
under CPU bf16 autocast (torch 2.13) gets the 3×3 conv weights' penalty gradients wrong
(README, Performance). Same values as plain autograd up to float rounding (tests/test_models.py).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

#: rows: the 4 taps of the stride-2 transposed kernel; columns: the 3 taps of the conv that
#: follows a nearest ×2 upsampling (see EqualizedConv.forward_upsampled)
UPSAMPLE_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
SQRT2 = math.sqrt(2.0)  # He gain for LeakyReLU-ish activations (PGGAN default)
LRELU_SLOPE = 0.2  # PGGAN §A.1


def _check_ndim(ndim: int) -> int:
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 (images) or 3 (volumes), got {ndim}")
    return int(ndim)


def channels_last_format(ndim: int) -> torch.memory_format:
    """The channels-last memory format of [N, C, *S] tensors with ``ndim`` spatial axes."""
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def is_channels_last(x: torch.Tensor) -> bool:
    """True when x ([N, C, *S], 2D or 3D) is stored channels-last and is not also contiguous."""
    if x.dim() not in (4, 5):
        return False
    fmt = channels_last_format(x.dim() - 2)
    return not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def canonical_memory_format(x: torch.Tensor, fmt: torch.memory_format | None) -> torch.Tensor:
    """x with channels-last strides when ``fmt`` is a channels-last format (else x as is).
    With 1-3 channels a tensor can count as contiguous in both layouts (stride 1 on channels
    is then not required), and a conv given such an input picks the NCHW layout for its
    output, so the layer after it runs in the slower mixed layout; a copy fixes the strides."""
    if fmt is None or x.stride(1) == 1:
        return x
    return torch.empty_like(x, memory_format=fmt).copy_(x)


def assert_shape(x: torch.Tensor, shape: Sequence[int | None]) -> None:
    """Check ``x.shape`` against ``shape``; ``None`` entries match any size."""
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise AssertionError(f"expected a tensor shaped {list(shape)}, got {list(x.shape)}")


_PENALTY = threading.local()


@contextmanager
def penalty_pass() -> Iterator[None]:
    """Within this context, :class:`EqualizedConv` and :func:`lrelu` modules record
    input-gradient-only autograd functions (module docstring): use it for the critic pass
    whose input gradient the gradient penalty takes (``autograd.grad(..., x, create_graph=True)``).
    A backward that builds a graph (``create_graph=True``) gives that pass's input gradient
    only (no weight or bias gradients); an ordinary backward gives all first-order gradients;
    second-order gradients reach the weights as usual."""
    before = getattr(_PENALTY, "on", False)
    _PENALTY.on = True
    try:
        yield
    finally:
        _PENALTY.on = before


def in_penalty_pass() -> bool:
    return getattr(_PENALTY, "on", False)


class _InputGradConv(torch.autograd.Function):
    """Stride-1 'same' conv for :func:`penalty_pass`. Its backward, when autograd builds a
    graph of it (the penalty's ``create_graph=True`` pass), is ``conv_transpose(grad, w)``:
    the input gradient only, differentiable in grad and w. Otherwise (the loss's ordinary
    backward, which also runs through this node for terms that curve, e.g. the minibatch
    stddev) it is the full first-order ``convolution_backward``."""

    @staticmethod
    def forward(ctx, x, w, b, padding: int):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.has_bias = padding, b is not None
        ctx.b_dtype = None if b is None else b.dtype
        conv = F.conv2d if x.dim() == 4 else F.conv3d
        return conv(x, w, b, padding=padding)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, w = ctx.saved_tensors
        n = grad.dim() - 2
        if is_channels_last(grad):
            w = w.contiguous(memory_format=channels_last_format(n))
        if torch.is_grad_enabled():  # the penalty's pass: input gradient, differentiable
            convt = F.conv_transpose2d if n == 2 else F.conv_transpose3d
            return convt(grad, w.to(grad.dtype), padding=ctx.padding).to(x.dtype), None, None, None
        need = ctx.needs_input_grad
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x.to(grad.dtype), w.to(grad.dtype), [w.shape[0]] if ctx.has_bias else None,
            [1] * n, [ctx.padding] * n, [1] * n, False, [0] * n, 1,
            [need[0], need[1], need[2] and ctx.has_bias])
        return (None if gx is None else gx.to(x.dtype), None if gw is None else gw.to(w.dtype),
                None if gb is None else gb.to(ctx.b_dtype), None)


class _InputGradLeakyReLU(torch.autograd.Function):
    """LeakyReLU whose backward reads the output detached: its second-order backward has no
    (all-zero) gradient for the activation to allocate and add."""

    @staticmethod
    def forward(ctx, x, slope: float):  # noqa: ANN001, ANN205
        y = F.leaky_relu(x, slope)
        ctx.save_for_backward(y)
        ctx.slope = slope
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (y,) = ctx.saved_tensors
        return torch.ops.aten.leaky_relu_backward(grad, y.detach(), ctx.slope, True), None


class EqualizedConv(nn.Module):
    """Conv with equalized learning rate and 'same' padding (odd kernel sizes)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ndim: int = 2,
        gain: float = SQRT2,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.ndim = _check_ndim(ndim)
        # [out, in, k, k(, k)], unit-variance storage; the scale is applied in forward
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *(kernel_size,) * ndim))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size**ndim)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_penalty_pass() and torch.is_grad_enabled():
            return _InputGradConv.apply(x, self.weight * self.scale, self.bias, self.padding)
        conv = F.conv2d if self.ndim == 2 else F.conv3d
        return conv(x, self.weight * self.scale, self.bias, padding=self.padding)

    def forward_upsampled(self, x: torch.Tensor) -> torch.Tensor:
        """``self(upsample(x))`` for a 3×3(×3) conv, as one stride-2 transposed conv.

        x: [N, C_in, *S] -> [N, C_out, *2S]. Output pixel 2i + a of the upsampled conv reads
        input pixels {i-1, i} (a = 0) or {i, i+1} (a = 1) with the 3 taps summed pairwise, so
        the transposed kernel along each axis is ``[w2, w1 + w2, w0 + w1, w0]``
        (:data:`UPSAMPLE_TAPS`); zero padding of the upsampled image is zero padding of x.
        Raises ValueError for other kernel sizes.
        """
        k = self.weight.shape[-1]
        if k != 3:
            raise ValueError(f"forward_upsampled needs a 3-tap kernel, got {k}")
        taps = UPSAMPLE_TAPS.to(device=self.weight.device, dtype=self.weight.dtype)
        w = self.weight * self.scale  # [out, in, 3, 3(, 3)]
        if self.ndim == 2:
            v = torch.einsum("ky,lx,oiyx->iokl", taps, taps, w)  # [in, out, 4, 4]
        else:
            v = torch.einsum("jz,ky,lx,oizyx->iojkl", taps, taps, taps, w)  # [in, out, 4, 4, 4]
        if is_channels_last(x):
            v = v.contiguous(memory_format=channels_last_format(self.ndim))
        convt = F.conv_transpose2d if self.ndim == 2 else F.conv_transpose3d
        return convt(x, v, self.bias, stride=2, padding=1)

    def extra_repr(self) -> str:
        o, i, *k = self.weight.shape
        return f"{i}, {o}, kernel={k[0]}, ndim={self.ndim}, scale={self.scale:.4g}"


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate."""

    def __init__(
        self, in_features: int, out_features: int, gain: float = SQRT2, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))  # [out, in]
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"{i}, {o}, scale={self.scale:.4g}"


class PixelNorm(nn.Module):
    """Normalise the feature vector of every pixel (dim 1) to unit RMS (PGGAN §4.2):
    ``x / sqrt(mean_c x² + eps)``, [N, C, *S] -> same.

    ``inplace=True`` overwrites x when autograd does not need it (x does not require grad),
    which saves one fresh tensor per call; use it only where x is an intermediate result.
    """

    def __init__(self, eps: float = 1e-8, inplace: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused reduction (no x² tensor in memory); the norm² is the sum of squares
        ms = torch.linalg.vector_norm(x, dim=1, keepdim=True).square() / x.shape[1]
        s = torch.rsqrt(ms + self.eps)  # [N, 1, *S]
        if self.inplace and not x.requires_grad:
            return x.mul_(s)
        return x * s


class MinibatchStd(nn.Module):
    """Append one channel holding the mean over features of the per-group standard deviation
    (PGGAN §3). Groups hold ``group_size`` samples (fewer if the batch does not divide)."""

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size = group_size
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, *spatial = x.shape  # [N, C, *S]
        g = min(self.group_size, n)
        while n % g:  # shape-only control flow: static under torch.compile
            g -= 1
        m = n // g
        # sample i sits in group i % m, as in the PGGAN reference code
        y = x.float().reshape(g, m, c, *spatial)  # [G, M, C, *S]
        y = y - y.mean(dim=0)
        std = torch.sqrt(y.square().mean(dim=0) + self.eps)  # [M, C, *S]
        s = std.mean(dim=list(range(1, std.dim())))  # [M]
        s = s.to(x.dtype).reshape(1, m, 1, *(1,) * len(spatial))
        s = s.expand(g, m, 1, *spatial).reshape(n, 1, *spatial)  # [N, 1, *S]
        return torch.cat([x, s], dim=1)  # [N, C+1, *S]


#: ×2 upsampling filters of the generator: PGGAN's nearest neighbour, or the linear
#: (bilinear / trilinear, half-pixel centres: the [1, 3, 3, 1] / 4 filter per axis) one
UPSAMPLE_MODES = ("nearest", "linear")


def upsample(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """×2 upsampling of [N, C, *S]: nearest neighbour (PGGAN) or ``"linear"`` (bilinear for
    images, trilinear for volumes, ``align_corners=False``)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    if mode != "linear":
        raise ValueError(f"upsample mode must be one of {UPSAMPLE_MODES}, got {mode!r}")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear" if x.dim() == 4 else "trilinear",
                         align_corners=False)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Average pooling by 2 along every spatial axis of [N, C, *S]."""
    return F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool3d(x, 2)


class LeakyReLU(nn.LeakyReLU):
    """nn.LeakyReLU that records :class:`_InputGradLeakyReLU` inside :func:`penalty_pass`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_penalty_pass() and torch.is_grad_enabled() and x.requires_grad:
            return _InputGradLeakyReLU.apply(x, self.negative_slope)
        return super().forward(x)


def lrelu(inplace: bool = False) -> LeakyReLU:
    """LeakyReLU with slope 0.2 (PGGAN §A.1); ``inplace`` only on intermediate tensors
    (autograd keeps the result, which is enough for its gradient at a positive slope)."""
    return LeakyReLU(LRELU_SLOPE, inplace=inplace)
