"""Analytic label recovery from the last layers' gradients.

For a linear output layer ``z = W h + b`` and the mean cross-entropy over a batch of ``B``, the
gradient of row ``i`` is

    dL/dW_i = (1/B) sum_b (p_bi - y_bi) h_b,        dL/db_i = (1/B) sum_b (p_bi - y_bi),

so the class counts are ``n = sum_b p_b - B dL/db``: every rule below estimates the batch's summed
softmax output ``sum_b p_b`` (`recover_labels` picks the rule, `LABEL_METHODS`).

- Batch of one, every rule (iDLG, Zhao et al. 2020): only the true class has ``p - y < 0``, so its
  row sum is the single negative one: ``label = argmin_i sum_j dL/dW_ij``.
- ``llg``: LLG+-style counting (Wainakh et al. 2022): ``n_i ~ B (p_bar_i - g_i / m)`` with ``g_i``
  the bias gradient (``m = 1``) or the weight row sum (``m`` the mean feature sum), and ``p_bar``
  and ``m`` estimated by feeding the model random inputs; classes with a negative row sum get one
  sample first (Yin et al. 2021, Sec. 3.1). Exact on untrained models, poor on trained ones,
  whose outputs on the batch are far from ``p_bar``.
- ``ilrg``: iLRG (Ma et al., ICLR 2023, Sec. 4): class-wise embeddings ``e_j = dL/dW_j / dL/db_j``,
  their probabilities ``p_j = softmax(W e_j + b)``, and the linear system
  ``sum_j n_j p_ji - n_i = B dL/db_i`` for every class ``i`` with ``sum_j n_j = B``, solved with
  the Moore-Penrose pseudoinverse and rounded to counts that sum to ``B`` (`_ilrg_counts`). As
  in the paper (Sec. 4.3), the unknowns and equations are first restricted to the classes that
  the SVD test finds in the batch (`present_classes`). It needs ``b`` and logits equal to the
  output layer's (a linear head); otherwise ``llg``.
- The SVD test (Dang et al. 2021, "Revealing and protecting labels in distributed training",
  Sec. 3): ``dL/dW = (1/B) sum_b g_b h_b^T`` with ``g_b = p_b - y_b``, so the column space of
  ``dL/dW`` is ``span{g_b}``, and each ``-g_b`` is positive at its label and negative elsewhere.
  Class ``i`` is in the batch when some vector of that span, ``U x`` (``U`` the left singular
  vectors of the numerical rank), has ``(U x)_i >= 1`` and ``(U x)_j <= 0`` for every other
  ``j``: a linear feasibility problem (``scipy.optimize.linprog``). Where the rank reaches the
  number of classes every class passes, and the test says nothing.
- ``peel`` (the default): per-instance reading first, then ``llg`` on what is left. When a
  ReLU linear layer ``h = relu(V x + c)`` feeds the output layer and hidden unit ``k`` fires for
  one sample only, ``dL/dV_k / dL/dc_k`` is that sample's input ``x`` exactly (Phong et al. 2018,
  Sec. 3), hence its ``h`` and ``p``; its label ``y`` is the class with
  ``W_yk = W_:k . p - B dL/dc_k`` (the chain rule ``dL/dc_k = (1/B) W_:k . (p - y)`` for that
  sample), and a candidate is accepted only where some ``W_yk`` matches to rounding, which
  mixtures of samples do not. Each accepted sample's exact contribution is subtracted from the
  four gradients, which can isolate further samples; the remaining ``B'`` samples' counts come
  from ``llg`` on the residual mean gradient (`_peel`). Without such a layer (or with a bias-free
  or non-linear head), ``llg``: on trained models ``llg`` measured better than ``ilrg``
  (docs/inversion.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from phalanx.adversary.inversion.knowledge import AttackerKnowledge
from phalanx.adversary.inversion.names import DEFAULT_LABEL_METHOD, LABEL_METHODS

# `_peel` accepts a candidate sample when its label equation holds to PEEL_TOLERANCE of the
# spread of ``W_:k`` (float32 gradients keep about 1e-6 of it; mixtures miss by about 1e-1) and to
# PEEL_SHARE of ``B dL/dc_k`` itself (float32: below 1e-4; a unit holding only noise saturates
# ``p`` and misses by all of it).
PEEL_TOLERANCE = 1e-4
PEEL_SHARE = 1e-2


@dataclass
class _Head:
    """The output layer (and, for `_peel`, the ReLU linear layer feeding it)."""

    weight_index: int
    bias_index: int | None
    layer: nn.Linear | None
    linear_logits: bool = False
    hidden: nn.Linear | None = None
    hidden_index: int | None = None


def _output_layer(model: nn.Module, num_classes: int) -> tuple[int, int | None, nn.Linear | None]:
    """Indices (weight, bias) of the last (num_classes, F) parameter and the module owning it."""
    params = list(model.parameters())
    weight_index = None
    for index in range(len(params) - 1, -1, -1):
        if params[index].dim() == 2 and params[index].shape[0] == num_classes:
            weight_index = index
            break
    if weight_index is None:
        raise ValueError(f"model has no output layer with {num_classes} rows to read labels from")
    bias_index = weight_index + 1
    has_bias = bias_index < len(params) and tuple(params[bias_index].shape) == (num_classes,)
    layer = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.weight is params[weight_index]:
            layer = module
    return weight_index, bias_index if has_bias else None, layer


def _inspect_head(model: nn.Module, num_classes: int, probe: torch.Tensor) -> _Head:
    """The output layer, whether the logits are its output, and a ReLU linear layer before it.

    Both properties are checked on `probe` inputs: the model's output must equal the output
    layer's, and the output layer's input must equal ``relu`` of the previous linear layer's
    output (the layer that ran just before it)."""
    weight_index, bias_index, layer = _output_layer(model, num_classes)
    head = _Head(weight_index, bias_index, layer)
    if layer is None:
        return head
    calls: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
    handles = [
        module.register_forward_hook(
            lambda m, inp, out: calls.append((m, inp[0], out))  # type: ignore[arg-type]
        )
        for module in model.modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.no_grad():
            logits = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not calls or calls[-1][0] is not layer:
        return head
    head.linear_logits = torch.equal(logits, calls[-1][2])
    if len(calls) >= 2 and calls[-2][0].bias is not None:
        hidden, _, hidden_out = calls[-2]
        if hidden_out.shape == calls[-1][1].shape and torch.equal(
            calls[-1][1], torch.relu(hidden_out)
        ):
            params = list(model.parameters())
            index = next(i for i, p in enumerate(params) if p is hidden.weight)
            if index + 1 < len(params) and params[index + 1] is hidden.bias:
                head.hidden, head.hidden_index = hidden, index
    return head


def _features_and_probabilities(
    model: nn.Module, layer: nn.Linear | None, probe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean softmax output and mean feature sum of `model` on `probe` inputs."""
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        handle = layer.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
    try:
        with torch.no_grad():
            probs = torch.softmax(model(probe), dim=-1)
    finally:
        if handle is not None:
            handle.remove()
    feature_sum = captured[0].sum(dim=1).mean() if captured else torch.ones(())
    return probs.mean(dim=0), feature_sum


