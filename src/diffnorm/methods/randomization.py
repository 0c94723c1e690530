"""γ by randomization: ``v ≈ (1/N) Σ_k (W^{-1/2} Ŝ^{M/2} z_k)²`` with white noise ``z_k``.

``y = W^{-1/2} Ŝ^{M/2} z`` has covariance ``L W⁻¹``, so ``y_i² / v_i ~ χ²₁``: the estimate of
``v_i`` (hence of γ²'s inverse) has relative standard deviation ``√(2/N)`` and
``E|ε| ≈ 2/√(πN)``. Cost: ``N × M/2`` solves.
"""

from __future__ import annotations

import math

import numpy as np

from diffnorm.methods.base import MethodOutput, Progress, register
from diffnorm.operator import DiffusionOperator


@register("randomization", "N white-noise samples through L^(1/2) W^(-1/2) (N x M/2 solves)")
def randomization(
    op: DiffusionOperator,
    *,
    samples: int = 1000,
    seed: int = 0,
    block_size: int | None = None,
    progress: Progress | None = None,
) -> MethodOutput:
    """Randomized estimate; the same ``seed`` gives the same result for any block size."""
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    samples = int(samples)
    rng = np.random.default_rng(seed)
    half = op.fields.steps // 2
    k = op.block_size(block_size)
    acc = np.zeros(op.n)
    for start in range(0, samples, k):
        count = min(k, samples - start)
        # sample after sample from one stream: independent of how samples are blocked
        z = np.ascontiguousarray(rng.standard_normal((count, op.n)).T)
        y = op.sym_power(z, half)
        acc += np.einsum("ij,ij->i", y, y)
        if progress is not None:
            progress(start + count, samples)
    variance = acc / (samples * op.weights)
    return MethodOutput(
        variance,
        tolerance=None,
        info={
            "solves": samples * half,
            "expected_relative_std": math.sqrt(2.0 / samples),
            "expected_mean_abs_error": 2.0 / math.sqrt(math.pi * samples),
        },
    )
