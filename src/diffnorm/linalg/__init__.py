"""Sparse linear algebra for the γ methods: fill-reducing ordering, LDLᵀ, selected inversion."""
