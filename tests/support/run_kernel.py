"""Starts a Jupyter kernel by kernelspec name with jupyter_client, as
JupyterLab does, runs cells in it, shuts it down, and prints what happened
as one JSON object for the end-to-end test (tests/e2e/jupyter.rs) to check.

Usage: python run_kernel.py KERNEL_NAME CELL...

The kernelspec is looked up on Jupyter's own path (JUPYTER_PATH and the
rest). Printed: {"argv": the kernelspec's argv, "cells": [{"status",
"result" (text/plain of execute_result, or null), "stdout", "error"}],
"alive_after_shutdown": bool}.
"""

import json
import sys

from jupyter_client.manager import start_new_kernel

# Liveness only: a kernel that starts at all does so in seconds.
TIMEOUT = 120


def run_cell(client, code):
    results, streams, errors = [], [], []

    def collect(message):
        kind, content = message["msg_type"], message["content"]
        if kind == "execute_result":
            results.append(content["data"].get("text/plain"))
        elif kind == "stream" and content.get("name") == "stdout":
            streams.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content.get("traceback", [])))

    reply = client.execute_interactive(code, timeout=TIMEOUT, output_hook=collect)
    return {
        "status": reply["content"]["status"],
        "result": results[-1] if results else None,
        "stdout": "".join(streams),
        "error": "\n".join(errors) or None,
    }


def main():
    name, cells = sys.argv[1], sys.argv[2:]
    manager, client = start_new_kernel(kernel_name=name, startup_timeout=TIMEOUT)
    try:
        outcomes = [run_cell(client, cell) for cell in cells]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)
    print(
        json.dumps(
            {
                "argv": manager.kernel_spec.argv,
                "cells": outcomes,
                "alive_after_shutdown": manager.is_alive(),
            }
        )
    )


if __name__ == "__main__":
    main()
