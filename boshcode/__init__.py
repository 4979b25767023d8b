"""boshcode: co-design of a FlexiBERT 2.0 architecture and the device that runs it.

:func:`codesign` runs BOSHCODE (Algorithm 1 of the EdgeTran paper) on an oracle
(:class:`SurrogateOracle`: ProTran hardware surrogates and an accuracy surrogate) for weights of the
performance P (:class:`Weights`); :func:`run_baseline` runs random search or GBRT-, GP- or
random-forest-based Bayesian optimisation on the same problem.

>>> oracle = SurrogateOracle.from_files(["rpi.json", "a100.json"], "glue_pretrain_16.json")  # doctest: +SKIP
>>> result, problem = codesign(oracle, Weights(0.5, 0.2, 0.2, 0.1))                         # doctest: +SKIP
>>> problem.describe(result.best)["device"]                                                  # doctest: +SKIP
"""

_LAZY = {
    # objective
    "P_MIN": "boshcode._objective",
    "Weights": "boshcode._objective",
    "Maxima": "boshcode._objective",
    "performance": "boshcode._objective",
    "normalised_terms": "boshcode._objective",
    # oracles and the problem
    "Oracle": "boshcode._oracle",
    "SurrogateOracle": "boshcode._oracle",
    "MeasuringOracle": "boshcode._oracle",
    "usable_devices": "boshcode._oracle",
    "CodesignProblem": "boshcode._problem",
    "Constraints": "boshcode._problem",
    "Evaluation": "boshcode._problem",
    # surrogates and GOBI
    "NPNRegressor": "boshcode._networks",
    "Teacher": "boshcode._networks",
    "Student": "boshcode._networks",
    "SurrogateSet": "boshcode._networks",
    "TrainSettings": "boshcode._networks",
    "GobiSettings": "boshcode._gobi",
    "gobi": "boshcode._gobi",
    # searches
    "MODES": "boshcode._search",
    "SearchSettings": "boshcode._search",
    "SearchResult": "boshcode._search",
    "BoshcodeSearch": "boshcode._search",
    "codesign": "boshcode._search",
    "make_problem": "boshcode._search",
    "BASELINES": "boshcode._baselines",
    "BaselineSettings": "boshcode._baselines",
    "run_baseline": "boshcode._baselines",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    # torch is imported on first use, so that `boshcode --help` starts at once.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'boshcode' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
