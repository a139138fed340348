"""What this machine can run fast, detected at run time (issue 14, part 3).

:func:`capabilities` answers, without compiling anything or timing anything:

* ``bf16_cpu``: the CPU has native bf16 arithmetic (x86: AVX-512 BF16 or AMX tiles, as
  reported by torch's own CPU probes; aarch64: the ``bf16`` feature in /proc/cpuinfo) AND a
  tiny bf16 matmul under CPU autocast runs and agrees with fp32 to bf16 rounding. Any CPU can
  run bf16 by emulation, but only native support made it faster here (AVX-512 BF16:
  1.4-2x generation, matdyn/training/bundle.py), so emulated bf16 counts as unsupported.
* ``bf16_cuda``: a visible CUDA device of compute capability >= 8.0 (Ampere and later,
  where bf16 tensor cores exist) for which ``torch.cuda.is_bf16_supported()`` is true
  (without counting emulation where torch can tell them apart).
* ``compile_cpu`` / ``compile_cuda``: ``torch.compile`` can work here: TorchDynamo supports
  this Python, and Inductor has its backend compiler (a C++ compiler on the PATH for CPU,
  Triton for CUDA). A True is necessary, not sufficient: the first compile can still fail.

The result is cached per process (detection costs a few milliseconds, the CUDA part
initialises CUDA once). :func:`resolve_precision` maps ``precision="auto"`` to "bf16" or
"fp32" for one device type; the bundle's fast path uses it (``load_generator(...,
precision="auto")``).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Capabilities:
    """Run-time facts about this process's torch and hardware (see the module docstring)."""

    torch_version: str
    cpu_capability: str          # torch's CPU kernel level: "AVX512", "AVX2", "DEFAULT", ...
    bf16_cpu: bool
    cuda: bool                   # torch.cuda.is_available()
    cuda_devices: int
    cuda_name: str | None
    cuda_capability: str | None  # "9.0" for an H100 / H200
    bf16_cuda: bool
    compile_cpu: bool
    compile_cuda: bool
    triton: bool

    def bf16(self, device_type: str) -> bool:
        """Native bf16 on ``device_type`` ("cpu" | "cuda"); False for any other type."""
        return {"cpu": self.bf16_cpu, "cuda": self.bf16_cuda}.get(str(device_type), False)

    def compile(self, device_type: str) -> bool:
        """``torch.compile`` can work on ``device_type`` (necessary, not sufficient)."""
        return {"cpu": self.compile_cpu, "cuda": self.compile_cuda}.get(str(device_type), False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _call(obj: Any, name: str) -> bool:
    """obj.name() as a bool; False when the (private, version-dependent) probe is missing."""
    fn = getattr(obj, name, None)
    try:
        return bool(fn()) if callable(fn) else False
    except Exception:
        return False


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (hardware flags only; see :func:`bf16_probe`)."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in _cpu_flags()
    cpu = getattr(torch, "cpu", None)
    return _call(cpu, "_is_avx512_bf16_supported") or _call(cpu, "_is_amx_tile_supported")


def bf16_probe(device: str = "cpu") -> bool:
    """A 64×64 matmul under bf16 autocast on ``device`` runs, returns bf16 and agrees with
    fp32 to bf16 rounding (relative error < 2⁻⁶; bf16 has 8 significant bits)."""
    try:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(64, 64, generator=g).to(device)
        b = torch.randn(64, 64, generator=g).to(device)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            c = a @ b
        ref = a @ b
        err = ((c.float() - ref).norm() / ref.norm()).item()
        return c.dtype == torch.bfloat16 and err < 2.0**-6
    except Exception:
        return False


def _cuda_bf16() -> bool:
    try:
        major, _ = torch.cuda.get_device_capability()
        try:
            supported = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation argument
            supported = torch.cuda.is_bf16_supported()
        return major >= 8 and bool(supported) and bf16_probe("cuda")
    except Exception:
        return False


def _dynamo_ok() -> bool:
    try:
        import torch._dynamo as dynamo

        check = getattr(dynamo, "is_dynamo_supported", None)
        return bool(check()) if callable(check) else hasattr(torch, "compile")
    except Exception:
        return False


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:
        return False


def _has_cxx() -> bool:
    names = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
    return any(n and shutil.which(n) for n in names)


@functools.lru_cache(maxsize=1)
def capabilities() -> Capabilities:
    """Detect once per process (see the module docstring); CUDA is initialised if present."""
    cuda = False
    try:
        cuda = bool(torch.cuda.is_available())
    except Exception:
        pass
    name = cap = None
    n = 0
    if cuda:
        try:
            n = torch.cuda.device_count()
            name = torch.cuda.get_device_name(0)
            cap = "{}.{}".format(*torch.cuda.get_device_capability(0))
        except Exception:
            cuda = False
    triton = _has_triton() if cuda else False
    dynamo = _dynamo_ok()
    try:
        cpu_cap = str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        cpu_cap = "unknown"
    return Capabilities(
        torch_version=torch.__version__, cpu_capability=cpu_cap,
        bf16_cpu=cpu_native_bf16() and bf16_probe("cpu"),
        cuda=cuda, cuda_devices=n, cuda_name=name, cuda_capability=cap,
        bf16_cuda=_cuda_bf16() if cuda else False,
        compile_cpu=dynamo and _has_cxx(), compile_cuda=dynamo and triton, triton=triton,
    )


def resolve_precision(precision: str, device_type: str) -> str:
    """``"auto"`` -> "bf16" where :func:`capabilities` finds native bf16 on ``device_type``,
    else "fp32"; any other value is returned unchanged (the caller validates it).

    >>> resolve_precision("fp32", "cuda")
    'fp32'
    """
    if precision != "auto":
        return precision
    return "bf16" if capabilities().bf16(device_type) else "fp32"
