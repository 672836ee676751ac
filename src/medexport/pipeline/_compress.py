"""The compress stage: the options checked against the passes asked for, then each pass configured and run.

``BuildConfig.compress`` names one registered pass or a chain of at most one pass per family ("tucker,prune-l2",
"prune-l2,subpixel"), run in the order given, each on the model the previous pass returned, an exact rewrite
(subpixel) last; each reads only its own family's options (--budget/--latency/--rank-ratio/--energy/--vbmf, or
--ratio/--iterative/--scope/--rollback; --latency-backend for what is measured).
A pruning pass with --rollback judges its steps against the model it receives; the build's final validation
is always against the original.
"""
from __future__ import annotations

from typing import Any, Callable, ContextManager

import numpy as np

from medexport.errors import DataError, InputError
from medexport.loading import LoadedModel
from medexport.pipeline.config import BuildConfig

_CHOICES = "--budget, --latency, --rank-ratio, --energy or --vbmf"


def compress(loaded: LoadedModel, config: BuildConfig, stage: Callable[[str], ContextManager[None]]
             ) -> tuple[dict, dict | None]:
    """Replace ``loaded.module`` by its compressed copy; return the record (a chain's: see ``chain_summary``) and the
    fine-tuning's (None without --finetune). In order, each under its own ``stage``: the lossy passes (a pruning
    pass fine-tuned step by step), the fine-tuning after them when no pruning pass took it, then an exact rewrite,
    which must see the final weights (fine-tuned after it, its zero taps would not stay zero). The caller has run
    :func:`check_compress_options` before any work."""
    from medexport.compression import chain, get_pass
    from medexport.compression.record import chain_summary
    from medexport.pipeline._finetune import finetune, finetune_label, recovery_for_pruning

    if loaded.module is None:
        raise InputError("compression rewrites torch layers; give a torch model, not an ONNX file")
    original, shape = loaded.module, (1, *loaded.input_shape[1:])
    lossy = [m for m in config.compress_methods if get_pass(m).family != "rewrite"]
    exact = [m for m in config.compress_methods if get_pass(m).family == "rewrite"]
    recovery = recovery_for_pruning(loaded, original, config)
    records, tuned = [], None
    if lossy:
        with stage(compress_label(config, lossy)):
            loaded.module, done = chain(loaded.module, shape, [(m, _pass_config(loaded, config, get_pass(m), recovery))
                                                                for m in lossy])
        records += done
        tuned = recovery.summary() if recovery is not None else None
        if config.finetune_steps and tuned is None:   # no pruning pass, or one that found nothing to prune
            with stage(finetune_label(config)):
                tuned = finetune(loaded, original, config)
    if exact:
        with stage(compress_label(config, exact)):
            loaded.module, done = chain(loaded.module, shape, [(m, _pass_config(loaded, config, get_pass(m)))
                                                                for m in exact])
        records += done
    return chain_summary(records), tuned


def compress_label(config: BuildConfig, methods: list[str]) -> str:
    """A compress stage's progress label: each pass of ``methods`` and the target it is asked to meet."""
    from medexport.compression import get_pass

    labels = []
    for method in methods:
        if get_pass(method).family == "pruning":
            tuned = (f", fine-tuned {max(1, config.finetune_steps // config.prune_steps)} steps after each step tried"
                     if config.finetune_steps else "")
            labels.append(f"{method} ratio {config.prune_ratio}{tuned}")
        elif get_pass(method).family == "rewrite":
            labels.append(f"{method}, measured on {config.measure_backend}")
        elif config.compress_latency is not None:
            labels.append(f"{method} latency {config.compress_latency} on {config.measure_backend}")
        elif config.rank_ratio is not None:
            labels.append(f"{method} rank ratio {config.rank_ratio}")
        elif config.energy is not None:
            labels.append(f"{method} energy {config.energy}")
        elif config.vbmf:
            labels.append(f"{method} VBMF ranks")
        else:
            labels.append(f"{method} {config.effective_budget}"
                          f"{' of the parameters' if config.budget_metric == 'params' else ''}")
    return f"compress ({', then '.join(labels)})"


def families(config: BuildConfig) -> list[str]:
    """The pass family of each compression method, in order ("lowrank", "pruning", "rewrite")."""
    from medexport.compression import get_pass

    return [get_pass(method).family for method in config.compress_methods]


