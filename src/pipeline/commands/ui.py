"""`cnn ui`: the MLflow UI over the project's store, bound to loopback.

    cnn ui                       # http://127.0.0.1:5000 over tracking.uri (./mlflow.db unless MLFLOW_TRACKING_URI)
    cnn ui --port 5001
A store that is already a server (MLFLOW_TRACKING_URI=http://...) has its own UI: its address is printed.
"""

import argparse
import os
import sys


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """The `mlflow ui` command line for a store URI, bound to `host` (loopback unless asked otherwise)."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnn ui", description=__doc__.split("\n")[0])
    parser.add_argument("--uri", help="tracking URI (default: the config's tracking.uri)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    from pipeline.config import default_tracking_uri

    uri = args.uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        print(f"the store is a tracking server: its UI is {uri}")
        return
    print(f"MLflow UI over {uri} at http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    command = ui_command(uri, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