def _llg_counts(
    model: nn.Module,
    head: _Head,
    weight_grad: torch.Tensor,
    bias_grad: torch.Tensor | None,
    batch: int,
    probe: torch.Tensor,
) -> torch.Tensor:
    """Class counts (C,) by the ``llg`` rule for a mean gradient over `batch` samples."""
    row_sums = weight_grad.sum(dim=1)
    mean_probs, feature_sum = _features_and_probabilities(model, head.layer, probe)
    if bias_grad is not None:
        signal = bias_grad
    else:
        signal = row_sums / feature_sum.to(torch.float64).clamp_min(1e-12)
    estimate = batch * (mean_probs.to(torch.float64) - signal)
    counts = torch.zeros(weight_grad.shape[0], dtype=torch.int64)
    present = torch.argsort(row_sums)[: min(int((row_sums < 0).sum()), batch)]
    counts[present] = 1
    for _ in range(batch - int(counts.sum())):
        counts[int(torch.argmax(estimate - counts.to(torch.float64)))] += 1
    return counts


def round_counts(estimate: torch.Tensor, batch: int) -> torch.Tensor:
    """Non-negative integer counts summing to `batch` nearest to the real `estimate` (C,):
    round, then move single units where rounding erred most."""
    counts = estimate.round().clamp(0, batch).to(torch.int64)
    error = counts.to(torch.float64) - estimate
    while int(counts.sum()) > batch:
        index = int(torch.argmax(torch.where(counts > 0, error, torch.full_like(error, -1e300))))
        counts[index] -= 1
        error[index] -= 1
    while int(counts.sum()) < batch:
        index = int(torch.argmin(error))
        counts[index] += 1
        error[index] += 1
    return counts


