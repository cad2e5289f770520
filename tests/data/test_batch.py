"""AtomsBatch: round trips, mixed crystals and molecules, DataLoader collation, devices and dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from matgen.data import AtomsBatch, DataError, load_dataset


def _assert_structures_equal(a, b, atol=1e-6):
    assert [s.Z for s in a.species] == [s.Z for s in b.species]
    np.testing.assert_allclose(a.lattice.matrix, b.lattice.matrix, atol=atol)
    np.testing.assert_allclose(a.cart_coords, b.cart_coords, atol=atol)


@pytest.mark.slow
def test_round_trip_of_all_38413_mp20_structures(root):
    total = 0
    for split, dataset in load_dataset("mp_20", progress=False).items():
        for start in range(0, len(dataset), 2048):
            index = range(start, min(start + 2048, len(dataset)))
            structures = [dataset.structure(i) for i in index]
            back = AtomsBatch.from_structures(structures).to_structures()
            for i, s, b in zip(index, structures, back, strict=True):
                try:
                    _assert_structures_equal(s, b)
                except AssertionError as exc:
                    raise AssertionError(f"mp_20/{split} {dataset.item_id(i)}: {exc}") from None
            total += len(structures)
    assert total == 38_413


def test_mixed_crystals_and_molecules_batch_like_each_alone():
    systems = [
        bulk("NaCl", "rocksalt", a=5.64),
        molecule("CH3CH2OH"),
        bulk("Si", "diamond", a=5.43) * (2, 1, 1),
        molecule("H2O"),
    ]
    batch = AtomsBatch.from_atoms(systems, ids=["nacl", "ethanol", "si", "water"]).with_neighbors(
        4.0
    )
    assert batch.pbc.tolist() == [[True] * 3, [False] * 3, [True] * 3, [False] * 3]
    assert batch.n_atoms.tolist() == [len(s) for s in systems]
    vectors = batch.edge_vectors()
    assert float(vectors.norm(dim=1).max()) <= 4.0
    for k, (part, system) in enumerate(zip(batch.split(), systems, strict=True)):
        alone = AtomsBatch.from_atoms([system]).with_neighbors(4.0)
        assert part.ids == (batch.ids[k],)
        key = lambda b: sorted(zip(*b.edge_index.tolist(), *b.shifts.T.tolist(), strict=True))  # noqa: E731
        assert key(part) == key(alone)
        back = part.to_atoms()[0]
        np.testing.assert_allclose(back.positions, system.positions, atol=1e-12)
        assert (back.numbers == system.numbers).all() and (back.pbc == system.pbc).all()
    # fractional coordinates: crystals in their cell, molecules (no cell) in Å
    frac = batch.frac_coords
    offsets = batch.atom_offsets.tolist()
    np.testing.assert_allclose(
        frac[: offsets[1]].numpy(), systems[0].get_scaled_positions(wrap=False), atol=1e-12
    )
    np.testing.assert_allclose(
        frac[offsets[1] : offsets[2]].numpy(), systems[1].positions, atol=1e-12
    )
    # molecules never get periodic images
    molecule_edges = torch.isin(batch.batch[batch.edge_index[0]], torch.tensor([1, 3]))
    assert int(batch.shifts[molecule_edges].abs().sum()) == 0


def test_dataloader_collates_items_with_edges_and_targets(root):
    data = load_dataset("mlearn_Si", "train", cutoff=5.0)
    loader = data.loader(batch_size=7, shuffle=False)
    batch = next(iter(loader))
    whole = AtomsBatch.from_collection(data.collection, range(7)).with_neighbors(5.0)
    assert len(batch) == 7 and batch.cutoff == 5.0
    torch.testing.assert_close(batch.positions, whole.positions)
    torch.testing.assert_close(batch.edge_vectors(), whole.edge_vectors())
    assert batch.edge_index.tolist() == whole.edge_index.tolist()
    assert set(batch.system_props) == {"energy", "stress"} and set(batch.atom_props) == {"forces"}
    assert batch.system_props["stress"].shape == (7, 3, 3)
    assert batch.atom_props["forces"].shape == (batch.num_atoms, 3)
    np.testing.assert_allclose(
        batch.system_props["energy"].numpy(), data.collection.system_arrays["energy"][:7]
    )


def test_to_changes_float_dtype_only_and_split_inverts_collate(mp20_test):
    batch = AtomsBatch.from_collection(
        mp20_test.collection, range(5), id_column="material_id"
    ).with_neighbors(3.0)
    single = batch.to(dtype=torch.float32)
    assert single.positions.dtype == torch.float32 and single.cell.dtype == torch.float32
    assert single.numbers.dtype == torch.long and single.edge_index.dtype == torch.long
    assert single.pbc.dtype == torch.bool
    again = AtomsBatch.collate(batch.split())
    assert again.ids == batch.ids == tuple(mp20_test.properties["material_id"][:5])
    assert again.edge_index.tolist() == batch.edge_index.tolist()
    torch.testing.assert_close(again.positions, batch.positions)


def test_chunks_are_consecutive_balanced_and_collate_back(mp20_test):
    batch = AtomsBatch.from_collection(
        mp20_test.collection, range(30), id_column="material_id"
    ).with_neighbors(4.0)
    largest = int(batch.n_atoms.max())
    for parts in (1, 2, 3, 7, 30, 100):
        chunks = batch.chunks(parts)
        assert 1 <= len(chunks) <= min(parts, len(batch))
        assert all(len(c) > 0 for c in chunks)
        share = batch.num_atoms / len(chunks)
        assert all(abs(c.num_atoms - share) <= largest for c in chunks)
        again = AtomsBatch.collate(chunks)
        assert again.ids == batch.ids
        assert again.edge_index.tolist() == batch.edge_index.tolist()
        torch.testing.assert_close(again.shifts, batch.shifts)
        torch.testing.assert_close(again.positions, batch.positions)
        torch.testing.assert_close(again.cell, batch.cell)
    with pytest.raises(ValueError, match="at least 1"):
        batch.chunks(0)


def test_frac_coords_and_volume_match_pymatgen(mp20_test):
    batch = AtomsBatch.from_collection(mp20_test.collection, range(20))
    offsets = batch.atom_offsets.tolist()
    for i in range(20):
        structure = mp20_test.structure(i)
        np.testing.assert_allclose(
            batch.frac_coords[offsets[i] : offsets[i + 1]].numpy(),
            structure.frac_coords,
            atol=1e-10,
        )
        assert abs(float(batch.volume[i]) - structure.volume) < 1e-8


def test_two_dimensional_systems_and_targets_and_ids():
    from ase.build import graphene

    sheet = graphene(vacuum=None)  # pbc (T, T, F) with a zero third cell vector
    batch = AtomsBatch.from_atoms([sheet, sheet]).with_neighbors(3.0)
    # 3 + 6 + 3 neighbours within 3 Å (1.42, 2.46, 2.84 Å) for each of 2 atoms in 2 copies
    assert int(batch.shifts[:, 2].abs().sum()) == 0 and batch.num_edges == 2 * 2 * 12
    # Repeated default ids become distinct on collation, so errors name one system.
    joined = AtomsBatch.collate(
        [AtomsBatch.from_atoms([sheet]), AtomsBatch.from_atoms([molecule("H2O")])]
    )
    assert joined.ids == ("0@0", "0@1")
    # Copies never share their target dictionaries with the original.
    copy = batch.to(dtype=torch.float32)
    copy.system_props["extra"] = torch.zeros(2)
    assert (
        "extra" not in batch.system_props and "extra" not in batch.with_neighbors(2.0).system_props
    )


def test_collection_targets_reach_batches_and_ase(mp20_test, root):
    batch = AtomsBatch.from_collection(mp20_test.collection, [0, 1])
    np.testing.assert_allclose(
        batch.system_props["band_gap"].numpy(), mp20_test.properties["band_gap"][:2]
    )
    atoms = load_dataset("mlearn_Si", "test").atoms(0)
    collection = load_dataset("mlearn_Si", "test").collection
    assert atoms.get_potential_energy() == collection.system_arrays["energy"][0]
    np.testing.assert_allclose(atoms.get_forces(), collection.atom_arrays["forces"][: len(atoms)])
    from ase.stress import full_3x3_to_voigt_6_stress

    np.testing.assert_allclose(
        atoms.get_stress(), full_3x3_to_voigt_6_stress(collection.system_arrays["stress"][0])
    )


def test_bad_systems_are_named():
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.positions[0, 1] = np.nan
    with pytest.raises(DataError, match="item 'broken': non-finite position for atom 0"):
        AtomsBatch.from_atoms([atoms], ids=["broken"])
    flat = bulk("Cu", "fcc", a=3.6)
    flat.cell[2] = flat.cell[0]
    with pytest.raises(DataError, match="item 'flat': degenerate cell"):
        AtomsBatch.from_atoms([flat], ids=["flat"])
    from ase import Atoms

    with pytest.raises(DataError, match="item 'empty': structure has no atoms"):
        AtomsBatch.from_atoms([Atoms()], ids=["empty"])
    batch = AtomsBatch.from_atoms([bulk("Cu", "fcc", a=3.6), molecule("H2O")], ids=["cu", "water"])
    batch.positions[2, 0] = float("inf")
    with pytest.raises(DataError, match="item 'water': non-finite position for atom 1"):
        batch.validate()


def test_neighbor_errors_name_the_structure_in_any_chunk():
    systems = [bulk("Cu", "fcc", a=3.6), bulk("Si", "diamond", a=5.43), bulk("Al", "fcc", a=4.05)]
    batch = AtomsBatch.from_atoms(systems, ids=["cu", "si", "al"])
    batch.positions[-1, 2] = float("nan")  # moved after construction, as a relaxation step would
    last = batch.chunks(3)[-1]  # the bad structure is system 0 of its own chunk
    for part in (batch, last):
        with pytest.raises(DataError, match="item 'al': non-finite positions"):
            part.with_neighbors(3.0)
