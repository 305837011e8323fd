"""Accuracy predictor: a small MLP ensemble on one-hot architecture genes, trained on evaluated subnets.

Trained with torch, run with numpy (the search scores whole populations with a few matrix
products), saved as JSON (weights as lists, never pickled). Schedule genes are not inputs:
schedules change latency, not accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codesign.errors import CodesignError
from codesign.fileio import read_json_file, write_json_atomic
from codesign.space import Genome, SearchSpace

PREDICTOR_FORMAT = "codesign-accuracy-predictor"
PREDICTOR_SCHEMA_VERSION = 1


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors (ties counted as neither concordant nor discordant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    upper = np.triu_indices(len(a), k=1)
    sa, sb = da[upper], db[upper]
    denominator = np.sqrt(np.sum(sa != 0) * np.sum(sb != 0))
    return float(np.sum(sa * sb) / denominator) if denominator else 0.0


@dataclass
class AccuracyPredictor:
    """An ensemble of MLPs mapping :func:`~codesign.search.encoding.arch_one_hot` features to accuracy."""

    space: str
    members: list[list[tuple[np.ndarray, np.ndarray]]]
    target_mean: float
    target_std: float
    validation: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        space: SearchSpace,
        genomes: list[Genome],
        accuracies: np.ndarray,
        *,
        hidden: tuple[int, ...] = (64, 64),
        ensemble: int = 3,
        epochs: int = 600,
        seed: int = 0,
    ) -> AccuracyPredictor:
        """Fit on evaluated subnets (accuracies in [0, 1])."""
        import torch
        from torch import nn

        from codesign.search.encoding import arch_one_hot

        if len(genomes) < 8:
            raise CodesignError(f"the accuracy predictor needs at least 8 evaluated subnets, got {len(genomes)}")
        x = arch_one_hot(space, np.stack([g.to_vector(space)[: _arch_length(space)] for g in genomes]))
        y = np.asarray(accuracies, dtype=np.float64)
        mean, std = float(y.mean()), float(y.std() or 1.0)
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(((y - mean) / std).astype(np.float32))
        members = []
        for m in range(ensemble):
            torch.manual_seed(seed * 1000 + m)
            sizes = [x.shape[1], *hidden, 1]
            layers: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                if i < len(sizes) - 2:
                    layers.append(nn.ReLU())
            net = nn.Sequential(*layers)
            optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
            for _ in range(epochs):
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(net(xt).squeeze(1), yt)
                loss.backward()
                optimizer.step()
                schedule.step()
            linears = [layer for layer in net if isinstance(layer, nn.Linear)]
            members.append(
                [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in linears]
            )
        return cls(space.name, members, mean, std)

    @property
    def rmse(self) -> float | None:
        """Held-out RMSE as a fraction (``validation["rmse_pts"] / 100``); None when it was not validated."""
        value = self.validation.get("rmse_pts")
        return float(value) / 100 if isinstance(value, int | float) and value > 0 else None

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Predicted accuracy for one-hot feature rows."""
        total = np.zeros(len(features), dtype=np.float64)
        for layers in self.members:
            h = features.astype(np.float32, copy=False)
            for i, (w, b) in enumerate(layers):
                h = h @ w + b
                if i < len(layers) - 1:
                    np.maximum(h, 0.0, out=h)
            total += h[:, 0]
        return total / len(self.members) * self.target_std + self.target_mean

    def predict(self, space: SearchSpace, genomes: list[Genome]) -> np.ndarray:
        """Predicted accuracy of each genome."""
        from codesign.search.encoding import arch_one_hot

        arch = np.stack([g.to_vector(space)[: _arch_length(space)] for g in genomes])
        return self.predict_features(arch_one_hot(space, arch))

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "format": PREDICTOR_FORMAT,
            "schema_version": PREDICTOR_SCHEMA_VERSION,
            "space": self.space,
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "members": [[{"weight": _rounded(w), "bias": _rounded(b)} for w, b in layers] for layers in self.members],
            "validation": self.validation,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "predictor") -> AccuracyPredictor:
        """Validate and load."""
        if not isinstance(data, dict) or data.get("format") != PREDICTOR_FORMAT:
            raise CodesignError(f"{source}: not a codesign accuracy predictor")
        if int(data.get("schema_version", 0)) > PREDICTOR_SCHEMA_VERSION:
            raise CodesignError(f"{source}: predictor schema is newer than this codesign; upgrade codesign")
        try:
            members = [
                [
                    (np.asarray(layer["weight"], dtype=np.float32), np.asarray(layer["bias"], dtype=np.float32))
                    for layer in layers
                ]
                for layers in data["members"]
            ]
            return cls(
                str(data["space"]),
                members,
                float(data["target_mean"]),
                float(data["target_std"]),
                dict(data.get("validation", {})),
                dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodesignError(f"{source}: malformed accuracy predictor ({exc})") from None

    def save(self, path: str | Path) -> Path:
        """Write atomically as JSON."""
        write_json_atomic(path, self.to_dict(), compact=True)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> AccuracyPredictor:
        """Read a predictor file; a clear error if it is missing or corrupt."""
        data = read_json_file(
            path,
            error=CodesignError,
            missing="accuracy predictor not found: {path} (fit one with `codesign fit-predictor`)",
            corrupt="{path}: corrupt or truncated accuracy predictor ({exc})",
        )
        return cls.from_dict(data, source=str(path))


def _rounded(values: np.ndarray) -> list[Any]:
    # float32 weights need 9 significant digits to round-trip exactly
    return np.vectorize(lambda x: float(f"{x:.9g}"), otypes=[object])(values).tolist()


def _arch_length(space: SearchSpace) -> int:
    return 1 + 2 * space.num_stages + 3 * space.max_blocks
