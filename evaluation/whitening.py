"""BERT-whitening (docs/techniques.md section 6): x -> (x - mu) W, W = U S^{-1/2}, k columns.

After the transform the embeddings have zero mean and identity covariance (in the kept
directions), so the cosine of two sentences is no longer dominated by a few shared directions.
Pure numpy: fitted once on an evaluation (or a given) set of embeddings.
"""
from __future__ import annotations

import numpy as np

from utils.errors import UserError


def fit(x: np.ndarray, k: int = 0, eps: float = 1e-9):
  """(mu [D], W [D, k]) from embeddings x [N, D]; k = 0 keeps every dimension."""
  x = np.asarray(x, np.float64)
  dim = x.shape[1]
  if k < 0 or k > dim:
    raise UserError(f"whitening keeps k in [1, {dim}] dimensions (0 = all), got {k}")
  if x.shape[0] < 2:
    raise UserError("whitening needs at least two embeddings to fit a covariance")
  mu = x.mean(axis=0)
  cov = np.cov(x - mu, rowvar=False)
  u, s, _ = np.linalg.svd(cov)  # cov is symmetric PSD: its SVD is its eigendecomposition
  w = u / np.sqrt(s + eps)
  return mu, w[:, :k or dim]


def transform(x: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
  return (np.asarray(x, np.float64) - mu) @ w
