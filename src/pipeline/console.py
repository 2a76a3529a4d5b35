"""What a command prints: no TensorFlow C++ start-up lines, progress that reads cleanly in a log file.

TensorFlow 2.20+ writes its start-up lines (oneDNN, "Could not find cuda drivers", the CPU-feature banner,
absl's "All log messages before absl::InitializeLog() ...", and on a host without a GPU
"E0000 ... failed call to cuInit ... (303)") to file descriptor 2 before its log level is read, so
TF_CPP_MIN_LOG_LEVEL cannot silence them. `quiet_tensorflow` captures descriptor 2 while TensorFlow is
imported and first lists its devices, then writes back every captured line that is not one of those
known start-up lines: a real error at import still shows. TF_CPP_MIN_LOG_LEVEL=0 turns the capture off and
shows everything; unset, it becomes 1 (TensorFlow's later info lines off, its warnings kept).
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} .*"  # absl/glog info and warning lines (I0000 00:00:... port.cc:153] ...)
    r"|E\d{4} .*failed call to cuInit.*"  # no GPU on this host: not an error for a CPU run
    r"|To enable the following instructions: .*"  # the CPU-feature banner's second line
    r"|\s*)$"
)


@contextlib.contextmanager
def native_stderr_captured():
    """What C++ code writes to descriptor 2 during the block, kept out of the console: yields a list that holds
    those lines when the block ends."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines.extend(captured.read().decode(errors="replace").splitlines())


@contextlib.contextmanager
def startup_lines_muted():
    """Capture descriptor 2 for the block; write back what is not start-up noise."""
    lines: list[str] = []
    try:
        with native_stderr_captured() as lines:
            yield
    finally:  # an import that fails still shows what TensorFlow said
        kept = [line for line in lines if not STARTUP_NOISE.match(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the real loader of `tensorflow` so its first import runs muted."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            with startup_lines_muted():
                load(module)
                module.config.list_physical_devices()  # the cuInit attempt, while muted

        spec.loader.exec_module = exec_module
        return spec


def quiet_tensorflow() -> None:
    """Mute TensorFlow's start-up lines in this process, unless TF_CPP_MIN_LOG_LEVEL=0 asks for every line."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # later info lines off; warnings (a converter's reasons) stay
    if not any(isinstance(finder, _QuietTensorFlow) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


def progress_verbosity(verbose):
    """Keras' `verbose` for fit: `auto` is the redrawn bar on a terminal, one plain line per epoch in a log
    file or pipe (Keras' bar writes ANSI colours and backspaces wherever it runs)."""
    if verbose != "auto":
        return verbose
    return 1 if getattr(sys.stdout, "isatty", lambda: False)() else 2
