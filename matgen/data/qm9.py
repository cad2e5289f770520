"""Reader for QM9 with 3D coordinates stored as ragged arrays in one ``.npz``.

Expected arrays: ``index`` (GDB-9 index, N), ``num_atoms`` (N), ``offsets`` (N + 1), ``charges``
(atomic numbers, one per atom), ``positions`` (Å, one row per atom), ``split`` (``train`` /
``valid`` / ``test``) and one float array per property (QM9 units: Hartree, Debye, bohr^3, …).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from matgen.data.collection import AtomsCollection
from matgen.data.errors import DataError
from matgen.data.integrity import read_bytes

__all__ = ["QM9_PROPERTIES", "read_qm9_npz"]

QM9_PROPERTIES = (
    "A_GHz", "B_GHz", "C_GHz", "mu_debye", "alpha_bohr3", "homo_Ha", "lumo_Ha", "gap_Ha",
    "r2_bohr2", "zpve_Ha", "U0_Ha", "U_Ha", "H_Ha", "G_Ha", "Cv_cal_molK",
)  # fmt: skip
_SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def read_qm9_npz(path: str | Path) -> AtomsCollection:
    """Read the QM9 npz into a collection of molecules (``pbc`` False, zero cells).

    The properties table has ``index`` (GDB-9 index), ``split`` (``train``/``val``/``test``) and
    the 15 QM9 properties.

    Raises:
        DataError: naming the file when an array is missing or the ragged layout is inconsistent.
    """
    import io

    try:
        z = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"not a readable npz: {exc}", path=path) from None
    needed = ("index", "offsets", "charges", "positions", "split", *QM9_PROPERTIES)
    missing = [k for k in needed if k not in z.files]
    if missing:
        raise DataError(f"missing arrays {missing}", path=path)
    offsets = z["offsets"].astype(np.int64)
    n = len(offsets) - 1
    if offsets[0] != 0 or offsets[-1] != len(z["charges"]) or np.any(np.diff(offsets) <= 0):
        raise DataError("offsets do not describe the charges/positions arrays", path=path)
    numbers = z["charges"].astype(np.int64)
    if numbers.min() < 1:
        bad = int(np.searchsorted(offsets, int(np.argmin(numbers)), side="right") - 1)
        raise DataError("atomic number 0", path=path, row=bad)
    unknown = sorted(set(z["split"].tolist()) - set(_SPLIT_NAMES))
    if unknown:
        raise DataError(f"unknown split labels {unknown}", path=path)
    properties = pd.DataFrame(
        {
            "index": z["index"].astype(np.int64),
            "split": [_SPLIT_NAMES[s] for s in z["split"].tolist()],
        }
        | {k: z[k].astype(np.float64) for k in QM9_PROPERTIES}
    )
    try:
        return _collection(numbers, z, offsets, n, properties)
    except ValueError as exc:
        raise DataError(str(exc), path=path) from None


def _collection(
    numbers: np.ndarray,
    z: np.lib.npyio.NpzFile,
    offsets: np.ndarray,
    n: int,
    properties: pd.DataFrame,
) -> AtomsCollection:
    return AtomsCollection(
        numbers=numbers,
        positions=z["positions"].astype(np.float64),
        offsets=offsets,
        cell=np.zeros((n, 3, 3)),
        pbc=np.zeros((n, 3), dtype=bool),
        properties=properties,
    )
