"""Import a mace-torch model exported by ``mace_export.py`` into a matgen checkpoint.

The architecture is rebuilt from the export's hyperparameters and every tensor is mapped onto
matgen's modules by name. e3nn parameter layouts are shared (both build their linear maps and
tensor products from e3nn), so weights are copied as they are; MACE's symmetric-contraction
bases ``U`` are copied too (matgen evaluates any basis, see
:mod:`matgen.nn.symmetric_contraction`). No mace-torch is needed here, and nothing is
unpickled: the export is read with ``weights_only=True``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from matgen.mlff.checkpoint import save_model
from matgen.mlff.config import MACEConfig
from matgen.mlff.mace import MACE

__all__ = ["convert_state_dict", "import_mace_export", "model_from_mace_export"]

EXPORT_FORMAT = "mace-export/1"

# Tensors whose content lives in the config (checked or rebuilt), not in matgen's state.
_IN_CONFIG = re.compile(
    r"^(atomic_numbers|r_max|num_interactions|atomic_energies_fn\..*|scale_shift\..*|"
    r"radial_embedding\..*|.*\._compiled_main.*|.*_zeroed|.*\.conv_tp\.(weight|output_mask))$"
)
# matgen buffers rebuilt from the config (checked against the export's hyperparameters).
_FROM_CONFIG = {"atomic_energies", "radial.bessel.frequencies"}
_CONTRACTION = re.compile(
    r"^products\.(\d+)\.symmetric_contractions\.contractions\.(\d+)\.(weights_max|weights\.(\d+)|U_matrix_(\d+))$"
)


def convert_state_dict(
    source: dict[str, torch.Tensor], config: MACEConfig
) -> dict[str, torch.Tensor]:
    """mace-torch names and shapes -> matgen's."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in source.items():
        if _IN_CONFIG.match(key):
            continue
        match = _CONTRACTION.match(key)
        if match:
            t, j = int(match.group(1)), int(match.group(2))
            correlation = config.correlations[t]
            if match.group(3) == "weights_max":
                out[f"products.{t}.contraction.weights.{j}_{correlation}"] = value
            elif match.group(4) is not None:  # weights.i holds body order correlation - 1 - i
                nu = correlation - 1 - int(match.group(4))
                out[f"products.{t}.contraction.weights.{j}_{nu}"] = value
            else:
                nu = int(match.group(5))
                # MACE drops the output axis of scalar outputs: (D,)*nu + (K,)
                u = value if value.dim() == nu + 2 else value.unsqueeze(0)
                out[f"products.{t}.contraction.U_{j}_{nu}"] = u
            continue
        if key.startswith("node_embedding.linear."):
            out["node_embedding." + key[len("node_embedding.linear.") :]] = value
        elif ".conv_tp_weights." in key:
            out[key.replace(".conv_tp_weights.", ".radial_mlp.")] = value
        elif re.match(r"^(interactions|readouts)\.\d+\.", key) or re.match(
            r"^products\.\d+\.linear\.", key
        ):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"mace-torch tensors matgen cannot place: {unknown[:10]}")
    # Zeroed MACE paths (no parameters) arrive without weights: give them empty ones.
    for key in list(out):
        if ".contraction.U_" in key:
            t_j_nu = key.split(".contraction.U_")
            weight_key = f"{t_j_nu[0]}.contraction.weights.{t_j_nu[1]}"
            if weight_key not in out:
                k = out[key].shape[-1]
                n_el = len(config.elements)
                channels = int(config.hidden_irreps.split("x")[0])
                out[weight_key] = torch.zeros(n_el, k, channels, dtype=out[key].dtype)
    return out


def model_from_mace_export(path: str | Path) -> MACE:
    """A :class:`MACE` with the exported model's architecture and weights (float64)."""
    path = Path(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a mace_export.py file (expected format {EXPORT_FORMAT!r})")
    hp = dict(payload["hyperparameters"])
    hp["correlation"] = tuple(hp["correlation"])
    config = MACEConfig.from_dict(hp)
    model = MACE(config)
    converted = convert_state_dict(payload["state_dict"], config)
    built = model.state_dict()
    missing = [k for k in built if k not in converted and k not in _FROM_CONFIG]
    missing = [k for k in missing if "._compiled_main" not in k]
    unexpected = [k for k in converted if k not in built]
    if missing or unexpected:
        raise ValueError(
            f"{path}: the export does not fill matgen's model (missing {missing[:8]}, "
            f"unexpected {unexpected[:8]})"
        )
    model.load_state_dict({**built, **converted})
    model.metadata = {
        "source": "mace-torch",
        "mace_version": payload.get("mace_version"),
        "model_class": payload.get("model_class"),
    }
    return model.eval()


def import_mace_export(path: str | Path, output: str | Path) -> Path:
    """Write a matgen checkpoint for a mace-torch export; returns its path."""
    model = model_from_mace_export(path)
    return save_model(model, output, metadata={**model.metadata, "export": str(path)})
