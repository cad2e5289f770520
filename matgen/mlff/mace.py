"""The MACE potential (Batatia et al., NeurIPS 2022) on e3nn blocks from :mod:`matgen.nn`.

Energy of a system:

    E = sum_i E0[z_i] + sum_i (scale * sum_t e_i^(t) + shift)

with ``e_i^(t)`` the site energy read out after message-passing layer ``t``. Each layer is an
interaction (equivariant convolution, :mod:`matgen.nn.interaction`) followed by a product
block (symmetric contraction to body order ``correlation + 1``, :mod:`matgen.nn.readout`).
Forces ``-dE/dx`` and stress ``(1/V) dE/dε`` come from one backward pass through a symmetric
strain of positions and cell (:func:`matgen.mlff.potential.energy_forces_stress`).

Edges: the model receives at atom ``i`` from every neighbour ``j`` of the batch's neighbour list
within ``r_max``, with edge vector ``x_i - (x_j + S @ cell)``.

Inference on a CPU reads the radial MLPs' weights from a quintic Hermite table of the edge
length (:class:`matgen.nn.radial_table.RadialTable`, built on first use and rebuilt when the
radial parameters change) wherever no parameter needs a gradient, in place of several matrix
products per edge forward and backward (``benchmarks/bench_mace_cpu.py`` times both); the
table matches the MLPs to ``1e-10`` of each weight's largest value (measured on every build). Training, CUDA and ``model.tabulate_radial = False`` evaluate the MLPs.
"""

from __future__ import annotations

import copy
import threading

import torch
from ase.data import chemical_symbols
from e3nn import o3
from torch import nn

from matgen.data.batch import AtomsBatch
from matgen.data.errors import DataError
from matgen.mlff.config import MACEConfig
from matgen.nn.interaction import ElementInteraction, ResidualInteraction
from matgen.nn.radial import RadialEmbedding
from matgen.nn.radial_table import RadialTable
from matgen.nn.readout import LinearReadout, MLPReadout, ProductBlock

__all__ = ["MACE"]

#: Closest approach (Å) below which two atoms are reported as overlapping.
MIN_DISTANCE = 1e-6

#: Shortest edge (Å) of the radial table; shorter edges evaluate the MLPs.
TABLE_MIN_DISTANCE = 0.5

#: One table build at a time (its fit uses forward-mode autodiff, whose state is global).
_TABLE_LOCK = threading.Lock()


