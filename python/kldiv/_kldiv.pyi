"""Type stubs of the compiled module (the public functions live in kldiv/__init__.py)."""

from typing import Any, Optional

import numpy as np
import numpy.typing as npt

__version__: str

class Error(ValueError):
    """Bad input. ``side`` ('P' or 'Q'), ``row`` and ``col`` (0-based) are set when the
    error is about one value, else None."""

    side: Optional[str]
    row: Optional[int]
    col: Optional[int]

class Summary:
    """Mergeable statistics of a comparison: counts, moments (merged exactly), min/max with
    their global rows, a quantile sketch (0.1 % relative) and, while kept, every value."""

    def __init__(
        self,
        *,
        divergence: str = "kl",
        input: str = "probs",
        unit: str = "nats",
        normalize: bool = False,
        pseudocount: Optional[float] = None,
        propagate_nan: bool = False,
        device: str = "auto",
        targets: bool = False,
        keep_values: bool = True,
        first_row: int = 0,
        agreement: bool = False,
        stored_as: Optional[tuple[str, str]] = None,
    ) -> None:
        """``stored_as``: the types ("f16", "bf16", "f32", "f64") p and q were stored in
        before a cast to the one type given to ``update`` (as ``kl()`` casts mixed inputs):
        rows are checked with the looser of those types' sum tolerances."""
    def update(
        self, p: npt.ArrayLike, q: Optional[npt.ArrayLike] = None, targets: Optional[npt.ArrayLike] = None
    ) -> npt.NDArray[np.float64]:
        """Adds rows; returns their per-row values."""
    def add_values(self, values: npt.NDArray[np.float64]) -> None:
        """Adds rows whose values were computed elsewhere (summaries without targets)."""
    def merge(self, other: Summary) -> None:
        """Adds another summary's rows (disjoint rows of the same comparison)."""
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(s: str) -> Summary: ...
    def to_dict(self) -> dict[str, Any]:
        """The report: the keys of ``kldiv compare --json``."""
    def shift_rows(self, by: int) -> None: ...
    @property
    def values(self) -> Optional[npt.NDArray[np.float64]]: ...
    @property
    def also(self) -> dict[str, npt.NDArray[np.float64]]: ...
    @property
    def rows(self) -> int: ...
    @property
    def first_row(self) -> int: ...

def _compute(*args: Any) -> Any: ...
def _compare_files(*args: Any) -> Summary: ...
def _gpu_info() -> Optional[dict[str, Any]]: ...
def _common_type(a: str, b: str) -> str: ...
