"""Helpers shared by the thin Hydra entry points in `scripts/` (no Hydra state read by the
library; only these wrappers look at it).

The error contract of every entry point (issue 13): a failure caused by input or by the
environment ends with ONE line ``error: <what>; <fix>`` on stderr and exit status 2; an
internal bug keeps its traceback (exit 1). Two wrappers implement it::

    @entry_point                  # outermost: Hydra's own errors (composition, overrides)
    @hydra.main(version_base="1.3", config_path="../conf", config_name="train")
    @guarded                      # inside the job: our errors, type checks of the overrides
    def main(cfg): ...

Hydra composes the config before ``main`` runs and prints its own multi-line report, exit 1
(``hydra._internal.utils.run_and_report``), unless ``HYDRA_FULL_ERROR=1``, with which it
re-raises (Hydra PR #930); :func:`entry_point` sets that variable for the call and
translates the raised exception with :func:`user_error_message`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from matdyn.errors import ConfigError, MatdynError

T = TypeVar("T")
log = logging.getLogger("matdyn")

#: errno values that mean "the output location cannot take this write" (environment, not a bug)
ENV_ERRNOS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_MATDYN_DIR = Path(__file__).resolve().parent


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from (``raise ... from``: ``__cause__``).
    ``__context__`` is not followed: a bug raised while handling, say, a full disk is a bug."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        yield err
        seen.add(id(err))
        err = err.__cause__


def matdyn_cause(err: BaseException | None) -> MatdynError | None:
    """The MatdynError behind ``err``, following ``raise ... from`` links.

    Hydra's ``instantiate`` re-raises constructor errors as ``InstantiationException(...)
    from err``; this finds our error inside such wrappers (None if there is none).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MatdynError):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


def one_line(msg: str) -> str:
    """``msg`` on one line: lines joined with ``; ``, runs of blanks collapsed.

    >>> one_line("Could not override 'x'.\\nTo append use +x=1")
    "Could not override 'x'.; To append use +x=1"
    """
    parts = [re.sub(r"\s+", " ", ln).strip() for ln in str(msg).splitlines()]
    return "; ".join(p for p in parts if p)


