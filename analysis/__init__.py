"""Analysis of searches: trials as a DataFrame, hyperparameter-influence figures, an HTML report."""