def present_classes(weight_grad: torch.Tensor, batch: int) -> torch.Tensor:
    """The classes (sorted indices) that the SVD test of Dang et al. (2021) finds in a batch,
    from the output layer's weight gradient (C, m); see the module docstring. The numerical rank
    counts the singular values above float32 rounding of the largest, capped at `batch`."""
    from scipy.optimize import linprog

    gradient = weight_grad.detach().to(torch.float64)
    classes = gradient.shape[0]
    left, singular, _ = torch.linalg.svd(gradient, full_matrices=False)
    tolerance = float(singular[0]) * max(gradient.shape) * torch.finfo(torch.float32).eps
    rank = int((singular > tolerance).sum())
    if rank != batch or rank >= classes:
        return torch.arange(classes)
    basis = left[:, :rank].numpy()
    found = []
    for index in range(classes):
        # (U x)_index >= 1 and (U x)_j <= 0 for j != index, written as A_ub x <= b_ub
        rows = basis.copy()
        rows[index] = -rows[index]
        limits = np.zeros(classes)
        limits[index] = -1.0
        result = linprog(
            np.zeros(rank),
            A_ub=rows,
            b_ub=limits,
            bounds=[(None, None)] * rank,
            method="highs",
        )
        if result.status != 2:  # only a proven infeasibility rules a class out
            found.append(index)
    return torch.tensor(found, dtype=torch.int64)


def _ilrg_counts(
    layer: nn.Linear, weight_grad: torch.Tensor, bias_grad: torch.Tensor, batch: int
) -> torch.Tensor:
    """Real-valued class counts (C,) by iLRG (Ma et al. 2023): class-wise embeddings
    ``e_j = dL/dW_j / dL/db_j``, ``p_j = softmax(W e_j + b)``, then the pseudoinverse solution of
    ``[1^T; P^T - I] n = [B; B dL/db]`` (``P`` holds ``p_j`` as rows), over the classes that
    `present_classes` finds (zero for the others)."""
    weight = layer.weight.detach().to(torch.float64)
    bias = (
        layer.bias.detach().to(torch.float64)
        if layer.bias is not None
        else torch.zeros(weight.shape[0], dtype=torch.float64)
    )
    tiny = torch.finfo(torch.float64).tiny
    safe = torch.where(bias_grad.abs() > tiny, bias_grad, torch.full_like(bias_grad, tiny))
    embeddings = weight_grad / safe[:, None]
    probs = torch.softmax(embeddings @ weight.T + bias, dim=1)
    present = present_classes(weight_grad, batch)
    kept = probs[present][:, present]
    system = torch.cat(
        [
            torch.ones(1, len(present), dtype=torch.float64),
            kept.T - torch.eye(len(present), dtype=torch.float64),
        ]
    )
    rhs = torch.cat([torch.tensor([float(batch)], dtype=torch.float64), batch * bias_grad[present]])
    counts = torch.zeros(weight.shape[0], dtype=torch.float64)
    counts[present] = torch.linalg.pinv(system) @ rhs
    return counts