def _raised_in_matdyn(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and Path(last).resolve().is_relative_to(_MATDYN_DIR)


def _hydra_message(err: BaseException) -> str | None:
    """One line for Hydra's / OmegaConf's config errors (None for anything else)."""
    try:
        from hydra.errors import (
            ConfigCompositionException,
            InstantiationException,
            MissingConfigException,
            OverrideParseException,
        )
        from omegaconf.errors import (
            InterpolationResolutionError,
            MissingMandatoryValue,
            ValidationError,
        )
    except ImportError:  # pragma: no cover
        return None
    text = str(err)
    if isinstance(err, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        opts = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.M)
        if m:
            return (f"config option {m.group(1)}={m.group(2)} does not exist; choose one of "
                    f"{', '.join(opts) or '(none)'} (conf/{m.group(1)}/*.yaml)")
        return f"{one_line(text.split('Config search path')[0])}; check the config name"
    if isinstance(err, OverrideParseException):
        return (f"cannot parse the command-line override ({one_line(text).split('; See')[0]}); "
                "write key=value, lists as key=[a,b], quote values with spaces")
    if isinstance(err, ConfigCompositionException):
        m = re.search(r"Could not override '([^']+)'", text)
        if m and ("not in struct" in str(err.__cause__) or "+" in text):
            key = m.group(1)
            return (f"unknown config key '{key}'; check its spelling (python <script> --cfg job "
                    f"lists the keys) or add a new key with +{key}=...")
        cause = f" ({one_line(str(err.__cause__))})" if err.__cause__ is not None else ""
        return f"{one_line(text)}{cause}; fix the override"
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or text.split(":")[-1].strip()
        return f"{key} is required (??? in the config); pass {key}=<value>"
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        if cause is not None and _raised_in_matdyn(cause) and not isinstance(cause, MatdynError):
            return None  # our constructor crashed: a bug, keep the traceback
        m = re.search(r"full_key: (\S+)", text)
        target = re.search(r"target '([^']+)'", text)
        what = f"'{target.group(1)}'" if target else "an object"
        why = one_line(f"{type(cause).__name__}: {cause}") if cause is not None else one_line(text)
        where = f"{m.group(1)}.* options" if m else "its config options"
        return f"cannot create {what} from the config ({why}); fix {where}"
    # a user's interpolation or a value of the wrong type for a typed node; NOT a missing
    # key (ConfigAttributeError/ConfigKeyError): inside the job that is our bug
    if isinstance(err, (InterpolationResolutionError, ValidationError)):
        key = getattr(err, "full_key", None)
        first = one_line(text).split("; full_key")[0]
        return f"config value {key or ''} is invalid ({first}); fix the override".replace("  ", " ")
    return None


def user_error_message(err: BaseException) -> str | None:
    """The one-line message for an error caused by input or environment, None for a bug.

    Covers: :class:`MatdynError` (also wrapped by Hydra's instantiate), Hydra composition
    errors (unknown key, missing config option, unparsable override), OmegaConf errors
    (missing ``???`` value, bad interpolation), instantiate errors raised outside matdyn
    (e.g. Lightning rejecting ``trainer.precision=banana``), and OS errors that mean the
    location cannot be written (read-only, full, over quota, permission: :data:`ENV_ERRNOS`).
    """
    chain = list(_chain(err))
    for e in chain:
        if isinstance(e, MatdynError):
            return one_line(str(e))
    for e in chain:  # before Hydra's wrappers: a full disk inside a constructor is the disk
        if isinstance(e, OSError) and e.errno in ENV_ERRNOS:
            where = Path(os.fsdecode(e.filename)) if e.filename else None
            while where is not None and where.name.startswith(".") and where.parent != where:
                where = where.parent  # name the folder, not our hidden temporary file
            return (f"cannot write {where or 'the output location'}: {ENV_ERRNOS[e.errno]}; "
                    "choose a writable output location with free space")
    for e in chain:
        msg = _hydra_message(e)
        if msg is not None:
            return msg
    return None


def fail(msg: str, status: int = 2) -> None:
    """Print ``error: <msg>`` (one line) to stderr and exit with ``status``."""
    print(f"error: {one_line(msg)}", file=sys.stderr, flush=True)
    sys.exit(status)


#: keys whose default is an integer but that legitimately take other types (Lightning)
_UNION_KEYS = frozenset({"trainer.devices"})
#: keys whose default is null (unset) but whose value, when set, has a type
#: (conf/train.yaml, conf/sweep.yaml, conf/import_data.yaml, conf/dataset/*.yaml)
NULLABLE_TYPES: dict[str, Any] = {
    "resolution": 1, "block_size": 1, "num_threads": 1, "baseline.max_frames": 1,
    "dataset.max_frames": 1, "frame_interval": 1.0, "dataset.frame_interval": 1.0,
    "dataset.pixel_size": 1.0, "dataset.channels": 1, "dataset.ndim": 1,
}


def _type_error(key: str, default: Any, value: Any) -> str | None:
    if default is None:
        default = NULLABLE_TYPES.get(key)
    if value is None or key in _UNION_KEYS:
        return None
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        return None
    if ok:
        return None
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{key}={value!r} is not {want} (default {shown}); pass e.g. {key}={shown}"


def check_override_types(cfg: Any) -> None:
    """Raise :class:`ConfigError` when a command-line override gives a value of the wrong
    type for its key (``seed=abc``, ``dataset.synthetic.size=abc``, ``progress=maybe``).

    Hydra accepts any override for an existing key; the type each key expects is taken from
    the config composed with the same group choices but without the value overrides. Keys
    without a typed default (``null``, ``???``, strings, lists) are not checked here.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    parsed = OverridesParser.create().parse_overrides(list(hc.overrides.task))
    choices = set(hc.runtime.choices.keys())
    groups = [o.input_line for o in parsed if o.key_or_group in choices]
    values = [o for o in parsed if o.key_or_group not in choices and not o.is_delete()
              and not o.is_sweep_override()]
    if not values:
        return
    base = compose(config_name=hc.job.config_name, overrides=groups)
    for o in values:
        key = o.key_or_group
        try:
            default = OmegaConf.select(base, key, throw_on_missing=False)
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:  # an interpolation that does not resolve yet: not ours to judge
            continue
        msg = _type_error(key, default, value)
        if msg is not None:
            raise ConfigError(msg)


def check_environment(cfg: Any) -> None:
    """Refuse settings the machine cannot honour, in one line: ``device=cuda`` (or
    ``trainer.accelerator=gpu``) without a visible CUDA device; ``num_threads`` < 1."""
    from omegaconf import OmegaConf

    threads = OmegaConf.select(cfg, "num_threads", default=None)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"num_threads={threads!r} must be a positive integer or null "
                          "(null: torch's default); e.g. num_threads=1")
    wants = [(k, str(v)) for k in ("device", "trainer.accelerator")
             if (v := OmegaConf.select(cfg, k, default=None)) is not None]
    wants = [(k, v) for k, v in wants if v.split(":")[0] in ("cuda", "gpu")]
    if wants:
        import torch

        k, v = wants[0]
        if not torch.cuda.is_available():
            raise ConfigError(f"{k}={v} but no CUDA device is visible (torch "
                              f"{torch.__version__}, CUDA build {torch.version.cuda}); use "
                              f"{k}=cpu or {k}=auto, or run on a GPU machine")
        index = v.partition(":")[2]
        if index.isdigit() and int(index) >= torch.cuda.device_count():
            raise ConfigError(f"{k}={v} but only {torch.cuda.device_count()} CUDA device(s) are "
                              f"visible (indices from 0); use {k}=cuda:0 or {k}=auto")


def guarded(task: Callable[..., T]) -> Callable[..., T]:
    """Inside the job: check the overrides' types and the device, run ``task``, and turn an
    error caused by input or environment (:func:`user_error_message`) into one
    ``error: ...`` line with exit status 2. Other exceptions (bugs) propagate."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with _one_line_errors():
            if args and _is_config(args[0]):
                check_override_types(args[0])
                check_environment(args[0])
            return task(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Errors caused by input or environment end as one ``error:`` line (exit 2), Ctrl-C as
    ``interrupted`` (exit 130); anything else (a bug) propagates with its traceback."""
    try:
        yield
    except Exception as e:
        msg = user_error_message(e)
        if msg is None:
            raise
        fail(msg)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        sys.exit(130)


def _is_config(obj: Any) -> bool:
    try:
        from omegaconf import DictConfig
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, DictConfig)


def entry_point(main: Callable[..., T]) -> Callable[..., T]:
    """Outermost wrapper of a ``@hydra.main`` function: Hydra's own errors (composition,
    unknown keys and config options, unparsable overrides, an unwritable output directory)
    become one ``error: ...`` line and exit status 2, like :func:`guarded` inside the job.

    Sets ``HYDRA_FULL_ERROR=1`` for the call so Hydra re-raises instead of printing its
    multi-line report; a bug still ends in its (full) traceback.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        before = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            with _one_line_errors():
                return main(*args, **kwargs)
        finally:
            if before is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = before

    return wrapper


def project_path(p: str | os.PathLike) -> Path:
    """An absolute path: ``~`` expanded, a relative path taken from the current directory.

    Reads no Hydra state: every entry point runs with ``hydra.job.chdir=false``, so the
    current directory is where the command ran. Entry points (``scripts/``) resolve the
    config's paths with this (or ``hydra.utils.to_absolute_path``) and hand absolute paths
    to the library.

    >>> project_path("/a/b")
    PosixPath('/a/b')
    """
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def hydra_output_dir() -> Path | None:
    """The running Hydra job's output dir (None outside Hydra). For ``scripts/`` only: the
    library never reads Hydra state, it is handed this path."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # pragma: no cover
        pass
    return None
