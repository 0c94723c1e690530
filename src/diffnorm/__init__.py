"""diffnorm: normalization coefficients γ of diffusion-based correlation operators.

Data flows one way: fields → operator → γ → datasets → model → predictions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from diffnorm.fields import Fields, FieldsError, read_fields, write_fields  # noqa: E402

__all__ = ["Fields", "FieldsError", "__version__", "read_fields", "write_fields"]
