"""Reading user structure files: CIF files, folders, zips, extxyz, ASE databases, CDVAE CSVs."""

from __future__ import annotations

import zipfile

import ase.db
import ase.io
import numpy as np
import pytest
from pymatgen.io.ase import AseAtomsAdaptor

from matgen.data import DataError
from matgen.data.structure_files import read_structures


@pytest.fixture()
def structures(mp20_test):
    return [mp20_test.structure(i) for i in range(6)]


def _same(a, b):
    assert [s.Z for s in a.species] == [s.Z for s in b.species]
    np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=1e-5)
    delta = a.frac_coords - b.frac_coords
    np.testing.assert_allclose(delta - np.round(delta), 0, atol=1e-5)


def test_every_format_reads_the_same_structures(structures, tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, s in enumerate(structures):
        s.to(filename=str(folder / f"s{i}.cif"))
    (folder / "s9_broken.cif").write_text("data_x\nloop_\n_atom_site_label\n")
    with zipfile.ZipFile(tmp_path / "cifs.zip", "w") as archive:
        for file in sorted(folder.glob("*.cif")):
            archive.write(file, f"inner/{file.name}")
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    ase.io.write(tmp_path / "all.extxyz", atoms, format="extxyz")
    with ase.db.connect(tmp_path / "all.db") as db:
        for a in atoms:
            db.write(a)
    import pandas as pd

    pd.DataFrame(
        {"material_id": [f"m{i}" for i in range(6)], "cif": [s.to(fmt="cif") for s in structures]}
    ).to_csv(tmp_path / "all.csv", index=False)
    for path in (
        folder,
        tmp_path / "cifs.zip",
        tmp_path / "all.extxyz",
        tmp_path / "all.db",
        tmp_path / "all.csv",
    ):
        found = read_structures(path)
        assert len(found.structures) == 6, path
        for a, b in zip(found.structures, structures, strict=True):
            _same(a, b)
        if path.suffix in ("", ".zip"):
            assert len(found.bad_items) == 1 and "s9_broken" in found.bad_items[0].item
            assert "malformed CIF" in found.bad_items[0].reason
    assert read_structures(tmp_path / "all.csv").ids == [f"m{i}" for i in range(6)]
    both = read_structures(folder / "s0.cif", tmp_path / "all.extxyz")
    assert (
        len(both.structures) == 7
        and both.ids[0].endswith("s0.cif")
        and both.ids[1] == "all.extxyz:0"
    )


def test_missing_path_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.cif: no such file or folder"):
        read_structures(tmp_path / "nothere.cif")
