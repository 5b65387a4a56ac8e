"""Starting and stopping `dsv4 serve` for the end-to-end tests: on a free loopback port (--port 0, the port read from
its start-up line), its output drained so that a full pipe never blocks it, and a graceful stop on SIGTERM."""
import re
import signal
import subprocess
import sys
import threading


def start(dsv4, args):
    """Runs `dsv4 serve ARGS --port 0`; returns (process, port), or exits the test when the server does not start."""
    proc = subprocess.Popen([dsv4, "serve", "--port", "0"] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    port = None
    for line in proc.stdout:
        sys.stderr.write(line)
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        proc.wait()
        sys.exit(f"dsv4 serve {' '.join(args)} did not start")
    # Keep draining the server's output: a closed pipe would make its later log lines fail (and a server whose
    # output fails exits non-zero, as it should).
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, port


def stop(proc, timeout=30):
    """SIGTERM, then the exit code; exits the test when the server does not stop in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        sys.exit(f"dsv4 serve did not stop within {timeout} s of SIGTERM")
