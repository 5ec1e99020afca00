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

*Identical particles.* :func:`perm_kabsch` also relabels interchangeable particles (LJ
clusters): it alternates a Hungarian assignment of particles to reference sites (squared
distance cost, ``scipy.optimize.linear_sum_assignment``) with Kabsch, from several starting
rotations (principal axes, identity, random), and keeps the lowest RMSD. The aligned data are
valid only with a transport that is also permutation-equivariant among those particles (the
EGNN with equal atom types is); permute and rotate scores with the positions
(:func:`perm_kabsch_align`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["align_to_reference", "com_free_randn", "hungarian_permutation", "kabsch_align",
           "kabsch_rotation", "perm_kabsch", "perm_kabsch_align", "random_rotation",
           "remove_com", "rmsd"]


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


# -- identical particles: Hungarian assignment + Kabsch ------------------------------------------


def hungarian_permutation(x: Tensor, reference: Tensor) -> Tensor:
    """Optimal relabelling of particles onto a reference, no rotation or centring.

    Parameters
    ----------
    x : (batch, n_atoms, 3); reference : (n_atoms, 3) or (batch, n_atoms, 3)

    Returns
    -------
    perm : int64 (batch, n_atoms): ``x[b, perm[b]]`` minimises ``Σ_k |x_{b, perm_k} − ref_k|²``
    over permutations (``scipy.optimize.linear_sum_assignment``, exact).
    """
    from scipy.optimize import linear_sum_assignment

    _check_particles(x)
    ref = reference[None] if reference.dim() == 2 else reference
    _check_particles(ref, "reference")
    if ref.shape[1] != x.shape[1]:
        raise ValueError(f"reference must have {x.shape[1]} particles like x; got "
                         f"{tuple(reference.shape)}.")
    cost = (torch.cdist(ref.double().to(x.device), x.double()) ** 2).expand(
        x.shape[0], -1, -1).cpu().numpy()                            # [b, ref k, particle]
    perm = np.stack([linear_sum_assignment(c)[1] for c in cost])
    return torch.as_tensor(perm, dtype=torch.int64, device=x.device)


def _principal_starts(xc: Tensor, refc: Tensor) -> Tensor:
    """The 4 proper rotations (batch, 4, 3, 3) mapping x's principal axes onto the reference's."""
    _, v = torch.linalg.eigh(xc.mT @ xc)                                # (B, 3, 3) columns
    _, vr = torch.linalg.eigh(refc.mT @ refc)                           # (3, 3)
    det = torch.linalg.det(vr) * torch.linalg.det(v)                    # ±1, (B,)
    signs = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=xc.dtype)
    d = signs[None].repeat(xc.shape[0], 1, 1)                           # (B, 4, 3)
    d[:, :, 2] *= det[:, None]                                          # det(vr D vᵀ) = +1
    return (vr * d[..., None, :]) @ v.mT[:, None]                       # vr diag(d) vᵀ


def perm_kabsch(x: Tensor, reference: Tensor, *, n_iter: int = 10, n_random: int = 4,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Permutation and proper rotation aligning identical particles onto a reference.

    From each start rotation (the 4 principal-axes matches, the identity and ``n_random``
    Haar-random rotations) alternate: Hungarian assignment of the rotated, centred ``x`` to
    the centred reference, then Kabsch on the relabelled particles; stop when no assignment
    changes or after ``n_iter`` rounds; keep the start with the lowest RMSD. Each round can
    only lower the RMSD, so the result is a local optimum over (permutation, SO(3)), global
    in practice for structures close to the reference.

    Parameters
    ----------
    x : (batch, n_atoms, 3); reference : (n_atoms, 3)
    n_iter : rounds of (Hungarian, Kabsch) per start, >= 1.
    n_random : random start rotations, >= 0 (drawn from ``generator``, shared by the batch).

    Returns
    -------
    perm : int64 (batch, n_atoms); rotation : (batch, 3, 3) in x's dtype, ``det = +1``:
    ``remove_com(x)[b, perm[b]] @ rotation[b].mT`` is the aligned configuration.
    """
    _check_particles(x)
    if not isinstance(reference, Tensor) or reference.dim() != 2 or reference.shape != x.shape[1:]:
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference)
        raise ValueError(f"reference must have shape ({x.shape[1]}, 3); got {got}.")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1; got {n_iter!r}.")
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an int >= 0; got {n_random!r}.")
    xc, refc = remove_com(x.detach().double()), remove_com(reference[None].double().to(x.device))
    b, n = xc.shape[:2]
    fixed = [torch.eye(3, dtype=xc.dtype)[None]]
    if n_random:
        fixed.append(random_rotation(n_random, generator=generator))
    fixed = torch.cat(fixed).to(x.device)
    rot = torch.cat([_principal_starts(xc, refc[0]), fixed[None].expand(b, -1, -1, -1)], 1)
    n_starts = rot.shape[1]
    xs = xc[:, None].expand(-1, n_starts, -1, -1).reshape(b * n_starts, n, 3)
    rot, perm = rot.reshape(b * n_starts, 3, 3), None
    for _ in range(n_iter):
        new = hungarian_permutation(xs @ rot.mT, refc[0])
        if perm is not None and torch.equal(new, perm):
            break
        perm = new
        xp = torch.gather(xs, 1, perm[..., None].expand(-1, -1, 3))
        rot = kabsch_rotation(xp, refc[0])
    err = rmsd(xp @ rot.mT, refc).reshape(b, n_starts)
    best = err.argmin(1) + torch.arange(b, device=x.device) * n_starts
    return perm[best], rot[best].to(x.dtype)


def perm_kabsch_align(x: Tensor, reference: Tensor, scores: Tensor | None = None, *,
                      n_iter: int = 10, n_random: int = 4,
                      generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor | None]:
    """Centre, relabel and rotate identical particles onto ``reference`` (:func:`perm_kabsch`).

    Scores ``-∇u`` of a permutation-, rotation- and translation-invariant ``u`` are permuted
    and rotated with the positions, which makes them the scores of the aligned samples.

    Returns ``(aligned, aligned_scores)``, shapes (batch, n_atoms, 3) (scores None if absent).
    """
    if scores is not None and scores.shape != x.shape:
        raise ValueError(f"scores must have the shape of x {tuple(x.shape)}; got "
                         f"{tuple(scores.shape)}.")
    perm, rot = perm_kabsch(x, reference, n_iter=n_iter, n_random=n_random,
                            generator=generator)
    idx = perm[..., None].expand(-1, -1, 3)
    aligned = torch.gather(remove_com(x), 1, idx) @ rot.mT
    if scores is None:
        return aligned, None
    return aligned, torch.gather(scores, 1, idx) @ rot.mT.to(scores.dtype)
