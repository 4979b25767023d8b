"""boshcode: co-design of a FlexiBERT 2.0 architecture and the device that runs it.

:func:`codesign` runs BOSHCODE (Algorithm 1 of the EdgeTran paper) on an oracle
(:class:`SurrogateOracle`: ProTran hardware surrogates and the accuracy model; :class:`CommandOracle`:
the user's own evaluation over JSON lines) for weights of the performance P (:class:`Weights`, log or
max normalisation); :func:`run_baseline` runs random search, scikit-learn Bayesian optimisation or
Optuna's samplers on the same problem; :func:`recommend` picks the pair with the highest P - risk * std.
A device of an oracle is a target, a device under one runtime (:func:`device_runtime`);
:func:`load_runtime_drift` reads the drift that charges a lower-precision runtime's accuracy.

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
    from boshcode._drift import DriftFileError, RuntimeDrift, drift_charges, load_runtime_drift
    from boshcode._external import CommandOracle, ObjectOracle, load_oracle_object
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
    from boshcode._oracle import (
        MeasuringOracle,
        Oracle,
        OracleError,
        SurrogateOracle,
        device_runtime,
        usable_devices,
    )
    from boshcode._problem import ARCH_INPUTS, CodesignProblem, Constraints, Evaluation
    from boshcode._search import (
        MODES,
        BoshcodeSearch,
        SearchResult,
        SearchSettings,
        codesign,
        make_problem,
        recommend,
    )
    from boshcode._state import resume, save_state, state_header

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        # objective
        "boshcode._objective": ["NORMALISATIONS", "P_MIN", "Bounds", "Weights", "normalised_terms", "performance",
                                "performance_std"],
        # oracles and the problem
        "boshcode._oracle": ["MeasuringOracle", "Oracle", "OracleError", "SurrogateOracle", "device_runtime",
                             "usable_devices"],
        # the accuracy charge of runtimes that drift from float32
        "boshcode._drift": ["DriftFileError", "RuntimeDrift", "drift_charges", "load_runtime_drift"],
        "boshcode._problem": ["ARCH_INPUTS", "CodesignProblem", "Constraints", "Evaluation"],
        # surrogates and GOBI
        "boshcode._networks": ["NPNRegressor", "Student", "SurrogateSet", "Teacher", "TrainSettings"],
        "boshcode._gobi": ["GobiSettings", "gobi"],
        # searches
        "boshcode._search": ["MODES", "BoshcodeSearch", "SearchResult", "SearchSettings", "codesign", "make_problem",
                             "recommend"],
        # the user's own evaluation, and a search's state on disk
        "boshcode._external": ["CommandOracle", "ObjectOracle", "load_oracle_object"],
        "boshcode._state": ["resume", "save_state", "state_header"],
        "boshcode._baselines": ["BASELINES", "BaselineSettings", "run_baseline"],
    },
)
