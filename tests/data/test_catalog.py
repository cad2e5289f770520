"""Every registered data set loads with the row counts of ../shared/data/README.md; corrupt files
fail with messages that name them; fetching from a mirror verifies what it copies."""

from __future__ import annotations

import gzip
import http.server
import shutil
import threading
from functools import partial

import pytest

from matgen.data import CATALOG, DataError, fetch_dataset, get_spec, load_dataset

# Row counts as ../shared/data/README.md states them (independent of the registry's own numbers).
README_ROWS = {
    "mp_20": {"train": 20_320, "val": 9_047, "test": 9_046},
    "mpts_52": {"val": 5_000, "test": 8_096},
    "perov_5": {"train": 1_024, "val": 3_787, "test": 3_785},
    "carbon_24": {"val": 2_032, "test": 2_030},
    "mp_sample_lemat": {"all": 2_473},
    "mp_reference": {"elemental_references": 89, "ehull_labels": 153_235},
    "qm9": {"train": 100_000, "val": 17_748, "test": 13_083},
    "qm9_smiles": {"train": 100_000, "val": 17_748, "test": 13_083},
    "qm9_smiles_all": {"all": 133_885},
    "moses": {"train": 1_584_663, "test": 176_074, "test_scaffolds": 176_225},
    "ethanol": {"train": 1000, "test_MD": 1000, "train_eth_meth": 1300, "test_eth_meth": 1145,
                "test_H_removal": 60, "test_dimers": 429, "test_norm_mode_874": 37,
                "test_norm_mode_3005": 18, "isolated_atoms": 4},
    "acac": {"train_300K": 500, "train_600K": 500, "test_MD_300K": 650, "test_MD_600K": 650,
             "test_H_transfer": 15, "test_dihedral": 45, "isolated_atoms": 3},
    "3bpa": {"train_300K": 500, "train_mixedT": 500, "isolated_atoms": 4},
    "mlearn_Si": {"train": 214, "test": 25},
    "mlearn_Ge": {"train": 228, "test": 25},
    "mlearn_Li": {"train": 241, "test": 29},
    "mlearn_Mo": {"train": 194, "test": 23},
    "mlearn_Cu": {"test": 31},
    "mlearn_Ni": {"test": 31},
}  # fmt: skip


def test_registry_covers_the_readme():
    assert {spec.name for spec in CATALOG} == set(README_ROWS)
    for spec in CATALOG:
        assert {f.split: f.rows for f in spec.files} == README_ROWS[spec.name]


@pytest.mark.parametrize("name", [spec.name for spec in CATALOG])
def test_every_registered_set_loads_with_readme_row_counts(root, name):
    loaded = load_dataset(name, progress=False)
    assert {split: len(value) for split, value in loaded.items()} == README_ROWS[name]


def test_mp20_train_index_lists_every_original_train_row(root):
    index = load_dataset("mp_20", "train_index")
    assert len(index) == 27_136
    assert int(index["has_structure"].sum()) == 20_320


def _copy_set(root, tmp_path, name):
    for f in get_spec(name).files:
        (tmp_path / f.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / f.path, tmp_path / f.path)
    return tmp_path


def test_checksum_mismatch_names_the_file(root, tmp_path):
    _copy_set(root, tmp_path, "carbon_24")
    target = tmp_path / "carbon_24" / "val.csv.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"carbon_24/val\.csv\.gz.*checksum mismatch"):
        load_dataset("carbon_24", "val", root=tmp_path)


def test_truncated_gzip_names_the_file(root, tmp_path):
    _copy_set(root, tmp_path, "carbon_24")
    target = tmp_path / "carbon_24" / "test.csv.gz"
    target.write_bytes(target.read_bytes()[:50_000])
    with pytest.raises(DataError, match=r"carbon_24/test\.csv\.gz.*size is 50000 bytes"):
        load_dataset("carbon_24", "test", root=tmp_path)
    # Without checksum verification the reader itself reports the truncation.
    with pytest.raises(DataError, match=r"carbon_24/test\.csv\.gz.*truncated gzip"):
        load_dataset("carbon_24", "test", root=tmp_path, verify=False)


def test_missing_file_and_unknown_set_are_named(tmp_path):
    with pytest.raises(DataError, match=r"perov_5/test\.csv\.gz.*file not found"):
        load_dataset("perov_5", "test", root=tmp_path)
    with pytest.raises(KeyError, match="no data set called 'mp_21'"):
        load_dataset("mp_21")
    with pytest.raises(KeyError, match="has no split 'train'"):
        load_dataset("carbon_24", "train")


def test_fetch_from_a_local_mirror(root, tmp_path):
    dest = tmp_path / "dest"
    paths = fetch_dataset("mlearn_Si", root, root=dest)
    assert [p.relative_to(dest).as_posix() for p in paths] == [
        f.path for f in get_spec("mlearn_Si").files
    ]
    assert len(load_dataset("mlearn_Si", "train", root=dest)) == 214
    # A second fetch finds valid files and copies nothing: removing the mirror does not matter.
    assert fetch_dataset("mlearn_Si", tmp_path / "nowhere", root=dest) == paths


def test_fetch_over_http_verifies_and_rejects_corrupt_files(root, tmp_path):
    mirror = _copy_set(root, tmp_path / "mirror", "mlearn_Cu")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        paths = fetch_dataset("mlearn_Cu", url, root=tmp_path / "dest")
        assert len(load_dataset("mlearn_Cu", "test", root=tmp_path / "dest")) == 31
        # Corrupt the mirror: the fetch fails, names the URL, and leaves no file behind.
        mirrored = mirror / "mlff" / "mlearn" / "Cu_test.extxyz.gz"
        mirrored.write_bytes(gzip.compress(b"not the registered file"))
        with pytest.raises(
            DataError, match=r"Cu_test\.extxyz\.gz.*fetched from http://127\.0\.0\.1"
        ):
            fetch_dataset("mlearn_Cu", url, root=tmp_path / "other")
        assert not (tmp_path / "other" / "mlff" / "mlearn" / "Cu_test.extxyz.gz").exists()
        assert paths[0].is_file()
    finally:
        server.shutdown()
