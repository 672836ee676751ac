"""The low-rank family's options (``--budget``, ``--latency``, ``--rank-ratio``, ...) and how they become a config.

Exactly one rank rule: ``--budget`` (3x when no rule is given), ``--latency``, ``--rank-ratio``, ``--energy`` or
``--vbmf``; the options that qualify a rule (``--budget-metric``, ``--latency-payoff``, ``--latency-backend``)
are refused without it, rather than silently dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from medexport.compression.options import EXCLUDE_LAYER, LATENCY, LATENCY_BACKEND, PassOption
from medexport.errors import DataError, InputError

DEFAULT_BUDGET = "3x"


OPTIONS = (
    PassOption("--budget", "budget", "Low-rank passes: reduction target of --budget-metric, e.g. 3x or 6x "
               f"(default {DEFAULT_BUDGET}, unless another rank rule is given)."),
    PassOption("--budget-metric", "budget_metric", "Low-rank --budget: what it divides, MACs or parameters.",
               default="macs", choices=("macs", "params")),
    PassOption("--rank-ratio", "rank_ratio", "Low-rank passes: keep this fraction of every layer's full rank "
               "(Tucker-2: of its channel counts) (replaces --budget).", type=float),
    PassOption("--energy", "energy", "Low-rank passes: smallest ranks keeping this fraction of each layer's squared "
               "singular values, e.g. 0.9 (replaces --budget).", type=float),
    PassOption("--vbmf", "vbmf", "Low-rank passes: ranks from analytic variational Bayesian matrix factorization "
               "(EVBMF) of each layer (replaces --budget).", is_flag=True, default=False),
    LATENCY,
    LATENCY_BACKEND,
    PassOption("--latency-payoff", "payoff", "Low-rank --latency: least measured realized/ideal speed-up (latency "
               "ratio over MACs ratio) the chosen factorizations keep; lower it to reach deeper targets.",
               type=float, default=0.85),
    EXCLUDE_LAYER,
    PassOption("--exclude-type", "exclude_types", "Low-rank passes: layer class kept uncompressed, e.g. Linear or "
               "ConvTranspose3d (repeatable).", multiple=True),
)


def configure(config_type: type, given: dict[str, Any], backend: str) -> Any:
    """The LowRankConfig (or subclass) from the options given; InputError for competing or stray rule options."""
    from medexport.compression.lowrank.config import RULES, parse_budget

    flags = {option.field: option.flag for option in OPTIONS}
    rules = [flags[name] for name in RULES if given.get(name) is not None and given.get(name) is not False]
    if len(rules) > 1:
        raise InputError(f"{', '.join(rules[:-1])} and {rules[-1]} are competing rank rules; give one of "
                         "--budget, --latency, --rank-ratio, --energy or --vbmf")
    if "payoff" in given and rules != ["--latency"]:
        raise InputError("--latency-payoff applies to --latency mode; add --latency or drop it")
    if "budget_metric" in given and rules not in ([], ["--budget"]):
        raise InputError(f"--budget-metric says what --budget divides; it does not apply to {rules[0]}")
    values = dict(given)
    if not rules:
        values["budget"] = DEFAULT_BUDGET
    if values.get("budget") is not None:
        values["budget"] = parse_budget(values["budget"])
    if values.get("latency") is not None:
        values.setdefault("backend", backend)
    return config_type(**values)


def bind(config: Any, data: Any, needs_calibration: bool) -> Any:
    """Real images for a data-aware pass (required) or the latency allocator's sensitivities (else weight error)."""
    if not needs_calibration and config.latency is None:
        return config
    try:
        images = data.calibration()
    except DataError:
        if needs_calibration:
            raise
        return config
    return dataclasses.replace(config, calibration=images)


def describe(name: str, config: Any) -> str:
    """``svd 3x``, ``tucker latency 0.5 on openvino``, ``svd energy 0.9``, ..."""
    if config.latency is not None:
        return f"{name} latency {config.latency} on {config.backend}"
    if config.rank_ratio is not None:
        return f"{name} rank ratio {config.rank_ratio}"
    if config.energy is not None:
        return f"{name} energy {config.energy}"
    if config.vbmf:
        return f"{name} VBMF ranks"
    metric = " of the parameters" if config.budget_metric == "params" else ""
    return f"{name} {config.budget:g}x{metric}"
