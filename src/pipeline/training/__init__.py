"""Training: the one training path (`job`: data, model, checkpoints, phases, fit, test, the run it records), what
a job trains (`recipe`: the model factories and their phases; `transfer`: the transfer stage's factory), the
library it calls (`fit`), the runtime (precision, distribution, optimizers), resume and backups, callbacks and
losses.

May import config, data, deploy (the model's contract), lecture, models, plots, sweeps (a trial's pruning
callback), tasks, tracking.
"""
