"""The CDVAE-style CSV reader on real rows, on bad rows, and through its processed cache."""

from __future__ import annotations

import gzip
import re

import numpy as np
import pandas as pd
import pytest

from matgen.data import DataError, load_dataset, read_crystal_csv
from matgen.data.integrity import text_stream


@pytest.fixture()
def perov_rows(root):
    """The first 12 rows of the real Perov-5 test split, as a DataFrame."""
    return pd.read_csv(text_stream(root / "perov_5" / "test.csv.gz")).head(12)


def _write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def _cif_with(cif: str, old: str, new: str) -> str:
    assert old in cif
    return cif.replace(old, new)


def test_every_property_column_is_kept(root, perov_rows, tmp_path):
    data = read_crystal_csv(_write(perov_rows, tmp_path / "p.csv"), progress=False, cache=False)
    expected = [
        c if not c.startswith("Unnamed") else "index" for c in perov_rows.columns if c != "cif"
    ]
    assert list(data.properties.columns) == expected
    np.testing.assert_allclose(data.properties["heat_ref"], perov_rows["heat_ref"])
    assert data.properties["material_id"].tolist() == perov_rows["material_id"].tolist()


def test_parsed_structures_match_pymatgen_and_are_wrapped(root, perov_rows, tmp_path):
    from pymatgen.core import Structure

    data = read_crystal_csv(
        _write(perov_rows, tmp_path / "p.csv"), progress=False, cache=False, workers=1
    )
    for i, cif in enumerate(perov_rows["cif"]):
        reference = Structure.from_str(cif, fmt="cif")
        ours = data.structure(i)
        assert [s.Z for s in ours.species] == [s.Z for s in reference.species]
        np.testing.assert_allclose(ours.lattice.matrix, reference.lattice.matrix, atol=1e-12)
        assert (ours.frac_coords > -1e-12).all() and (ours.frac_coords < 1).all()
        delta = ours.frac_coords - reference.frac_coords
        np.testing.assert_allclose(delta - np.round(delta), 0, atol=1e-9)


BAD_ROWS = {
    3: ("malformed", r"malformed CIF"),
    5: ("unknown element", r"unknown element .Xx."),
    7: ("zero volume", r"(degenerate cell|Singular matrix)"),
    9: ("empty", r"empty CIF"),
}


def _corrupt(perov_rows):
    frame = perov_rows.copy()
    cifs = frame["cif"].tolist()
    cifs[3] = "data_broken\n_cell_length_a 3.9\nloop_\n_atom_site_label\n"
    cifs[5] = (
        cifs[5]
        .replace(" O ", " Xx ")
        .replace("O1", "Xx1")
        .replace("O2", "Xx2")
        .replace("O0", "Xx0")
    )
    lines = cifs[7].splitlines()
    cifs[7] = "\n".join(
        "_cell_length_c   0.0" if line.startswith("_cell_length_c") else line for line in lines
    )
    cifs[9] = ""
    frame["cif"] = cifs
    return frame


def test_bad_rows_raise_naming_file_row_and_id(perov_rows, tmp_path):
    frame = _corrupt(perov_rows)
    path = _write(frame, tmp_path / "bad.csv")
    with pytest.raises(DataError) as info:
        read_crystal_csv(path, progress=False, cache=False)
    message = str(info.value)
    assert (
        str(path) in message
        and "row 3" in message
        and f"item {str(frame['material_id'][3])!r}" in message
    )
    assert "3 more bad rows" in message


def test_bad_rows_can_be_skipped_counted_and_listed(perov_rows, tmp_path):
    frame = _corrupt(perov_rows)
    data = read_crystal_csv(
        _write(frame, tmp_path / "bad.csv"), on_error="skip", progress=False, cache=False
    )
    assert len(data) == len(frame) - len(BAD_ROWS)
    assert [b.row for b in data.bad_items] == sorted(BAD_ROWS)
    for bad in data.bad_items:
        assert bad.item == str(frame["material_id"][bad.row])
        assert re.search(BAD_ROWS[bad.row][1], bad.reason), bad
    assert data.properties["material_id"].tolist() == [
        m for r, m in enumerate(frame["material_id"]) if r not in BAD_ROWS
    ]


