"""The whole prediction as one ``nn.Module``: DESIGN's fields in, γ in metres out.

``FieldsToGamma(model, periodic_x, north_fold)(mask, area, alpha_x, alpha_y)`` takes the four
fields as ``(B, ny, nx)`` tensors of any float type (a host's float64 arrays as they are) and
does what :meth:`diffnorm.ml.modelfile.GammaNetwork.predict` does in NumPy: the faces' open
slots across the wrap and the fold, the input channels (grid diffusivities, area channel,
signed Manhattan distance to the coast clipped at 20 cells by 20 relaxation sweeps, mask),
standardization, halo, network, the gate of its correction if the model has one, and the
baseline the network corrects (the homogeneous-lattice
value from its table, bilinear in ``log κ``; the images value, by the very module the
``images`` method runs, blended with its 3×3 ocean mean for ``log_images_smooth`` or averaged
along the walk for ``log_images_walk`` (``ImagesVariance.walk``); or the analytic formula).
Exported to TorchScript (FTorch) or ONNX it is all a host needs.

What it leaves out: the basin-area cap of the baselines and the exact solve of basins of at
most 2 048 cells (``cnn``'s ``exact_basins``), which need connected components; a host with
lakes or enclosed seas that small should mask them or solve them exactly (a sparse solve of a
basin that size costs about what the network's pass on it does).
Nor does it solve the rows under a north fold (``cnn``'s ``exact_fold_rows``, a sparse solve
on a band of the grid): there the graph gives the network's γ, whose largest errors sit at
the fold's pivots; a host that needs them exact solves that band (``diffnorm.subgrid``).
Nor does it solve the cells ``cnn --exact-above`` would (their choice needs the error model,
which is not in the graph).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from diffnorm.methods.images import ImagesVariance, box_exact, open_mean, straight_runs
from diffnorm.ml.features import (
    DISTANCE_CLIP,
    IMAGES_TARGETS,
    LOG_TARGETS,
    SMOOTH_SIZE,
    SMOOTH_WEIGHT,
    STEPS_REFERENCE,
)
from diffnorm.ml.halo import crop_wrap, pad_halo, same_on_copies
from diffnorm.ml.modelfile import GammaNetwork, ModelFileError
from diffnorm.topology import CELL, FACE_X, FACE_Y, fold_recipe, parse_north_fold

TABLE_POINTS = 961  # lattice table nodes per axis: bilinear error ~1e-5 in log γ²


def export_steps(model: GammaNetwork, steps: int | None) -> int:
    """The M a graph of ``model`` is built for: ``steps``, which a model with M as an input
    needs and any other must match."""
    if steps is None:
        if model.step_range is not None:
            raise ModelFileError(
                f"steps: model {model.name!r} takes M ({model.steps_label}) as an input; a "
                "graph serves one M: give it (diffnorm export --steps M)"
            )
        return int(model.steps)
    if not model.serves(int(steps)):
        raise ModelFileError(
            f"steps: model {model.name!r} serves M={model.steps_label}, not M={steps}"
        )
    return int(steps)


class FieldsToGamma(nn.Module):
    """``(mask, area, alpha_x, alpha_y)`` → γ (m, NaN on land); see the module docstring."""

    def __init__(
        self,
        model: GammaNetwork,
        periodic_x: bool,
        north_fold: str = "none",
        steps: int | None = None,
    ):
        """``steps``: the M of the fields (a graph serves one: the images quadrature depends
        on it); needed for a model with M as an input, else the model's M."""
        super().__init__()
        enc = model.encoding
        if enc.distance not in ("none", "manhattan"):
            raise ModelFileError(
                f"{model.name}: the pipeline computes Manhattan distances only; this model uses "
                f"{enc.distance!r} (export its raw-feature graph instead)"
            )
        if enc.target not in LOG_TARGETS:
            raise ModelFileError(f"{model.name}: target {enc.target!r} has no baseline to export")
        self.net = model.inference_net
        self.halo = enc.halo
        self.periodic_x = bool(periodic_x)
        self.wrap = model.wrap_context(self.periodic_x)
        self.north_fold = parse_north_fold(north_fold)
        self.distance = enc.distance
        self.area_kind = enc.area
        self.target = enc.target
        self.steps = export_steps(model, steps)
        self.steps_input = enc.steps_input
        self.gate = tuple(enc.gate) if enc.gate else None
        self.kinds = enc.kinds
        s = model.stats
        self.register_buffer("mean", torch.tensor(s.mean, dtype=torch.float64).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s.std, dtype=torch.float64).view(1, -1, 1, 1))
        land = enc.land(s)
        land = torch.tensor(land, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("land", land)
        self.target_mean = float(s.target_mean)
        self.target_std = float(s.target_std)
        if self.target == "log_lattice":
            from diffnorm.methods.lattice import K_MAX, OFFSET, lattice_variance_unit_area

            u = np.linspace(math.log(OFFSET), math.log(K_MAX + OFFSET), TABLE_POINTS)
            k = np.exp(u) - OFFSET
            table = np.log(lattice_variance_unit_area(k[:, None], k[None, :], self.steps))
            self.register_buffer("table", torch.tensor(table, dtype=torch.float32)[None, None])
            self.u_range = (float(u[0]), float(u[-1]))
            self.k_max = float(K_MAX)
            self.offset = float(OFFSET)
        if self.target in IMAGES_TARGETS:
            self.images = ImagesVariance(self.steps)

    # -- topology ----------------------------------------------------------------------------
    def _pad(self, x: torch.Tensor, kind: str, fill: float = 0.0) -> torch.Tensor:
        """``(B, H, W)`` padded by one cell across the wrap and the fold."""
        return pad_halo(x[:, None], 1, self.periodic_x, fill, self.north_fold, [kind])[:, 0]

    def _slots(self, m, alpha_x, alpha_y):
        """East, west, north, south face alphas where open (as Topology.slot_alpha)."""
        if self.north_fold == "T":
            # the fold row's north faces are its mirrors' south faces (row ny−2): NEMO's V rule
            shift = fold_recipe("T", CELL)[1]
            mirrored = torch.roll(alpha_y[:, -2:-1].flip(-1), shift, -1)
            alpha_y = torch.cat([alpha_y[:, :-1], mirrored], dim=1)
        pm = self._pad(m, CELL)
        px = self._pad(alpha_x, FACE_X)
        py = self._pad(alpha_y, FACE_Y)
        east = alpha_x * m * pm[:, 1:-1, 2:]
        west = px[:, 1:-1, :-2] * m * pm[:, 1:-1, :-2]
        north = alpha_y * m * pm[:, 2:, 1:-1]
        south = py[:, :-2, 1:-1] * m * pm[:, :-2, 1:-1]
        return east, west, north, south

    def _distance(self, m: torch.Tensor) -> torch.Tensor:
        """Signed Manhattan distance to the coast, clipped at ``DISTANCE_CLIP`` (as
        :meth:`Topology.distance_to_coast` with ``metric="manhattan"``)."""
        big = DISTANCE_CLIP + 1.0
        out = []
        for region, edge in ((m, 0.0), (1.0 - m, big)):  # ocean to land, land to ocean
            d = torch.where(region > 0, big, 0.0)
            for _ in range(int(DISTANCE_CLIP)):
                p = self._pad(d, CELL, edge)
                near = torch.minimum(
                    torch.minimum(p[:, 1:-1, 2:], p[:, 1:-1, :-2]),
                    torch.minimum(p[:, 2:, 1:-1], p[:, :-2, 1:-1]),
                )
                d = torch.where(region > 0, torch.minimum(d, near + 1.0), d)
            out.append(d)
        signed = torch.where(m > 0, out[0], -out[1])
        return signed.clamp(-DISTANCE_CLIP, DISTANCE_CLIP)

    def _area_channel(self, m: torch.Tensor, area: torch.Tensor) -> torch.Tensor:
        if self.area_kind == "global":
            mean = area.sum(dim=(-2, -1), keepdim=True) / m.sum(dim=(-2, -1), keepdim=True)
            return area / mean
        ratio = area / self._ocean_mean(m, area, 3).clamp_min(1e-300)  # features.local_area
        return torch.where(m > 0, torch.log(torch.where(m > 0, ratio, 1.0)), 0.0)

    def _ocean_mean(self, m: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
        """:func:`diffnorm.ml.features.ocean_mean`: the mean of ``values`` over the ocean cells
        of each cell's ``size × size`` square, across the wrap and the fold."""
        v = torch.where(m > 0, values, 0.0)
        p = pad_halo(torch.stack([m, v], dim=1), size // 2, self.periodic_x, 0.0, self.north_fold)
        ny, nx = m.shape[-2:]
        sums = sum(p[:, :, j : j + ny, i : i + nx] for j in range(size) for i in range(size))
        return sums[:, 1] / sums[:, 0].clamp_min(1.0)

    # -- baselines -----------------------------------------------------------------------------
    def _baseline(
        self,
        m: torch.Tensor,
        area: torch.Tensor,
        slots: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        runs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
        exact: torch.Tensor | None,
    ) -> torch.Tensor:
        """γ² of the model's baseline (before the smoothing of ``log_images_smooth``);
        ``runs`` (:func:`straight_runs`) and the box-exact cells for the images ones."""
        east, west, north, south = slots
        ax, nx_ = open_mean(east, west)
        ay, ny_ = open_mean(north, south)
        safe = torch.where(m > 0, area, 1.0)
        if self.target == "log_images_walk":  # methods.images.walk_gamma_squared
            assert runs is not None and exact is not None
            images, walk = self.images.walk(m, ax / safe, ay / safe, runs, self.periodic_x)
            return safe / torch.where(exact, images, walk)  # copies: forward's last step
        if self.target in IMAGES_TARGETS:
            assert runs is not None
            ocean = torch.nonzero(m.flatten() > 0)[:, 0]
            cells = [t.flatten()[ocean] for t in (ax / safe, ay / safe) + runs]
            v = torch.ones_like(m).flatten().index_put((ocean,), self.images(*cells))
            return safe / v.view_as(m)
        if self.target == "log_lattice":
            kx = (ax / safe).clamp(0.0, self.k_max)
            ky = (ay / safe).clamp(0.0, self.k_max)
            lo, hi = self.u_range

            def coord(k):
                return 2.0 * (torch.log(k + self.offset) - lo) / (hi - lo) - 1.0

            # grid_sample: x indexes the table's last axis (ky), y its first (kx)
            grid = torch.stack([coord(ky), coord(kx)], dim=-1).to(torch.float32)
            table = self.table.expand(m.shape[0], -1, -1, -1)
            log_v = nn.functional.grid_sample(table, grid, align_corners=True)[:, 0]
            return safe / torch.exp(log_v.to(area.dtype))
        ax_f = torch.where(nx_ > 0, ax, ay)
        ay_f = torch.where(ny_ > 0, ay, ax)
        g2 = 4.0 * math.pi * (self.steps - 1) * torch.sqrt(ax_f * ay_f)
        return torch.where((nx_ + ny_) > 0, g2, safe)

    def _smooth(self, m: torch.Tensor, g2: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        """:func:`diffnorm.ml.features.smoothed_images_gamma_squared` of the images ``g2``."""
        g2 = same_on_copies(g2, self.north_fold)  # as images_gamma_squared, before the mean
        log = torch.where(m > 0, torch.log(torch.where(m > 0, g2, 1.0)), 0.0)
        mean = self._ocean_mean(m, log, SMOOTH_SIZE)
        blend = torch.where(exact, log, (1.0 - SMOOTH_WEIGHT) * log + SMOOTH_WEIGHT * mean)
        return torch.exp(blend)  # copies: forward's last step

    def forward(
        self,
        mask: torch.Tensor,
        area: torch.Tensor,
        alpha_x: torch.Tensor,
        alpha_y: torch.Tensor,
    ) -> torch.Tensor:
        m = (mask > 0.5).to(torch.float64)
        area = torch.where(m > 0, area.to(torch.float64), 0.0)
        alpha_x, alpha_y = alpha_x.to(torch.float64), alpha_y.to(torch.float64)
        east, west, north, south = self._slots(m, alpha_x, alpha_y)
        safe = torch.where(m > 0, area, 1.0)
        channels = [east / safe, north / safe, self._area_channel(m, area)]
        distance = self._distance(m) if self.distance != "none" or self.gate else None
        if self.distance != "none":
            channels.append(distance)
        channels.append(m)
        if self.steps_input:  # features.steps_channel
            channels.append(m * math.log(self.steps / STEPS_REFERENCE))
        raw = torch.stack(channels, dim=1)
        x = ((raw - self.mean) / self.std).to(torch.float32)
        x = pad_halo(
            x, self.halo, self.periodic_x, self.land, self.north_fold, self.kinds, self.wrap
        )
        t = crop_wrap(self.net(x)[:, 0], self.wrap, m.shape[-1]).to(torch.float64)
        t = t * self.target_std + self.target_mean  # float64 from here
        if self.gate is not None:  # Encoding.gate_weight
            a, b = self.gate
            slots = torch.stack([east, west, north, south])
            big = torch.sqrt((2 * self.steps - 4) * slots / safe).amax(dim=0)
            ratio = torch.where(big > 0, distance / torch.where(big > 0, big, 1.0), 0.0)
            t = t * ((b - ratio) / (b - a)).clamp(0.0, 1.0)
        slots = (east, west, north, south)
        runs = None
        exact = None
        if self.target in IMAGES_TARGETS:  # Encoding.correction_weight: none where exact
            folded = self.north_fold != "none"
            runs = straight_runs(m, self.periodic_x, folded)
            exact = box_exact(m, slots, area, runs, self.steps, self.periodic_x, folded)
            t = torch.where(exact, 0.0, t)
        g2 = self._baseline(m, area, slots, runs, exact)
        if self.target == "log_images_smooth":
            assert exact is not None
            g2 = self._smooth(m, g2, exact)
        g2 = g2 * torch.exp(t)
        return same_on_copies(torch.where(m > 0, torch.sqrt(g2), float("nan")), self.north_fold)