def _peel(
    head: _Head, gradient: list[torch.Tensor], batch: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples read one at a time through the hidden ReLU layer (see the module docstring).

    `gradient` is the mean gradient over `batch` samples; the four gradients are kept as sums.

    Returns the peeled samples' class counts (C,) and the residual summed gradients of the
    output layer's weight and bias over the samples not peeled."""
    assert head.hidden is not None and head.hidden_index is not None and head.layer is not None
    hidden_w = head.hidden.weight.detach().to(torch.float64)
    hidden_b = head.hidden.bias.detach().to(torch.float64)  # type: ignore[union-attr]
    weight = head.layer.weight.detach().to(torch.float64)
    bias = head.layer.bias.detach().to(torch.float64)  # type: ignore[union-attr]
    assert head.bias_index is not None
    grad_v = batch * gradient[head.hidden_index].detach().to(torch.float64)
    grad_c = batch * gradient[head.hidden_index + 1].detach().to(torch.float64)
    grad_w = batch * gradient[head.weight_index].detach().to(torch.float64)
    grad_b = batch * gradient[head.bias_index].detach().to(torch.float64)
    classes = weight.shape[0]
    counts = torch.zeros(classes, dtype=torch.int64)
    floor = 1e-9 * float(grad_c.abs().max())
    spread = (weight.max(dim=0).values - weight.min(dim=0).values).clamp_min(1e-300)
    spent = torch.zeros_like(grad_c, dtype=torch.bool)
    for _ in range(batch):
        usable = (grad_c.abs() > floor) & ~spent
        if not bool(usable.any()):
            break
        units = torch.nonzero(usable).flatten()
        inputs = grad_v[units] / grad_c[units, None]
        pre = inputs @ hidden_w.T + hidden_b
        probs = torch.softmax(torch.relu(pre) @ weight.T + bias, dim=1)
        column = weight[:, units].T  # (U, C): W_:k of each unit k
        target = (column * probs).sum(dim=1) - grad_c[units]
        miss = (column - target[:, None]).abs().min(dim=1)
        fires = pre[torch.arange(len(units)), units] > 0
        relative = miss.values / grad_c[units].abs()
        valid = fires & (miss.values <= PEEL_TOLERANCE * spread[units]) & (relative <= PEEL_SHARE)
        score = torch.where(valid, relative, torch.full_like(relative, torch.inf))
        best = int(torch.argmin(score))
        if not bool(valid[best]):
            break
        label = int(miss.indices[best])
        counts[label] += 1
        g = probs[best].clone()
        g[label] -= 1.0
        h = torch.relu(pre[best])
        delta = (weight.T @ g) * (pre[best] > 0)
        before = grad_c.abs()
        grad_v -= torch.outer(delta, inputs[best])
        grad_c -= delta
        # units that carried this sample alone now hold rounding noise: never read them again
        spent |= grad_c.abs() <= 1e-3 * before
        grad_w -= torch.outer(g, h)
        grad_b -= g
    return counts, grad_w, grad_b


def recover_labels(
    model: nn.Module,
    observed_gradient: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    generator: torch.Generator | None = None,
    method: str = DEFAULT_LABEL_METHOD,
) -> torch.Tensor:
    """Labels (B,) sorted ascending, read from the last layers of a gradient-scale update by rule
    `method` (``peel``, ``ilrg`` or ``llg``; see the module docstring for each and its fallback).
    """
    if method not in LABEL_METHODS:
        raise ValueError(f"unknown label method {method!r}; known: {', '.join(LABEL_METHODS)}")
    batch = knowledge.batch_size
    if batch == 1:
        weight_index, _, _ = _output_layer(model, knowledge.num_classes)
        return observed_gradient[weight_index].detach().to(torch.float64).sum(dim=1).argmin()[None]
    dtype = next(model.parameters()).dtype
    probe = torch.rand((32, *knowledge.input_shape), generator=generator).to(dtype)
    head = _inspect_head(model, knowledge.num_classes, probe)
    weight_grad = observed_gradient[head.weight_index].detach().to(torch.float64)
    bias_grad = None
    if head.bias_index is not None:
        bias_grad = observed_gradient[head.bias_index].detach().to(torch.float64)
    ilrg_fits = head.layer is not None and bias_grad is not None and head.linear_logits
    if method == "llg" or not ilrg_fits or (method == "peel" and head.hidden is None):
        counts = _llg_counts(model, head, weight_grad, bias_grad, batch, probe)
        return torch.repeat_interleave(torch.arange(knowledge.num_classes), counts)
    assert head.layer is not None and bias_grad is not None
    counts = torch.zeros(knowledge.num_classes, dtype=torch.int64)
    remaining = batch
    if method == "peel" and head.hidden is not None:
        counts, summed_w, summed_b = _peel(head, observed_gradient, batch)
        remaining = batch - int(counts.sum())
        weight_grad, bias_grad = summed_w / max(remaining, 1), summed_b / max(remaining, 1)
    if remaining > 0 and method == "ilrg":
        counts += round_counts(
            _ilrg_counts(head.layer, weight_grad, bias_grad, remaining), remaining
        )
    elif remaining > 0:
        counts += _llg_counts(model, head, weight_grad, bias_grad, remaining, probe)
    return torch.repeat_interleave(torch.arange(knowledge.num_classes), counts)