class MACE(nn.Module):
    """MACE energy model; :meth:`forward` gives energy, forces and stress.

    Args:
        config: architecture and statistics (:class:`MACEConfig`, presets in
            :func:`matgen.mlff.config.preset`).

    Attributes:
        tabulate_radial: read the radial weights from a table at inference on a CPU (see the
            module docstring); set ``False`` to evaluate the MLPs always.
    """

    tabulate_radial: bool = True

    def __init__(self, config: MACEConfig) -> None:
        super().__init__()
        # (radial parameters the table was built from, the table or None where none fits)
        self._radial_table: tuple[list[torch.Tensor], RadialTable | None] | None = None
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # exact constants; cast later with .to(dtype)
        try:
            self._build(config)
        finally:
            torch.set_default_dtype(previous)

    def _build(self, config: MACEConfig) -> None:
        self.config = config
        n_el = len(config.elements)
        hidden = o3.Irreps(config.hidden_irreps)
        channels = {mul for mul, _ in hidden}
        if len(channels) != 1 or hidden[0].ir != o3.Irrep("0e"):
            raise ValueError(
                f"hidden_irreps must start with scalars and share one multiplicity, got {hidden}"
            )
        c = channels.pop()
        scalars = o3.Irreps(f"{c}x0e")
        sh_irreps = o3.Irreps.spherical_harmonics(config.max_ell)
        coupling = o3.Irreps([(1, ir) for _, ir in sh_irreps])
        target = (sh_irreps * c).sort()[0].simplify()

        lookup = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        lookup[list(config.elements)] = torch.arange(n_el)
        self.register_buffer("element_index", lookup, persistent=False)
        self.register_buffer(
            "atomic_energies", torch.tensor(config.atomic_energies, dtype=torch.get_default_dtype())
        )
        self.node_embedding = o3.Linear(o3.Irreps(f"{n_el}x0e"), scalars)
        self.radial = RadialEmbedding(config.r_max, config.num_bessel, config.cutoff_p)
        self.spherical_harmonics = o3.SphericalHarmonics(
            sh_irreps, normalize=True, normalization="component"
        )
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        node_irreps = scalars
        for t in range(config.num_interactions):
            last = t == config.num_interactions - 1
            out_irreps = scalars if last else hidden
            block = (
                ElementInteraction
                if t == 0 and config.first_interaction == "element"
                else ResidualInteraction
            )
            self.interactions.append(
                block(
                    node_irreps=node_irreps,
                    edge_irreps=sh_irreps,
                    edge_feat_dim=config.num_bessel,
                    target_irreps=target,
                    hidden_irreps=out_irreps,
                    num_elements=n_el,
                    avg_num_neighbors=config.avg_num_neighbors,
                    radial_mlp=config.radial_mlp,
                )
            )
            self.products.append(
                ProductBlock(
                    coupling_irreps=coupling,
                    target_irreps=out_irreps,
                    correlation=config.correlations[t],
                    num_elements=n_el,
                    num_channels=c,
                )
            )
            self.readouts.append(
                MLPReadout(out_irreps, o3.Irreps(config.mlp_irreps))
                if last
                else LinearReadout(out_irreps)
            )
            node_irreps = out_irreps

    # ------------------------------------------------------------------ inputs
    @property
    def r_max(self) -> float:
        return self.config.r_max

    def species(self, batch: AtomsBatch) -> torch.Tensor:
        """``(N,)`` element indices; a clear error for elements the model does not know."""
        numbers = batch.numbers.clamp(0, len(chemical_symbols) - 1)
        index = self.element_index[numbers]
        unknown = index < 0
        if bool(unknown.any()):
            atom = int(torch.nonzero(unknown)[0])
            system = int(batch.batch[atom])
            z = int(batch.numbers[atom])
            symbol = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"
            raise DataError(
                f"element {symbol} is not supported by this model; it knows "
                f"{', '.join(self.config.symbols)}",
                item=batch.ids[system],
            )
        return index

    def prepare(self, batch: AtomsBatch) -> AtomsBatch:
        """Check the batch and give it edges within ``r_max`` (kept when already built so)."""
        if batch.num_atoms == 0 or bool((batch.n_atoms == 0).any()):
            empty = 0 if batch.num_atoms == 0 else int(torch.nonzero(batch.n_atoms == 0)[0])
            raise DataError("structure has no atoms", item=batch.ids[empty] if batch.ids else None)
        batch.validate()
        if batch.cutoff is None or batch.cutoff < self.r_max - 1e-9:
            batch = batch.with_neighbors(self.r_max)
        return batch

    # ------------------------------------------------------------------ energy
    def site_energies(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        batch: AtomsBatch,
        species: torch.Tensor,
    ) -> torch.Tensor:
        """``(N,)`` site energies (eV) including ``E0``, for the given (possibly strained)
        ``positions`` ``(N, 3)`` and ``cell`` ``(B, 3, 3)``; edges come from ``batch``."""
        node_attrs = torch.nn.functional.one_hot(species, len(self.config.elements)).to(
            positions.dtype
        )
        i, j = batch.edge_index
        offsets = batch.shifts.to(positions.dtype)
        system = batch.batch[i]
        image = sum(offsets[:, k : k + 1] * cell[system, k] for k in range(3))
        vectors = positions[i] - positions[j] - image
        lengths = torch.linalg.vector_norm(vectors, dim=-1)
        if lengths.numel() and bool((lengths < MIN_DISTANCE).any()):
            e = int(torch.nonzero(lengths < MIN_DISTANCE)[0])
            s = int(batch.batch[int(i[e])])
            lo = int(batch.atom_offsets[s])
            raise DataError(
                f"atoms {int(i[e]) - lo} and {int(j[e]) - lo} overlap (distance "
                f"{float(lengths[e].detach()):.2e} Å)",
                item=batch.ids[s],
            )
        edge_attrs = self.spherical_harmonics(vectors)
        # Radial weights depend on the distance alone: once per pair when edges 2k and 2k + 1
        # are one pair's two directions (the batched neighbour list writes them so).
        paired = _reverse_pairs(batch)
        radial_weights = self.radial_weights(lengths[0::2] if paired else lengths)
        edge_index = batch.edge_index
        node_feats = self.node_embedding(node_attrs)
        site = torch.zeros_like(positions[:, 0])
        for interaction, weights, product, readout in zip(
            self.interactions, radial_weights, self.products, self.readouts, strict=True
        ):
            basis, sc = interaction(node_attrs, node_feats, edge_attrs, weights, edge_index, paired)
            node_feats = product(basis, sc, species)
            site = site + readout(node_feats)
        scale, shift = self.config.scale, self.config.shift
        return self.atomic_energies[species] + scale * site + shift

    def radial_weights(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Per interaction, its radial MLP's weights ``(E, weight_numel)`` of edge lengths
        ``(E,)`` Å: from the radial table where it applies (the MLPs for edges outside it),
        else from the MLPs."""
        table = self._table_for(lengths)
        if table is None:
            feats = self.radial(lengths)
            return [block.radial_mlp(feats) for block in self.interactions]
        outside = (lengths < table.lo) | (lengths > table.hi)
        if not bool(outside.any()):
            return list(table(lengths))
        rows = torch.nonzero(outside)[:, 0]
        feats = self.radial(lengths[rows])
        weights = table(lengths.clamp(table.lo, table.hi))  # rows outside: replaced
        return [
            w.index_put((rows,), block.radial_mlp(feats))
            for w, block in zip(weights, self.interactions, strict=True)
        ]

    def _table_for(self, lengths: torch.Tensor) -> RadialTable | None:
        """The radial table, if these lengths may use it (built or rebuilt when needed)."""
        if (
            not self.tabulate_radial
            or self.training
            or lengths.device.type != "cpu"
            or lengths.dtype not in (torch.float32, torch.float64)
        ):
            return None
        params = [*self.radial.buffers()]
        params += [p for block in self.interactions for p in block.radial_mlp.parameters()]
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None  # a gradient for the MLPs' parameters: training
        if lengths.dtype != params[-1].dtype:
            return None  # the model's dtype decides the table's; the MLPs report the mismatch
        cached = self._radial_table
        if cached is None or not _same_tensors(cached[0], params):
            with _TABLE_LOCK:  # threads evaluating parts of one batch build it once
                cached = self._radial_table
                if cached is None or not _same_tensors(cached[0], params):
                    table = RadialTable.build(
                        self._radial_function(),
                        TABLE_MIN_DISTANCE,
                        self.r_max,
                        dtype=lengths.dtype,
                    )
                    cached = self._radial_table = ([p.detach().clone() for p in params], table)
        return cached[1]

    def _radial_function(self):
        """Float64 copies of the radial features and MLPs: lengths -> weights per interaction."""
        radial = copy.deepcopy(self.radial).to(device="cpu", dtype=torch.float64)
        mlps = [
            copy.deepcopy(block.radial_mlp).to(device="cpu", dtype=torch.float64)
            for block in self.interactions
        ]

        def function(r: torch.Tensor) -> list[torch.Tensor]:
            feats = radial(r)
            return [mlp(feats) for mlp in mlps]

        return function

    def forward(
        self,
        batch: AtomsBatch,
        *,
        forces: bool = True,
        stress: bool = True,
        training: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energy ``(B,)`` eV, forces ``(N, 3)`` eV/Å and stress ``(B, 3, 3)`` eV/Å³ (ASE sign;
        zero for systems with no periodic direction). ``training=True`` keeps the graph of
        forces and stress for a loss on them."""
        from matgen.mlff.potential import energy_forces_stress

        return energy_forces_stress(
            self, self.prepare(batch), forces=forces, stress=stress, create_graph=training
        )


def _same_tensors(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype
        and x.device == y.device
        and x.shape == y.shape
        and torch.allclose(x, y, rtol=0.0, atol=0.0, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def _reverse_pairs(batch: AtomsBatch) -> bool:
    """Whether edges ``2k`` and ``2k + 1`` are ``(i, j, S)`` and ``(j, i, -S)`` for every ``k``
    (then both have the same length, exactly: the two edge vectors are exact negatives)."""
    i, j = batch.edge_index
    shifts = batch.shifts
    if i.numel() == 0 or i.numel() % 2:
        return False
    return bool(
        torch.equal(i[0::2], j[1::2])
        and torch.equal(j[0::2], i[1::2])
        and torch.equal(shifts[0::2], -shifts[1::2])
    )
