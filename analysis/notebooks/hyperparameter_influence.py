# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How each hyperparameter moves accuracy
#
# Reads one or several experiments from a trial store, ranks the hyperparameters by importance
# and draws the figures of `larnn plot`. Runs top to bottom as a plain script:
#
#     python analysis/notebooks/hyperparameter_influence.py --store sqlite:///larnn.db --experiment round3
#
# and opens as a notebook in Jupyter (jupytext percent format).

# %%
import argparse
import sys
from pathlib import Path

parser = argparse.ArgumentParser(description="Hyperparameter influence on validation accuracy.")
parser.add_argument("--store", default=None, help="trial store URL (default: $LARNN_STORE or sqlite:///larnn.db)")
parser.add_argument("--experiment", action="append", required=True, help="experiment name (repeatable)")
parser.add_argument("--out", default="plots/notebook", help="where the figures go")
args = parser.parse_args(sys.argv[1:] if "ipykernel" not in sys.modules else ["--experiment", "round3"])

# %%
from analysis import plots
from analysis.frame import finished, trials_frame
from analysis.importance import ranking
from larnn_core.records import TEST_ACCURACY, VALIDATION_ACCURACY
from workers.store import open_store

store = open_store(args.store, read_only=True)
frame, hyperparameters = trials_frame(store, args.experiment)
done = finished(frame)
print(f"{len(frame)} trials, {len(done)} finished")
print(frame.groupby(["experiment", "state"]).size().unstack(fill_value=0))

# %% [markdown]
# ## The best trials

# %%
columns = ["experiment", "tid", "model", VALIDATION_ACCURACY, TEST_ACCURACY, "best_epoch"]
print(done[columns + [h for h in hyperparameters if h in done and h != "model"]].head(10).to_string(index=False))

# %% [markdown]
# ## Which hyperparameters matter

# %%
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
colors = plots.palette(args.experiment)
figures, table = plots.importance_figure(done, hyperparameters, out, colors)
print(table.to_string(index=False))

# %% [markdown]
# ## Accuracy against each hyperparameter, and the strongest pairs

# %%
log_names = plots.log_distributed([store.get_experiment(n) for n in args.experiment])
figures += plots.hyperparameter_figures(done, hyperparameters, out, colors, log_names)
figures += plots.pair_figures(done, ranking(table), out, log_names)

# %% [markdown]
# ## Is the validation-selected test accuracy honest?

# %%
figures += plots.selection_figure(done, out, colors)
print(f"{len(figures)} figures in {out}/")