def test_empty_file_truncated_gzip_and_missing_column(perov_rows, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_crystal_csv(empty, progress=False, cache=False)
    packed = tmp_path / "rows.csv.gz"
    packed.write_bytes(gzip.compress(perov_rows.to_csv(index=False).encode())[:-40])
    with pytest.raises(DataError, match=r"rows\.csv\.gz: truncated gzip"):
        read_crystal_csv(packed, progress=False, cache=False)
    no_cif = _write(perov_rows.drop(columns=["cif"]), tmp_path / "nocif.csv")
    with pytest.raises(DataError, match=r"nocif\.csv: no 'cif' column"):
        read_crystal_csv(no_cif, progress=False, cache=False)


def test_parallel_parse_equals_serial_and_cache_round_trips(root, tmp_path, monkeypatch):
    monkeypatch.setenv("MATGEN_CACHE", str(tmp_path / "cache"))
    path = root / "carbon_24" / "val.csv.gz"
    serial = read_crystal_csv(path, workers=1, progress=False, cache=False)
    parallel = read_crystal_csv(path, workers=2, progress=False, cache=True)
    _forbid_parsing(monkeypatch)  # the cache is read, not re-parsed
    cached = read_crystal_csv(path, progress=False, cache=True)
    for other in (parallel, cached):
        np.testing.assert_array_equal(other.numbers, serial.numbers)
        np.testing.assert_array_equal(other.positions, serial.positions)
        np.testing.assert_array_equal(other.cell, serial.cell)
        pd.testing.assert_frame_equal(other.properties, serial.properties)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1


def _forbid_parsing(monkeypatch):
    import matgen.data.crystal_csv as crystal_csv

    def parse(*args, **kwargs):
        raise AssertionError("parsed the CSV again instead of reading the cache")

    monkeypatch.setattr(crystal_csv, "_read_table", parse)
    monkeypatch.setattr(crystal_csv, "_parse_all", parse)


def test_mp20_loads_with_properties_and_unique_ids(mp20_test):
    assert len(mp20_test) == 9046
    assert mp20_test.properties["material_id"].is_unique
    assert (mp20_test.collection.n_atoms <= 20).all()
    # The 7,342 original test rows carry CDVAE's e_above_hull; rebuilt rows leave it empty.
    assert int(mp20_test.properties["e_above_hull"].notna().sum()) == 7342


def test_second_load_of_all_mp20_reads_the_cache(root, monkeypatch):
    for split in ("train", "val", "test"):
        load_dataset("mp_20", split, progress=False)  # make sure the cache exists
    _forbid_parsing(monkeypatch)
    total = sum(len(d) for d in load_dataset("mp_20", progress=False).values())
    assert total == 38_413


def test_cache_keeps_column_types_and_missing_values(perov_rows, tmp_path, monkeypatch):
    monkeypatch.setenv("MATGEN_CACHE", str(tmp_path / "cache"))
    frame = perov_rows.head(4).copy()
    frame["flag"] = [True, None, False, True]
    frame["note"] = ["a", None, "c", "d"]
    frame["maybe"] = [1.5, None, 2.5, None]
    path = _write(frame, tmp_path / "typed.csv")
    fresh = read_crystal_csv(path, progress=False, cache=True)
    cached = read_crystal_csv(path, progress=False, cache=True)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    pd.testing.assert_frame_equal(cached.properties, fresh.properties)
    assert (
        cached.properties["flag"].tolist()[0] is True
        and cached.properties["flag"].tolist()[2] is False
    )
    assert pd.isna(cached.properties["note"][1]) and cached.properties["note"][2] == "c"
