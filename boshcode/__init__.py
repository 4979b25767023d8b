"""boshcode: co-design of a FlexiBERT 2.0 architecture and the device that runs it.

:func:`codesign` runs BOSHCODE (Algorithm 1 of the EdgeTran paper) on an oracle
(:class:`SurrogateOracle`: ProTran hardware surrogates and an accuracy surrogate) for weights of the
performance P (:class:`Weights`); :func:`run_baseline` runs random search or GBRT-, GP- or
random-forest-based Bayesian optimisation on the same problem.

>>> oracle = SurrogateOracle.from_files(["rpi.json", "a100.json"], "glue_pretrain_16.json")  # doctest: +SKIP
>>> result, problem = codesign(oracle, Weights(0.5, 0.2, 0.2, 0.1))                         # doctest: +SKIP
>>> problem.describe(result.best)["device"]                                                  # doctest: +SKIP

Every name is imported on first use (:mod:`flexibert.lazy`), so that ``boshcode --help`` starts at
once; the imports under ``TYPE_CHECKING`` list the same names for editors.
"""

from typing import TYPE_CHECKING

from flexibert.lazy import attach

if TYPE_CHECKING:
    from boshcode._baselines import BASELINES, BaselineSettings, run_baseline
    from boshcode._gobi import GobiSettings, gobi
    from boshcode._networks import NPNRegressor, Student, SurrogateSet, Teacher, TrainSettings
    from boshcode._objective import (
        NORMALISATIONS,
        P_MIN,
        Bounds,
        Weights,
        normalised_terms,
        performance,
        performance_std,
    )
    from boshcode._oracle import MeasuringOracle, Oracle, OracleError, SurrogateOracle, usable_devices
    from boshcode._problem import CodesignProblem, Constraints, Evaluation
    from boshcode._search import MODES, BoshcodeSearch, SearchResult, SearchSettings, codesign, make_problem

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        # objective
        "boshcode._objective": ["NORMALISATIONS", "P_MIN", "Bounds", "Weights", "normalised_terms", "performance",
                                "performance_std"],
        # oracles and the problem
        "boshcode._oracle": ["MeasuringOracle", "Oracle", "OracleError", "SurrogateOracle", "usable_devices"],
        "boshcode._problem": ["CodesignProblem", "Constraints", "Evaluation"],
        # surrogates and GOBI
        "boshcode._networks": ["NPNRegressor", "Student", "SurrogateSet", "Teacher", "TrainSettings"],
        "boshcode._gobi": ["GobiSettings", "gobi"],
        # searches
        "boshcode._search": ["MODES", "BoshcodeSearch", "SearchResult", "SearchSettings", "codesign", "make_problem"],
        "boshcode._baselines": ["BASELINES", "BaselineSettings", "run_baseline"],
    },
)
