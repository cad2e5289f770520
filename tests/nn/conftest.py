"""Fixtures of the network tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import matgen.nn.convolution
import matgen.nn.element_linear
import matgen.nn.symmetric_contraction


@pytest.fixture(autouse=True)
def _uninitialised_buffers_hold_nan(monkeypatch):
    """Buffers a kernel is meant to overwrite (``np.empty_like``) start as NaN, not as the
    zeros fresh memory usually holds: a kernel that reads one before writing it fails."""
    empty_like = np.empty_like

    def poisoned(*args, **kwargs):
        out = empty_like(*args, **kwargs)
        if np.issubdtype(out.dtype, np.floating):
            out.fill(np.nan)
        return out

    monkeypatch.setattr(np, "empty_like", poisoned)


@pytest.fixture(params=[1, 3], ids=["one-thread", "three-threads"])
def kernel_threads(request, monkeypatch):
    """The compiled kernels on one thread, or split over three even for tiny inputs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    if request.param > 1:
        monkeypatch.setattr(matgen.nn.convolution, "_EDGE_GRAIN", 2)
        monkeypatch.setattr(matgen.nn.element_linear, "_NODE_GRAIN", 1)
        monkeypatch.setattr(matgen.nn.symmetric_contraction, "_NODE_GRAIN", 1)
    yield request.param
    torch.set_num_threads(previous)


def autograd_nodes(t: torch.Tensor) -> set[str]:
    """Names of the autograd nodes behind ``t``."""
    seen, stack = {}, [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack += [f for f, _ in node.next_functions]
    return set(seen.values())


@pytest.fixture
def graph_names():
    """:func:`autograd_nodes`, for tests that check which evaluation ran."""
    return autograd_nodes
