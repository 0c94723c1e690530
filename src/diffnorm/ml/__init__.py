"""Learning γ: networks, features and training (kept apart from the physics)."""
