"""Training: the train command's job (`job`: data, model, checkpoints, fit, test), the library it calls (`fit`),
the runtime (precision, distribution, optimizers), resume and backups, callbacks, losses, and the transfer
command's phases (`transfer`).

May import config, data, lecture, models, plots, sweeps (a trial's pruning callback), tasks, tracking.
"""
