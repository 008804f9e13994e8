"""Analytic label recovery from the last layer's gradient.

For a linear output layer ``z = W h + b`` after non-negative features ``h`` (sigmoid, ReLU) and the
mean cross-entropy over a batch of ``B``, the gradient of row ``i`` is

    dL/dW_i = (1/B) sum_b (p_bi - y_bi) h_b,        dL/db_i = (1/B) sum_b (p_bi - y_bi).

- Batch of one (iDLG, Zhao et al. 2020): only the true class has ``p - y < 0``, so its row sum is
  the single negative one: ``label = argmin_i sum_j dL/dW_ij``.
- Larger batches: every class present in the batch has a negative row sum when the model is far
  from confident (Yin et al. 2021, Sec. 3.1). The counts follow LLG+ (Wainakh et al. 2022):
  ``n_i ~ B (p_bar_i - g_i / m)`` with ``g_i`` the bias gradient (``m = 1``) or the weight row sum
  (``m`` the mean feature sum), and ``p_bar`` and ``m`` estimated by feeding the model random
  inputs. Classes with a negative gradient get one sample first; the rest go to the largest
  remaining estimates.
"""

from __future__ import annotations

import torch
from torch import nn

from phalanx.adversary.inversion.knowledge import AttackerKnowledge


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


def recover_labels(
    model: nn.Module,
    observed_gradient: list[torch.Tensor],
    knowledge: AttackerKnowledge,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Labels (B,) sorted ascending, read from the last layer of a gradient-scale update."""
    weight_index, bias_index, layer = _output_layer(model, knowledge.num_classes)
    row_sums = observed_gradient[weight_index].detach().to(torch.float64).sum(dim=1)
    batch = knowledge.batch_size
    if batch == 1:
        return row_sums.argmin().reshape(1)
    dtype = next(model.parameters()).dtype
    probe = torch.rand((32, *knowledge.input_shape), generator=generator).to(dtype)
    mean_probs, feature_sum = _features_and_probabilities(model, layer, probe)
    if bias_index is not None:
        signal = observed_gradient[bias_index].detach().to(torch.float64)
    else:
        signal = row_sums / feature_sum.to(torch.float64).clamp_min(1e-12)
    estimate = batch * (mean_probs.to(torch.float64) - signal)
    counts = torch.zeros(knowledge.num_classes, dtype=torch.int64)
    present = torch.argsort(row_sums)[: min(int((row_sums < 0).sum()), batch)]
    counts[present] = 1
    for _ in range(batch - int(counts.sum())):
        counts[int(torch.argmax(estimate - counts.to(torch.float64)))] += 1
    return torch.repeat_interleave(torch.arange(knowledge.num_classes), counts)
