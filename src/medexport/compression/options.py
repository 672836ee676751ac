"""What a pass family exposes to the user: its options, and the data it asks the run for.

A pass (or its family base class) lists :class:`PassOption` s; the CLI builds ``--flags`` from the
registry, hands the pass only the options the user gave (by config field name), and the pass's
``configure`` turns them into its validated config dataclass. Data (real images, labelled images,
a fine-tuning hook) are not options: ``bind`` takes them from a :class:`PassData` the pipeline
provides, so a recipe stores options only. Example::

    class Blur(CompressionPass):
        family, config_type = "blur", BlurConfig
        options = (PassOption("--sigma", "sigma", "Blur strength.", type=float, default=1.0),)

    get_pass("blur").configure({"sigma": 2.0}, backend="openvino")   # BlurConfig(sigma=2.0)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PassOption:
    """One command-line option: ``flag`` fills the config field ``field``; the rest is how click parses it.

    ``choices`` is a tuple or a function returning one (read when the CLI is built, so registries can
    grow). Two passes may declare the same flag only for the same field (``--exclude-layer`` -> ``exclude``).
    """

    flag: str
    field: str
    help: str
    type: Any = str
    default: Any = None
    is_flag: bool = False
    multiple: bool = False
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    flag_value: Any = None

    @property
    def param(self) -> str:
        """The click parameter name: the flag without dashes (``--rank-ratio`` -> ``rank_ratio``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def choice_list(self) -> tuple[str, ...] | None:
        return tuple(self.choices()) if callable(self.choices) else self.choices


class PassData(Protocol):
    """What the run offers a pass besides its options; each is read once per run and only when asked for."""

    def calibration(self) -> "np.ndarray":
        """Real unlabelled images (N, C, *spatial); raises DataError when there are none."""

    def labelled(self) -> Any:
        """Labelled held-out images (evaluation.LabelledData), or None."""

    @property
    def rails(self) -> Any:
        """The run's GuardRails."""

    @property
    def recover(self) -> Callable[[Any], Any] | None:
        """A hook that fine-tunes a model after each step of a stepwise pass (None: no fine-tuning)."""


def _timed_backends() -> tuple[str, ...]:
    from medexport.runtimes import timed_backends

    return tuple(timed_backends())


EXCLUDE_LAYER = PassOption("--exclude-layer", "exclude", "Layer name glob kept as it is by every pass of the chain "
                           "(repeatable; low-rank and pruning passes also keep the first conv and the head).",
                           multiple=True)
LATENCY = PassOption("--latency", "latency", "Low-rank, pruning and merging passes: target latency as a fraction of "
                     "the original's, measured on --latency-backend (e.g. 0.5); replaces --budget / --ratio. In a "
                     "chain it is one budget: each latency pass spends what the ones before it left.", type=float)
LATENCY_BACKEND = PassOption("--latency-backend", "backend", "Backend --latency and subpixel are measured on "
                             "(default: build's --target when it is timed here, else openvino; compress: openvino).",
                             choices=_timed_backends)
