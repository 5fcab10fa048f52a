"""OPE estimators: one module per family, a common interface (``OffPolicyEstimator``)."""

from __future__ import annotations

from evaluation.estimators.base import (
    EpisodeStatistics,
    OffPolicyEstimator,
    OPEInput,
)
from evaluation.estimators.continuous import KernelDR, KernelIS, KernelWIS
from evaluation.estimators.direct import DirectMethod, FittedQEvaluation, QPredictions, d3rlpy_fqe
from evaluation.estimators.doubly_robust import DoublyRobust, WeightedDoublyRobust
from evaluation.estimators.importance_sampling import (
    PerDecisionIS,
    TrajectoryIS,
    WeightedIS,
    WeightedPerDecisionIS,
)
from evaluation.estimators.marginal import MarginalizedDR, MarginalizedIS
from evaluation.estimators.on_policy import OnPolicyValue
from evaluation.estimators.one_step import (
    IPW,
    SNIPW,
    DirectMethodBandit,
    DoublyRobustBandit,
    SelfNormalizedDoublyRobust,
)

ESTIMATORS: dict[str, type[OffPolicyEstimator]] = {
    cls.name: cls
    for cls in (
        OnPolicyValue,
        TrajectoryIS,
        PerDecisionIS,
        WeightedIS,
        WeightedPerDecisionIS,
        DoublyRobust,
        WeightedDoublyRobust,
        DirectMethod,
        IPW,
        SNIPW,
        DirectMethodBandit,
        DoublyRobustBandit,
        SelfNormalizedDoublyRobust,
        KernelIS,
        KernelWIS,
        KernelDR,
        MarginalizedIS,
        MarginalizedDR,
    )
}

__all__ = [
    "ESTIMATORS",
    "IPW",
    "SNIPW",
    "DirectMethod",
    "DirectMethodBandit",
    "DoublyRobust",
    "DoublyRobustBandit",
    "EpisodeStatistics",
    "FittedQEvaluation",
    "KernelDR",
    "KernelIS",
    "KernelWIS",
    "MarginalizedDR",
    "MarginalizedIS",
    "OPEInput",
    "OffPolicyEstimator",
    "OnPolicyValue",
    "PerDecisionIS",
    "QPredictions",
    "SelfNormalizedDoublyRobust",
    "TrajectoryIS",
    "WeightedDoublyRobust",
    "WeightedIS",
    "WeightedPerDecisionIS",
    "d3rlpy_fqe",
]
