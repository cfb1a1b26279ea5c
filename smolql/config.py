"""Settings, declared once with a default and a help line and validated on assignment.

The CLI, ``SET smolql.<name>`` statements and the notebook magic all read these declarations.

>>> s = Settings()
>>> s.set("max_image_pixels", "1000")
>>> s.max_image_pixels
1000
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smolql.errors import ConfigError

DEFAULT_DB = "smolql.duckdb"
DB_ENV = "SMOLQL_DB"
PILLOW_PIXEL_LIMIT = 178_956_970
PROFILE_SAMPLE = 200  # images ``smolql profile`` samples by default
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _non_negative_int(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be zero or more")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "1", "yes"):
        return True
    if text in ("off", "false", "0", "no"):
        return False
    raise ValueError("must be on or off")


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``off`` (or none/null) clears a target; anything else must parse."""

    def optional(value: Any) -> Any:
        if value is None or str(value).strip().lower() in ("off", "none", "null", ""):
            return None
        return parse(value)

    return optional


def _fraction(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be between 0 and 1 (e.g. 0.85)")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number")
    return number


def _choice(*options: str, what: str | None = None) -> Callable[[Any], str]:
    """One of ``options`` (case-insensitive); naming ``what`` answers an unknown value with
    "unknown <what> ...; did you mean ...?"."""

    def parse(value: Any) -> str:
        text = str(value).strip()
        if text.lower() in options:
            return text.lower()
        if what is None:
            raise ValueError(f"must be one of {', '.join(options)}")
        from smolql.suggest import did_you_mean

        raise ValueError(f"unknown {what} {text!r}{did_you_mean(text.lower(), options)}")

    return parse


def _backend_name(value: Any) -> str:
    # The registry sits above this module; it is imported only when a backend is named.
    from smolql.backends.registry import backends

    return _choice("auto", *backends(), what="backend")(value)


def _executor_name(value: Any) -> str:
    from smolql.executor.registry import executors

    return _choice(*executors(), what="executor")(value)


def _model_name(value: Any) -> str:
    from smolql.models.registry import get_model

    text = str(value).strip()
    try:
        return get_model(text).name
    except Exception as e:
        raise ValueError(getattr(e, "message", str(e))) from e


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any]


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "max_image_pixels",
            PILLOW_PIXEL_LIMIT,
            "Images with more pixels than this are skipped (read from the header, never decoded).",
            _positive_int,
        ),
        Setting("model", "efficientnet_lite0", "Default classification model.", _model_name),
        Setting(
            "backend",
            "auto",
            "Inference backend (onnxruntime, openvino, torch, torch_cuda, tensorrt) or 'auto':"
            " the fastest measured on this machine that keeps top-1 agreement with fp32.",
            _backend_name,
        ),
        Setting(
            "precision",
            "auto",
            "fp32, bf16, fp16, int8, or 'auto' (the backend's; with backend 'auto', the"
            " fastest that keeps top-1 agreement with fp32).",
            _choice(*PRECISIONS, what="precision"),
        ),
        Setting(
            "batch_size", 0, "Inference batch size; 0 means the measured best.", _non_negative_int
        ),
        Setting("cache", True, "Reuse stored UDF results (on/off).", _boolean),
        Setting(
            "executor",
            "local",
            "Where stages run: 'local' (this machine's threads) or a registered executor.",
            _executor_name,
        ),
        Setting(
            "ray_address",
            "",
            "The Ray cluster of the 'ray' executor: 'auto', 'host:port' or 'ray://host:port';"
            " empty means $SMOLQL_RAY_ADDRESS, else 'auto'.",
            str,
        ),
        Setting(
            "on_error",
            "null",
            "An undecodable image gives NULL and a warning ('null') or fails the query ('fail').",
            _choice("null", "fail"),
        ),
        Setting(
            "min_accuracy",
            None,
            "Accuracy target (0-1): run the fastest profiled plan at least this accurate.",
            _optional(_fraction),
        ),
        Setting(
            "max_accuracy_loss",
            None,
            "Largest accuracy loss (0-1) below the reference plan: the fastest plan within it.",
            _optional(_fraction),
        ),
        Setting(
            "min_throughput",
            None,
            "Throughput target (images/s): the most accurate profiled plan that reaches it.",
            _optional(_positive_float),
        ),
        Setting(
            "workers",
            0,
            "Worker threads for ingest and decoding; 0 means one per CPU core.",
            _non_negative_int,
        ),
    )
}


class Settings:
    """Current values of the declared settings for one connection."""

    def __init__(self, **overrides: Any) -> None:
        self._values = {name: s.default for name, s in SETTINGS.items()}
        for name, value in overrides.items():
            self.set(name, value)

    def set(self, name: str, value: Any) -> None:
        setting = _lookup(name)
        try:
            self._values[setting.name] = setting.parse(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid value {value!r} for setting {name!r}: {e}") from e

    def text(self, name: str) -> str:
        """A value as ``SET`` would write it: ``on``/``off`` for switches, ``off`` for an
        unset target."""
        value = self._values[_lookup(name).name]
        if isinstance(value, bool):
            return "on" if value else "off"
        return "off" if value is None else str(value)

    def reset(self, name: str) -> None:
        setting = _lookup(name)
        self._values[setting.name] = setting.default

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _lookup(name: str) -> Setting:
    from smolql.suggest import did_you_mean

    if name not in SETTINGS:
        raise ConfigError(f"unknown setting {name!r}{did_you_mean(name, SETTINGS)}")
    return SETTINGS[name]


def cores() -> int:
    """The cores this process may run on (``taskset`` and cgroup affinity respected)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(settings: Settings) -> int:
    return settings.workers or cores()


def default_db_path() -> str:
    """The database path used when none is given: ``$SMOLQL_DB`` or ``./smolql.duckdb``."""
    return os.environ.get(DB_ENV) or DEFAULT_DB
