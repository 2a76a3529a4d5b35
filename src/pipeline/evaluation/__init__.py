"""Scores and rankings: segmentation metrics from one confusion matrix over a whole split (`metrics`), and
leaderboards of runs ranked by the validation score each was chosen by, the test score beside
(`leaderboard`).

May import config, tasks (a metric's direction) and tracking (the runs it ranks).
"""
