"""Hydra multiruns as one MLflow parent run with a child per job, the sweep's summary and the registration of
its best child (`sweep`); Optuna studies, trials and pruning (`tuning`, used by the sweeper in
src/hydra_plugins/pipeline_sweepers).

May import config, data, evaluation (the leaderboard a summary is), plots, tracking; and Hydra, being
Hydra's callback.
"""
