r"""Centre-of-mass removal and Kabsch alignment of particle configurations (METHOD §2).

Configurations are batches ``x`` of shape ``(batch, n_atoms, 3)`` (nm for molecules).

*Centre of mass.* The "centre of mass" here is the **unweighted** centroid
``x̄ = (1/N) Σ_i x_i`` and the COM-free subspace is ``{x : Σ_i x_i = 0}``, for data, noise and
network outputs alike: all three must live in one subspace, and the orthogonal projection

    P x = x − x̄        (per configuration)

maps isotropic Gaussian noise ``z ~ N(0, I_{3N})`` to the isotropic Gaussian ``N(0, P)`` of
the ``3N − 3``-dimensional subspace (:func:`com_free_randn`). Translation-invariant energies
do not care which centre is removed; mass weighting would change the subspace, so it is not
offered.

*Kabsch.* :func:`kabsch_rotation` finds the proper rotation (``det R = +1``, never a
reflection) that minimises ``Σ_i |R (x_i − x̄) − (y_i − ȳ)|²`` for a reference ``y``, batched
via one SVD of the 3 × 3 covariance per configuration. Aligned data are only valid with an
exactly rotation-equivariant transport and isotropic COM-free noise; rotate scores ``-∇u``
with the same ``R`` (:func:`align_to_reference`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["align_to_reference", "com_free_randn", "kabsch_align", "kabsch_rotation",
           "random_rotation", "remove_com", "rmsd"]


def _check_particles(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != 3 or x.shape[1] < 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (batch, n_atoms, 3); got {got}. "
                         "Reshape flat (batch, 3N) data with x.reshape(batch, -1, 3).")


def remove_com(x: Tensor) -> Tensor:
    """The COM-free projection ``P x = x − mean_i x_i`` of ``x`` (batch, n_atoms, 3).

    Use it on positions, on Gaussian noise and on network outputs; it is idempotent
    (``P P = P``) and linear.
    """
    _check_particles(x)
    return x - x.mean(dim=1, keepdim=True)


def com_free_randn(shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                   dtype: torch.dtype | None = None, device: torch.device | str | None = None
                   ) -> Tensor:
    """Isotropic Gaussian noise in the COM-free subspace: ``P z``, ``z ~ N(0, I)``.

    Parameters
    ----------
    shape : (batch, n_atoms, 3)

    Returns
    -------
    Tensor, shape ``shape``; each configuration sums to zero over atoms, and its density in
    the ``3N − 3``-dimensional subspace is ``N(0, I)``, so Gaussian kernel log-densities
    ``−|r|² / (2σ²)`` computed in the ambient coordinates stay correct up to a constant.
    """
    z = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return remove_com(z)


def kabsch_rotation(x: Tensor, reference: Tensor) -> Tensor:
    """Proper rotations ``R`` (batch, 3, 3), ``det R = +1``, aligning ``x`` onto ``reference``.

    Parameters
    ----------
    x : Tensor, (batch, n_atoms, 3)
    reference : Tensor, (n_atoms, 3) or (batch, n_atoms, 3)

    Returns
    -------
    Tensor, (batch, 3, 3), in ``x``'s dtype: ``R`` minimises ``Σ_i |R x̃_i − ỹ_i|²`` over
    SO(3) for centred ``x̃``, ``ỹ``; apply it as ``x̃ @ R.mT``. Computed in float64.
    """
    _check_particles(x)
    ref = reference[None] if isinstance(reference, Tensor) and reference.dim() == 2 else reference
    _check_particles(ref, "reference")
    if ref.shape[1] != x.shape[1] or ref.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"reference must have shape ({x.shape[1]}, 3) or ({x.shape[0]}, "
                         f"{x.shape[1]}, 3) to match x {tuple(x.shape)}; got "
                         f"{tuple(reference.shape)}.")
    xc, yc = remove_com(x.double()), remove_com(ref.to(x.device).double())
    h = xc.mT @ yc                                   # (batch, 3, 3) covariance
    u, _, vh = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(vh.mT @ u.mT))   # −1 where the optimum would reflect
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.ones(h.shape[:-1], dtype=h.dtype, device=h.device)
    fix[:, -1] = d
    return ((vh.mT * fix[:, None, :]) @ u.mT).to(x.dtype)


def kabsch_align(x: Tensor, reference: Tensor) -> Tensor:
    """``x`` centred and rotated onto ``reference`` (batch, n_atoms, 3); centroid at 0.

    The reference's own centroid is ignored: aligned configurations are COM-free.
    """
    r = kabsch_rotation(x, reference)
    return remove_com(x) @ r.mT


def rmsd(x: Tensor, y: Tensor) -> Tensor:
    """Root-mean-square deviation over atoms, ``sqrt(mean_i |x_i − y_i|²)``, shape (batch,).

    No centring or alignment is done; compare :func:`kabsch_align` output with a centred
    reference for the minimal RMSD.
    """
    return ((x - y) ** 2).sum(-1).mean(-1).sqrt()


def align_to_reference(x: Tensor, reference: Tensor, scores: Tensor | None = None
                       ) -> tuple[Tensor, Tensor | None]:
    """Centre and Kabsch-align samples, rotating their scores ``-∇u`` with them.

    For a rotation- and translation-invariant energy ``u``, ``-∇u(R x) = R (-∇u(x))``: the
    rotated scores are the scores of the aligned samples.

    Parameters
    ----------
    x : (batch, n_atoms, 3) samples; reference : (n_atoms, 3);
    scores : optional (batch, n_atoms, 3) scores at ``x``.
    """
    r = kabsch_rotation(x, reference)
    aligned = remove_com(x) @ r.mT
    if scores is None:
        return aligned, None
    if scores.shape != x.shape:
        raise ValueError(f"scores must have the shape of x {tuple(x.shape)}; got "
                         f"{tuple(scores.shape)}.")
    return aligned, scores @ r.mT.to(scores.dtype)


def random_rotation(n: int, *, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """``n`` Haar-random proper rotations (n, 3, 3) from QR of Gaussian matrices."""
    a = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q.to(dtype)
