"""hyperopt's TPE (hyperopt.tpe.suggest, its defaults): the same draws and the same choice, at a
cost that grows slowly with the number of trials.

hyperopt builds the posterior's graph anew at every suggestion, then loops in Python over every
earlier trial: collecting the observations (miscs_to_idxs_vals), splitting them at the gamma
quantile (ap_split_trials) and, for quantized hyperparameters, adding up the mixture's components
one by one (GMM1_lpdf, LGMM1_lpdf; hyperopt pull request 940 proposes vectorising it, unmerged).
At 10,000 trials those loops are 0.35 s of a 0.45 s suggestion. Here the graph is built once per
space, the observations come as arrays from a worker's history (workers/history.py), and the
graph runs with numpy versions of those functions: the same operations in the same order on the
same numbers, so the same floats (tests/test_tpe.py checks every suggestion against hyperopt's).
"""

from __future__ import annotations

import numpy as np
from hyperopt import Domain, pyll, tpe
from hyperopt.base import miscs_update_idxs_vals
from hyperopt.pyll import scope

GAMMA = tpe._default_gamma
PRIOR_WEIGHT = tpe._default_prior_weight
CANDIDATES = tpe._default_n_EI_candidates
STARTUP = tpe._default_n_startup_jobs  # below this many trials, hyperopt's TPE draws at random


@scope.define_info(o_len=2)
def larnn_ap_split_trials(o_idxs, o_vals, l_idxs, l_vals, gamma, gamma_cap=tpe.DEFAULT_LF):
    """hyperopt's ap_split_trials: the observations of the n_below best trials, and the others'
    (in the observations' order), with membership tested by numpy instead of a Python set."""
    o_idxs, o_vals, l_idxs, l_vals = map(np.asarray, (o_idxs, o_vals, l_idxs, l_vals))
    n_below = min(int(np.ceil(gamma * np.sqrt(len(l_vals)))), gamma_cap)
    l_order = np.argsort(l_vals)
    below = np.isin(o_idxs, l_idxs[l_order[:n_below]])
    above = np.isin(o_idxs, l_idxs[l_order[n_below:]])
    return o_vals[below], o_vals[above]


def _quantized_mass(samples, weights, mus, sigmas, bounds, cdf):
    """sum over components of w * cdf(ubound) - w * cdf(lbound), as hyperopt's loop adds them: one
    component after another (cumsum's last column), so the result is the loop's to the bit; and
    once per distinct sample (the candidates of a quantized hyperparameter repeat)."""
    distinct, back = np.unique(samples, return_inverse=True)
    lbound, ubound = bounds(distinct)
    mass = weights * cdf(ubound[:, None], mus, sigmas)  # (distinct samples, components)
    mass -= weights * cdf(lbound[:, None], mus, sigmas)
    return (np.cumsum(mass, axis=1)[:, -1] if mass.shape[1] else np.zeros(len(distinct)))[back.ravel()]


def _quantized_lpdf(samples, weights, mus, sigmas, low, high, bounds, cdf):
    """log of each sample's quantization bucket's mass under the mixture, less log of the mass
    inside [low, high]: the quantized case that GMM1_lpdf and LGMM1_lpdf share, their bucket's
    bounds and their components' cdf given."""
    samples, weights, mus, sigmas = map(np.asarray, (samples, weights, mus, sigmas))
    shape, samples = samples.shape, samples.flatten()
    p_accept = (
        1
        if low is None and high is None
        else np.sum(weights * (tpe.normal_cdf(high, mus, sigmas) - tpe.normal_cdf(low, mus, sigmas)))
    )
    rval = np.log(_quantized_mass(samples, weights, mus, sigmas, bounds, cdf)) - np.log(p_accept)
    rval.shape = shape
    return rval


@scope.define
def larnn_GMM1_lpdf(samples, weights, mus, sigmas, low=None, high=None, q=None):
    """hyperopt's GMM1_lpdf; its quantized case without the loop over components."""
    if q is None:
        return tpe.GMM1_lpdf(samples, weights, mus, sigmas, low, high, q)
    if np.size(samples) == 0:
        return np.asarray([])

    def bounds(x):
        return (
            x - q / 2 if low is None else np.maximum(x - q / 2, low),
            x + q / 2 if high is None else np.minimum(x + q / 2, high),
        )

    return _quantized_lpdf(samples, weights, mus, sigmas, low, high, bounds, tpe.normal_cdf)


@scope.define
def larnn_LGMM1_lpdf(samples, weights, mus, sigmas, low=None, high=None, q=None):
    """hyperopt's LGMM1_lpdf; its quantized case without the loop over components."""
    if q is None:
        return tpe.LGMM1_lpdf(samples, weights, mus, sigmas, low, high, q)

    def bounds(x):
        return (
            np.maximum(0, x - q / 2 if low is None else np.maximum(x - q / 2, np.exp(low))),
            x + q / 2 if high is None else np.minimum(x + q / 2, np.exp(high)),
        )

    return _quantized_lpdf(samples, weights, mus, sigmas, low, high, bounds, tpe.lognormal_cdf)


VECTORISED = {
    "ap_split_trials": "larnn_ap_split_trials",
    "GMM1_lpdf": "larnn_GMM1_lpdf",
    "LGMM1_lpdf": "larnn_LGMM1_lpdf",
}


class Posterior:
    """hyperopt's TPE graph for one space, built once, its loops replaced by VECTORISED."""

    def __init__(self, domain: Domain):
        self.domain = domain
        self.observed, self.observed_loss, posterior = tpe.build_posterior_wrapper(domain, PRIOR_WEIGHT, GAMMA)
        self.expr = pyll.as_apply(posterior)
        for node in pyll.dfs(self.expr):  # this graph's own nodes: hyperopt's functions stay as they are
            node.name = VECTORISED.get(node.name, node.name)

    def suggest(
        self,
        tid: int,
        seed: int,
        tids: np.ndarray,
        losses: np.ndarray,
        observed: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> tuple[dict, dict]:
        """misc.idxs and misc.vals of trial `tid`, as tpe.suggest draws them from a history of at
        least STARTUP trials: their tids in order, their losses (inf: none yet) and, per label,
        the tids that have a value for it and those values (in tid order)."""
        domain = self.domain
        first = max(int(tids.max()), tid) + 2  # tpe.suggest's candidates' ids, past every trial's
        fake_ids = list(range(first, first + CANDIDATES))
        memo = {
            domain.s_new_ids: fake_ids,
            domain.s_rng: np.random.default_rng(seed),
            self.observed_loss["idxs"]: tids,
            self.observed_loss["vals"]: losses,
            self.observed["idxs"]: {label: idxs for label, (idxs, _) in observed.items()},
            self.observed["vals"]: {label: vals for label, (_, vals) in observed.items()},
        }
        idxs, vals = pyll.rec_eval(self.expr, memo=memo, print_node_on_error=False)
        for label, param in domain.params.items():  # tpe.suggest's offset of two-argument randint
            if param.name == "randint" and len(param.pos_args) == 2:
                vals[label] = [val + param.pos_args[0].obj for val in vals[label]]
        misc = {"tid": tid}
        miscs_update_idxs_vals([misc], idxs, vals, idxs_map={fake_ids[0]: tid}, assert_all_vals_used=False)
        return misc["idxs"], misc["vals"]