def check_compress_options(config: BuildConfig) -> None:
    """InputError for a chain we cannot run, conflicting rank rules, or options no pass asked for would read,
    rather than silently dropping them. Needs only the config: the verbs call it before any work."""
    defaults = {name: f.default for name, f in BuildConfig.__dataclass_fields__.items()}
    chain = families(config)
    if len(set(chain)) != len(chain):
        raise InputError(f"a compression chain takes at most one low-rank, one pruning and one rewrite pass (each "
                         f"reads its own options), got {config.compress}")
    if config.finetune_steps and set(chain) == {"rewrite"}:
        raise InputError(f"--finetune recovers what a lossy pass changed; {config.compress} is exact: drop --finetune "
                         "or add a compression pass before it")
    if "rewrite" in chain[:-1]:
        raise InputError(f"{config.compress_methods[chain.index('rewrite')]} rewrites layers exactly for speed and "
                         f"must come last in a chain (e.g. prune-l2,subpixel), got {config.compress}")
    lowrank = {"--budget": config.budget is not None, "--budget-metric":
               config.budget_metric != defaults["budget_metric"], "--rank-ratio": config.rank_ratio is not None,
               "--energy": config.energy is not None, "--vbmf": config.vbmf,
               "--latency": config.compress_latency is not None,
               "--latency-payoff": config.compress_payoff != defaults["compress_payoff"],
               "--exclude-type": bool(config.compress_exclude_types)}
    pruning = {"--rollback": config.prune_rollback, "--iterative": config.prune_steps != defaults["prune_steps"],
               "--scope": config.prune_scope != defaults["prune_scope"],
               "--max-ratio": config.prune_max_ratio != defaults["prune_max_ratio"],
               "--ratio": config.prune_ratio != defaults["prune_ratio"]}
    if "pruning" in chain and config.prune_scope != "global" and pruning["--max-ratio"]:
        raise InputError("--max-ratio caps groups in the global ranking; add --scope global "
                         "(--scope layer removes --ratio from every group)")
    if "lowrank" in chain:
        _check_rank_rule(config, lowrank)
    if config.compress_backend is not None and "rewrite" not in chain and config.compress_latency is None:
        what = f"{config.compress} measures nothing" if chain else "without --compress nothing is measured"
        raise InputError(f"--latency-backend says where --latency and subpixel are measured; {what}: drop it, "
                         "or add --latency (low-rank) or the subpixel pass")
    ignored = [name for family, given in (("lowrank", lowrank), ("pruning", pruning)) if family not in chain
               for name, used in given.items() if used]
    if ignored and not chain:
        raise InputError(f"{', '.join(ignored)} configure compression; add --compress METHOD or drop them")
    if ignored:
        verb = "is" if len(ignored) == 1 else "are"
        hint = " (low-rank passes keep a fraction of each rank with --rank-ratio)" if "--ratio" in ignored else ""
        raise InputError(f"{', '.join(ignored)} {verb} not used by {config.compress} (a {chain[0]} pass); "
                         f"drop the option or choose a pass that uses it{hint}")


def _check_rank_rule(config: BuildConfig, given: dict[str, bool]) -> None:
    if given["--latency-payoff"] and not given["--latency"]:
        raise InputError("--latency-payoff applies to --latency mode; add --latency or drop it")
    rules = [name for name in ("--budget", "--latency", "--rank-ratio", "--energy", "--vbmf") if given[name]]
    if len(rules) > 1:
        raise InputError(f"{', '.join(rules[:-1])} and {rules[-1]} are competing rank rules; give one of {_CHOICES}")
    if given["--budget-metric"] and rules and rules != ["--budget"]:
        raise InputError(f"--budget-metric says what --budget divides; it does not apply to {rules[0]}")


def _pass_config(loaded: LoadedModel, config: BuildConfig, compression, recovery=None) -> Any:
    """The config object ``compression`` takes, filled from the build options and real images it reads
    (a pruning pass also gets ``recovery``, run after each of its steps)."""
    if compression.family == "pruning":
        return prune_config(loaded, config, compression.needs_calibration, recovery)
    if compression.family == "rewrite":
        return compression.config_type(backend=config.measure_backend, exclude=tuple(config.compress_exclude))
    return compression.config_type(**_rank_rule(config), exclude=tuple(config.compress_exclude),
                                   exclude_types=tuple(config.compress_exclude_types),
                                   calibration=_compression_images(loaded, config, compression))


def _rank_rule(config: BuildConfig) -> dict[str, Any]:
    from medexport.compression import parse_budget

    if config.compress_latency is not None:
        return {"latency": config.compress_latency, "backend": config.measure_backend,
                "payoff": config.compress_payoff}
    if config.rank_ratio is not None:
        return {"rank_ratio": config.rank_ratio}
    if config.energy is not None:
        return {"energy": config.energy}
    if config.vbmf:
        return {"vbmf": True}
    return {"budget": parse_budget(config.effective_budget), "budget_metric": config.budget_metric}


def _compression_images(loaded: LoadedModel, config: BuildConfig, compression) -> np.ndarray | None:
    """Real images for a data-aware pass (required) or the latency allocator's sensitivities (else weight error)."""
    from medexport.pipeline._stages import calibration_images

    if not compression.needs_calibration and config.compress_latency is None:
        return None
    try:
        return calibration_images(loaded, config.calib, config.calib_samples)[0]
    except DataError:
        if compression.needs_calibration:
            raise
        return None


def prune_config(loaded: LoadedModel, config: BuildConfig, needs_calibration: bool, recover=None):
    """The PruneConfig of a pruning/merging pass, with calibration images and guard-rail data when it needs them."""
    from medexport.compression.pruning import PruneConfig
    from medexport.evaluation import GuardRails
    from medexport.pipeline._stages import calibration_images, labelled_data

    calibration = calibration_images(loaded, config.calib, config.calib_samples)[0] if needs_calibration else None
    heldout = None
    if config.prune_rollback:
        heldout = labelled_data(loaded, config)
        if heldout is None:
            raise InputError("--rollback validates every step on labelled images: pass --data (and --labels), "
                             "or use a reference model")
    return PruneConfig(ratio=config.prune_ratio, exclude=tuple(config.compress_exclude), scope=config.prune_scope,
                       max_ratio=config.prune_max_ratio, steps=config.prune_steps, calibration=calibration,
                       heldout=heldout, recover=recover,
                       rails=GuardRails(config.max_overall_drop, config.max_class_drop) if config.prune_rollback else None)
