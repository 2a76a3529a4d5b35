"""`cnn bench` (`make bench`) as a library: what the pipeline costs over hand-written Keras, measured side by side.

`measures` holds the measurements, each run in a fresh Python process (`python -m
pipeline.benchmarks.measures MEASURE KWARGS`: its own TensorFlow runtime, its own peak memory) and
printed as one result line; `datasets` builds the benchmark's data sets (generated images hard-linked under
new names, so thousands of files cost little disk); `suite` runs the measurements interleaved and repeated;
`report` turns them into the table of ratios against targets. pipeline.commands.bench is the command line.
May import config, data, lecture, models, tasks (the bare floor trains with the task's own loss and metric),
training and tracking; never a command (it starts `cnn train`
as a subprocess, by module name).
"""
