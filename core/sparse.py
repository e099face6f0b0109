"""Constant sparse matrices applied to dense tensors with autograd (CPU-fast CSR both ways).

Training multiplies the same sparse matrices every step (mesh Laplacians, the triplane's bilinear
sampling at fixed points). Gathers with ``index_add`` do the same work, but their backward on CPU is
a slow scatter; a CSR product is fast, and keeping the transpose as a second CSR makes the backward
(``Sᵀ @ grad``) a CSR product too instead of a conversion every step.

A ``FixedSparse`` is built on the CPU and follows the dense operand: multiplying a CUDA tensor
uses (and keeps) a CUDA copy of both matrices.
"""
from __future__ import annotations

import warnings

import torch


def _csr(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CPU CSR matrix from COO triplets (duplicates summed)."""
    with warnings.catch_warnings():  # torch calls sparse CSR "beta" on every construction
        warnings.simplefilter("ignore", UserWarning)
        indices = torch.stack([rows.long(), cols.long()]).cpu()
        coo = torch.sparse_coo_tensor(indices, values.cpu(), shape, check_invariants=True).coalesce()
        return coo.to_sparse_csr()


class _FixedSparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.transpose @ grad.contiguous(), None, None


class FixedSparse:
    """A constant sparse matrix ``[R, C]`` (no gradient of its own) from COO triplets.

    ``matrix @ dense`` with ``dense [C, K]`` -> ``[R, K]``, differentiable with respect to ``dense``.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]):
        self.shape = (int(shape[0]), int(shape[1]))
        values = values.detach().float()
        self.matrix = _csr(rows, cols, values, self.shape)
        self.transpose = _csr(cols, rows, values, (self.shape[1], self.shape[0]))
        self._copies: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The matrix and its transpose on ``device`` (copied there once, then kept)."""
        if device == self.matrix.device:
            return self.matrix, self.transpose
        if device not in self._copies:
            self._copies[device] = (self.matrix.to(device), self.transpose.to(device))
        return self._copies[device]

    def __matmul__(self, dense: torch.Tensor) -> torch.Tensor:
        if dense.dtype != self.matrix.dtype:
            raise TypeError(f"FixedSparse holds {self.matrix.dtype}, got {dense.dtype}")
        matrix, transpose = self.on(dense.device)
        if not dense.requires_grad:
            return matrix @ dense
        return _FixedSparseProduct.apply(dense, matrix, transpose)

    def __deepcopy__(self, memo: dict) -> FixedSparse:
        # constant, so copies may share it (torch cannot deep-copy CSR tensors: modules that cache a
        # FixedSparse must stay copyable, e.g. copy.deepcopy(avatar))
        return self

    def to_dense(self) -> torch.Tensor:
        """The dense ``[R, C]`` matrix (for tests)."""
        return self.matrix.to_dense()
