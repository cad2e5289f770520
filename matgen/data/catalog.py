"""The data-set registry: every named benchmark set, its files under the data root, and checksums.

Each :class:`FileSpec` names one split: its path relative to the data root, the expected number of
rows (structures, molecules or configurations), the sha256 and size of the file as stored, and the
canonical public location of the upstream original (``source``). The stored files are repacked
(gzipped, merged or converted) from those originals, so their checksums are of the stored form; a
mirror of the data-root layout (a URL or a local directory) is what :func:`matgen.data.fetch.fetch_dataset`
downloads and verifies. ``../shared/data/README.md`` tells the provenance of every file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CATALOG", "DatasetSpec", "FileSpec", "get_spec"]


@dataclass(frozen=True)
class FileSpec:
    """One stored file holding one split of a data set.

    Attributes:
        split: split name (``train``, ``val``, ``test``, ``all`` or a set-specific name).
        path: path relative to the data root.
        rows: number of items (structures, molecules, configurations) the split holds.
        sha256: checksum of the stored file.
        size: size of the stored file in bytes.
        source: canonical public location of the upstream original.
    """

    split: str
    path: str
    rows: int
    sha256: str
    size: int
    source: str


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set.

    Attributes:
        name: registry name, as given to :func:`matgen.data.load_dataset`.
        format: reader that parses it: ``cdvae_csv``, ``qm9_npz``, ``smiles_csv``, ``extxyz``,
            ``mp_reference``.
        description: one line on what it is.
        files: one entry per split.
        extra: auxiliary files that are not splits (indexes, provenance tables).
    """

    name: str
    format: str
    description: str
    files: tuple[FileSpec, ...]
    extra: tuple[FileSpec, ...] = field(default=())

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names in registry order."""
        return tuple(f.split for f in self.files)

    def file(self, split: str) -> FileSpec:
        """Return the file spec of ``split`` (splits and extras are both searched)."""
        for f in (*self.files, *self.extra):
            if f.split == split:
                return f
        known = ", ".join(f.split for f in (*self.files, *self.extra))
        raise KeyError(f"data set {self.name!r} has no split {split!r}; it has: {known}")


CATALOG: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "mp_20",
        format="cdvae_csv",
        description="MP-20 (CDVAE): Materials Project crystals with at most 20 atoms. val/test complete; train is 20,320 of 27,136 rows, rebuilt (see the data README, section 6).",
        files=(
            FileSpec(
                "train",
                "mp_20/train_rebuilt_partial.csv.gz",
                rows=20320,
                sha256="cb156bb9e910353a2425d35ad2d2ffe083e27ec59eb1a149e22583068448b9ba",
                size=4329854,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/mp_20/train.csv",
            ),
            FileSpec(
                "val",
                "mp_20/val.csv.gz",
                rows=9047,
                sha256="cd01f8d8253a7264682576c4afdaec6b64cbba818c17ace45a81b8c3bf8f59c0",
                size=1950702,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/mp_20/val.csv",
            ),
            FileSpec(
                "test",
                "mp_20/test.csv.gz",
                rows=9046,
                sha256="37e2854a2bf944bb3b01d2bde92c43be86587a0afdbf0b31987df8780a474d34",
                size=1938674,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/mp_20/test.csv",
            ),
        ),
        extra=(
            FileSpec(
                "train_index",
                "mp_20/train_index.csv.gz",
                rows=27136,
                sha256="b0860c699ecccc06f9d46e11cffe5228c586352854791d56521bd13950858267",
                size=1265134,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/mp_20/train.csv",
            ),
        ),
    ),
    DatasetSpec(
        "mpts_52",
        format="cdvae_csv",
        description="MPTS-52 (DiffCSP): Materials Project crystals with at most 52 atoms, split by publication year. val and test only.",
        files=(
            FileSpec(
                "val",
                "mpts_52/val.csv.gz",
                rows=5000,
                sha256="af56fcaa2ed7f36e9ec0ce95ae409c73f4c909644153c3d441c76f87a4d1c11d",
                size=1930984,
                source="https://github.com/jiaor17/DiffCSP/blob/7121d159826efa2ba9500bf299250d96da37f146/data/mpts_52/val.csv",
            ),
            FileSpec(
                "test",
                "mpts_52/test.csv.gz",
                rows=8096,
                sha256="5c082d8cd8b5398bb9971f076e2f459771e01b45b1a2d206f665bd99a1369feb",
                size=3197100,
                source="https://github.com/jiaor17/DiffCSP/blob/7121d159826efa2ba9500bf299250d96da37f146/data/mpts_52/test.csv",
            ),
        ),
    ),
    DatasetSpec(
        "perov_5",
        format="cdvae_csv",
        description="Perov-5 (CDVAE): cubic perovskites (Castelli et al.). train is a 1,024-row subset of the original 11,356.",
        files=(
            FileSpec(
                "train",
                "perov_5/train_dev_subset1024.csv.gz",
                rows=1024,
                sha256="c369e3f9bca030a5bec8506310c78e025ded593e0818d4b547fd340b9b1a98b4",
                size=109889,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/perov_5/train.csv",
            ),
            FileSpec(
                "val",
                "perov_5/val.csv.gz",
                rows=3787,
                sha256="784e89dc6b8879382b2b25cf3cc0c75a3c1160f8242b2090006931a24a0f5c45",
                size=405600,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/perov_5/val.csv",
            ),
            FileSpec(
                "test",
                "perov_5/test.csv.gz",
                rows=3785,
                sha256="b635a7e4803ce8abc147da102a5ac5df1a2c9fc74fc4854afb7eac54c839420c",
                size=405015,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/perov_5/test.csv",
            ),
        ),
    ),
    DatasetSpec(
        "carbon_24",
        format="cdvae_csv",
        description="Carbon-24 (CDVAE): carbon allotropes from AIRSS. val and test only.",
        files=(
            FileSpec(
                "val",
                "carbon_24/val.csv.gz",
                rows=2032,
                sha256="bf1d3e91bbd70e0c84b3be67c19ddcc796331b797a08a9e275691a3b7a564dec",
                size=465475,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/carbon_24/val.csv",
            ),
            FileSpec(
                "test",
                "carbon_24/test.csv.gz",
                rows=2030,
                sha256="f51a69674f1d15fb06fa8be60f09abbda60283f77fd1a21d44d6ec2c9a039f65",
                size=464674,
                source="https://github.com/txie-93/cdvae/blob/f857f598d6f6cca5dc1ea0582d228f12dcc2c2ea/data/carbon_24/test.csv",
            ),
        ),
    ),
    DatasetSpec(
        "mp_sample_lemat",
        format="cdvae_csv",
        description="A random sample of 2,473 Materials Project structures of any size (LeMat-GenBench baseline), with MP energy-above-hull labels.",
        files=(
            FileSpec(
                "all",
                "mp_sample_lemat/mp_baseline_sample_2473.csv.gz",
                rows=2473,
                sha256="79cea81eadef6181877e12453675ef6c5f31910e7c7d46a9facf633371d1b890",
                size=1264996,
                source="https://github.com/LeMaterial/lemat-genbench/tree/5bab2cd8642d863250d09a9f03292109e1c7345c/baseline_data/mp",
            ),
        ),
    ),
    DatasetSpec(
        "mp_reference",
        format="mp_reference",
        description="Materials Project references: the lowest-energy elemental entries (pymatgen ComputedEntry, MP2020-compatible) and MP energy-above-hull labels.",
        files=(
            FileSpec(
                "elemental_references",
                "mp_reference/2023-02-07-mp-elemental-reference-entries.json.gz",
                rows=89,
                sha256="9fd6ef848a91c88840a0d1709b5856d0edb4af22095237e59db52f2acd6bbf79",
                size=6350,
                source="https://github.com/janosh/matbench-discovery/blob/2c7f9fc42d018711dc2f5df573d225ea6d2d17b2/data/mp/2023-02-07-mp-elemental-reference-entries.json.gz",
            ),
            FileSpec(
                "ehull_labels",
                "mp_reference/mp_ehull_labels_hyperconvexhull.csv.gz",
                rows=153235,
                sha256="51e030c2ac2098a32a07cd072929396047fec529decaa3e946795141edc3b2e0",
                size=4681680,
                source="https://github.com/lrcfmd/HyperConvexHull/blob/14239bfe6e1be41ff5e971dc17d5e789a81e887b/MP_composition_etotal.pickle.zip",
            ),
        ),
    ),
    DatasetSpec(
        "qm9",
        format="qm9_npz",
        description="QM9 with 3D coordinates: 130,831 molecules that pass the geometry-consistency check; Cormorant/EDM split 100,000 / 17,748 / 13,083.",
        files=(
            FileSpec(
                "train",
                "qm9/qm9_coords_props.npz",
                rows=100000,
                sha256="55ffae19c115ccc3542eeb24b1fd0a5bd5985bc017773972085933f570da3ae3",
                size=35366134,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
            FileSpec(
                "val",
                "qm9/qm9_coords_props.npz",
                rows=17748,
                sha256="55ffae19c115ccc3542eeb24b1fd0a5bd5985bc017773972085933f570da3ae3",
                size=35366134,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
            FileSpec(
                "test",
                "qm9/qm9_coords_props.npz",
                rows=13083,
                sha256="55ffae19c115ccc3542eeb24b1fd0a5bd5985bc017773972085933f570da3ae3",
                size=35366134,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
        ),
    ),
    DatasetSpec(
        "qm9_smiles",
        format="smiles_csv",
        description="QM9 SMILES with properties for the same 130,831 molecules and split as `qm9`.",
        files=(
            FileSpec(
                "train",
                "qm9/qm9_smiles_props.csv.gz",
                rows=100000,
                sha256="a29f1504710426a59629a9fb22b21a6a8ee22573f5c4970a38d02ba0f2fdd136",
                size=9601608,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
            FileSpec(
                "val",
                "qm9/qm9_smiles_props.csv.gz",
                rows=17748,
                sha256="a29f1504710426a59629a9fb22b21a6a8ee22573f5c4970a38d02ba0f2fdd136",
                size=9601608,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
            FileSpec(
                "test",
                "qm9/qm9_smiles_props.csv.gz",
                rows=13083,
                sha256="a29f1504710426a59629a9fb22b21a6a8ee22573f5c4970a38d02ba0f2fdd136",
                size=9601608,
                source="https://doi.org/10.6084/m9.figshare.c.978904.v5",
            ),
        ),
    ),
    DatasetSpec(
        "qm9_smiles_all",
        format="smiles_csv",
        description="All 133,885 QM9 SMILES (row i is GDB index i + 1).",
        files=(
            FileSpec(
                "all",
                "qm9/qm9_smiles_all133885.csv.gz",
                rows=133885,
                sha256="a800c8b0e8b2be35b17be8547aca19ecba1860daf3918bd27d2281631b58e7bc",
                size=346744,
                source="https://github.com/aspuru-guzik-group/selfies/blob/eb6177e5f20cfd8787f2ac4423f5b38dce6eeeb8/tests/test_sets/qm9.csv",
            ),
        ),
    ),
    DatasetSpec(
        "moses",
        format="smiles_csv",
        description="MOSES: drug-like molecules from ZINC Clean Leads; train, test and scaffold-split test.",
        files=(
            FileSpec(
                "train",
                "moses/train.csv.gz",
                rows=1584663,
                sha256="786f0313aa6b9ba5514df685f885742a70ea8d86f1a4fa48115f7f80a634265c",
                size=10238967,
                source="https://github.com/molecularsets/moses/blob/master/data/train.csv",
            ),
            FileSpec(
                "test",
                "moses/test.csv.gz",
                rows=176074,
                sha256="f896fbf3764f88d94670b9959e5872c600c12152a18233823e820761b7a791b2",
                size=1367572,
                source="https://github.com/molecularsets/moses/blob/master/data/test.csv",
            ),
            FileSpec(
                "test_scaffolds",
                "moses/test_scaffolds.csv.gz",
                rows=176225,
                sha256="adffb2192c1bfe31ab0e13154d4af19a37dc18bdbf3cd7b4491e04405128adde",
                size=1274114,
                source="https://github.com/molecularsets/moses/blob/master/data/test_scaffolds.csv",
            ),
        ),
    ),
    DatasetSpec(
        "ethanol",
        format="extxyz",
        description="rMD17 ethanol (PBE/def2-SVP) with the BOTNet extras (methanol, H removal, dimers, normal modes).",
        files=(
            FileSpec(
                "train",
                "mlff/ethanol/train.xyz.gz",
                rows=1000,
                sha256="6cd5918f4177db4494cdb7020a7eb8601ec770ae1c8e5e69e7ab1f077cc3373b",
                size=316174,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/train.xyz",
            ),
            FileSpec(
                "test_MD",
                "mlff/ethanol/test_MD.xyz.gz",
                rows=1000,
                sha256="e4b29648c022d09dee2e30e3194f30569acba0bbd19cd8b7657a86ee4f53ef7e",
                size=316127,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_MD.xyz",
            ),
            FileSpec(
                "train_eth_meth",
                "mlff/ethanol/train_eth_meth.xyz.gz",
                rows=1300,
                sha256="12d7f93eb45fd8a5f26005627fe5fe47f4de21227d2eec498b4f39c4d45b5bc1",
                size=374097,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/train_eth_meth.xyz",
            ),
            FileSpec(
                "test_eth_meth",
                "mlff/ethanol/test_eth_meth.xyz.gz",
                rows=1145,
                sha256="0c036dba75af9f8b9f23cac093e02191943e64190e8058b966eef86947184bbd",
                size=341889,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_eth_meth.xyz",
            ),
            FileSpec(
                "test_H_removal",
                "mlff/ethanol/test_H_removal.xyz.gz",
                rows=60,
                sha256="9b50237f45e8a6374cdf9948d801cb0a10fdd38aa922da8da4b61894f83cebd1",
                size=2352,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_H_removal.xyz",
            ),
            FileSpec(
                "test_dimers",
                "mlff/ethanol/test_dimers.xyz.gz",
                rows=429,
                sha256="d9b6a668802f3f3d913cd914fea7164a54e912e60a76d1f3a4895f32885ae703",
                size=6942,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_dimers.xyz",
            ),
            FileSpec(
                "test_norm_mode_874",
                "mlff/ethanol/test_norm_mode_874.xyz.gz",
                rows=37,
                sha256="74258eff20203126fe5290f448430e70d50ac75483196ed6944d5b413219d6dc",
                size=6558,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_norm_mode_874.xyz",
            ),
            FileSpec(
                "test_norm_mode_3005",
                "mlff/ethanol/test_norm_mode_3005.xyz.gz",
                rows=18,
                sha256="72e8d058dbf6afe7c5bda54606c712e0fcefdfa2a28e440ffadc2eea31c01786",
                size=3248,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/test_norm_mode_3005.xyz",
            ),
            FileSpec(
                "isolated_atoms",
                "mlff/ethanol/isolated_atoms.xyz.gz",
                rows=4,
                sha256="c987dacbf98944fd278a6e083a170d41dec82df59b4386f86b52f6f7db39ff55",
                size=186,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_ethanol/isolated_atoms.xyz",
            ),
        ),
    ),
    DatasetSpec(
        "acac",
        format="extxyz",
        description="Acetylacetone (MACE paper, PBE+D3/def2-SVP): MD at 300 K and 600 K, H transfer, dihedral scan.",
        files=(
            FileSpec(
                "train_300K",
                "mlff/acac/train_300K.xyz.gz",
                rows=500,
                sha256="49573f6265414a179205ce8e7b13b179ff7847e2ee0357c9954f48c2682102b4",
                size=264025,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/train_300K.xyz",
            ),
            FileSpec(
                "train_600K",
                "mlff/acac/train_600K.xyz.gz",
                rows=500,
                sha256="137344cd77312d3d046953c4dce772ef6ca8e15b0b75a37d51dce4cad1e5a6e5",
                size=265938,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/train_600K.xyz",
            ),
            FileSpec(
                "test_MD_300K",
                "mlff/acac/test_MD_300K.xyz.gz",
                rows=650,
                sha256="5b7031f90e6acf73ad66cf962e229602c06849653a292a96495e2366692727c6",
                size=342723,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/test_MD_300K.xyz",
            ),
            FileSpec(
                "test_MD_600K",
                "mlff/acac/test_MD_600K.xyz.gz",
                rows=650,
                sha256="9eb9222b96324147c8c9795e5235416a5da33f00e4db6bfa23c446c7eee8e799",
                size=345392,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/test_MD_600K.xyz",
            ),
            FileSpec(
                "test_H_transfer",
                "mlff/acac/test_H_transfer.xyz.gz",
                rows=15,
                sha256="47fb06aa6de7036b0c612131b2c3e82d71ae90e8474a269438963704cdf62a32",
                size=4078,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/test_H_transfer.xyz",
            ),
            FileSpec(
                "test_dihedral",
                "mlff/acac/test_dihedral.xyz.gz",
                rows=45,
                sha256="bf6c057e026223836be5464ca6884ca836b95784a23ae3e07b6b5f05e377c743",
                size=10577,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/test_dihedral.xyz",
            ),
            FileSpec(
                "isolated_atoms",
                "mlff/acac/isolated_atoms.xyz.gz",
                rows=3,
                sha256="9c8acec7e40fd96f556f73ec283aecf782551d5bdbc64dd8ad212dea7ca800a6",
                size=171,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_acac/isolated_atoms.xyz",
            ),
        ),
    ),
    DatasetSpec(
        "3bpa",
        format="extxyz",
        description="3BPA (Kovacs et al. 2021): train sets only (the test sets are not available here).",
        files=(
            FileSpec(
                "train_300K",
                "mlff/3bpa/train_300K.xyz.gz",
                rows=500,
                sha256="bd515d340ec0f2f467e9aadf543e3a365d1b8d74ffdef21047c096c9284a53d3",
                size=470737,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_3BPA/train_300K.xyz",
            ),
            FileSpec(
                "train_mixedT",
                "mlff/3bpa/train_mixedT.xyz.gz",
                rows=500,
                sha256="5ef371a2e473af6ae7c2d8238a2d9bde94de9452e4c78ea472d9810e24704d35",
                size=474208,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_3BPA/train_mixedT.xyz",
            ),
            FileSpec(
                "isolated_atoms",
                "mlff/3bpa/iso_atoms.xyz.gz",
                rows=4,
                sha256="d514bdc5dc982bfd95ee9db1bd2b13a103afbd36247aa0548100f1cc1987d67a",
                size=162,
                source="https://github.com/davkovacs/BOTNet-datasets/blob/29e6d467317e4b5967b7ea5cbee54de953fa0d45/dataset_3BPA/iso_atoms.xyz",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Si",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Si, periodic, with energy, forces and stress.",
        files=(
            FileSpec(
                "train",
                "mlff/mlearn/Si_train.extxyz.gz",
                rows=214,
                sha256="ebd4e85c9758d9bbf3d2c95d847cfb419ddc08c9445c7f56c409b02f613d5873",
                size=382391,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Si/training.json",
            ),
            FileSpec(
                "test",
                "mlff/mlearn/Si_test.extxyz.gz",
                rows=25,
                sha256="ac9caec938caf09cbdddf53b600f83e350e083b724fedd086859955fc0bb2b35",
                size=46516,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Si/test.json",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Ge",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Ge, periodic, with energy, forces and stress.",
        files=(
            FileSpec(
                "train",
                "mlff/mlearn/Ge_train.extxyz.gz",
                rows=228,
                sha256="240d662749c2e53ae52c49e3f1383d76a2c12b042d7da6e7d5831daa189eb359",
                size=410863,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Ge/training.json",
            ),
            FileSpec(
                "test",
                "mlff/mlearn/Ge_test.extxyz.gz",
                rows=25,
                sha256="009303bbf3da48003a8e25f4563b546c4590094c343203c073eed9b515586457",
                size=47545,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Ge/test.json",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Li",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Li, periodic, with energy, forces and stress.",
        files=(
            FileSpec(
                "train",
                "mlff/mlearn/Li_train.extxyz.gz",
                rows=241,
                sha256="dcbbf81579676f0d93789aff4349e632f960bae452638f0f59b3dc712ec5d698",
                size=417948,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Li/training.json",
            ),
            FileSpec(
                "test",
                "mlff/mlearn/Li_test.extxyz.gz",
                rows=29,
                sha256="bb553cfd8fdf223fef8814699b3e573ed48423456cb9190a988712b0accaae5e",
                size=48930,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Li/test.json",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Mo",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Mo, periodic, with energy, forces and stress.",
        files=(
            FileSpec(
                "train",
                "mlff/mlearn/Mo_train.extxyz.gz",
                rows=194,
                sha256="b9ecf5da171e00d47eda377614f7b5821006161feb484edc259dc4a79ddfc7ea",
                size=360321,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Mo/training.json",
            ),
            FileSpec(
                "test",
                "mlff/mlearn/Mo_test.extxyz.gz",
                rows=23,
                sha256="fe4ed99313c030d1191f68f031afbf26ec67896275986ee852062f2c7811c778",
                size=43896,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Mo/test.json",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Cu",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Cu, periodic, with energy, forces and stress. Test split only.",
        files=(
            FileSpec(
                "test",
                "mlff/mlearn/Cu_test.extxyz.gz",
                rows=31,
                sha256="66a8b182667f371f755704e3a77a97bbf03917da64cb8a9df829b6470c7cd12c",
                size=77198,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Cu/test.json",
            ),
        ),
    ),
    DatasetSpec(
        "mlearn_Ni",
        format="extxyz",
        description="mlearn benchmark (Zuo et al. 2020, PBE/VASP): Ni, periodic, with energy, forces and stress. Test split only.",
        files=(
            FileSpec(
                "test",
                "mlff/mlearn/Ni_test.extxyz.gz",
                rows=31,
                sha256="7f7f3fcdc251af81f444bcb4649138e0551b1917f445d2f9fe7ab79739ad3df1",
                size=81085,
                source="https://github.com/materialsvirtuallab/mlearn/blob/10c427a5480c6281c15c64efaf869b03be04818f/data/Ni/test.json",
            ),
        ),
    ),
)

_BY_NAME = {spec.name: spec for spec in CATALOG}


def get_spec(name: str) -> DatasetSpec:
    """Return the registry entry called ``name``.

    Raises:
        KeyError: naming the unknown set and listing the registered ones.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no data set called {name!r}; registered: {', '.join(_BY_NAME)}") from None
