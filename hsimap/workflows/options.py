"""What a prediction needs beyond the scene and the model, as one type: ``hsimap predict``,
``hsimap batch`` (passed to each worker unchanged) and Python callers share it.

It lives apart from the workflow so that commands can build it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hsimap.errors import HsimapError
from hsimap.products import OutputOptions
from hsimap.runtime import check_precision

PROBABILITY_TYPES = ("float32", "uint8")


@dataclass
class PredictOptions:
    """How a scene is predicted. Every field but ``output.workers`` and ``output.progress``
    can change the outputs (batch records them per scene)."""

    window: int | None = None        # default: the model's
    halo: int | None = None
    ignore_wavelengths: bool = False
    ignore_scale: bool = False
    probabilities: str | None = None  # also SCENE_probabilities.tif: "float32" or "uint8"
    precision: str = "auto"           # heavy layers in fp32 or bf16 (auto: bf16 where fast)
    output: OutputOptions = field(default_factory=OutputOptions)

    def check(self) -> None:
        """Refuse what cannot work, before anything is read."""
        check_precision(self.precision)
        if self.probabilities is not None and self.probabilities not in PROBABILITY_TYPES:
            raise HsimapError(f"--probabilities-type must be one of "
                              f"{', '.join(PROBABILITY_TYPES)}, got {self.probabilities}")
        self.output.check()
