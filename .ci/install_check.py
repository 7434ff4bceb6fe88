#!/usr/bin/env python3
"""Install salesplan the way the Dockerfile does — `pip install .`, no extras, into a fresh
virtualenv, from only the files the Dockerfile copies — and use it as a new user would, on the
embedded SQLite default in an empty directory:

    salesplan --version
    salesplan serve            until /readyz answers 200 (and /docs loads its local assets)
    salesplan demo
    salesplan token create     the secret alone on stdout, accepted by the API
    salesplan serve            stops on SIGTERM
    salesplan project          serves its metrics, then stops on SIGTERM

`make test` installs the dev extra, so a module imported at run time but declared only there
passes it and fails every user: this check is what catches that. Standard library only.
Usage: python3 .ci/install_check.py [--keep]
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 90
STOP_SECONDS = 30


class CheckFailed(Exception):
    pass


@contextmanager
def step(name: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"install check: {name} …", flush=True)
    yield
    print(f"install check: {name}: ok ({time.monotonic() - started:.1f} s)", flush=True)


def dockerfile_sources() -> tuple[list[tuple[list[str], str]], str]:
    """The COPY instructions before the install, and the install command, as the Dockerfile says them."""
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    copies: list[tuple[list[str], str]] = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0].upper() == "COPY":
            copies.append((words[1:-1], words[-1]))
        elif words[0].upper() == "RUN" and "pip install" in line:
            install = line.split(None, 1)[1].split("&&")[0].strip()
            return copies, install
    raise CheckFailed("the Dockerfile has no RUN pip install")


def replay_copies(source: Path) -> None:
    """Copy what the Dockerfile's COPY instructions copy (relative to its WORKDIR), nothing else."""
    copies, install = dockerfile_sources()
    if install != "pip install .":
        raise CheckFailed(f"the Dockerfile installs with {install!r}; this check replays 'pip install .'")
    for sources, destination in copies:
        if destination.startswith("/"):
            raise CheckFailed(f"COPY to an absolute path ({destination}) is not replayed by this check")
        dest = source / destination
        for name in sources:
            origin = ROOT / name
            if origin.is_dir():  # like docker: the directory's contents land in the destination
                shutil.copytree(origin, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target = dest / origin.name if destination.endswith("/") or len(sources) > 1 else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until(what: str, check: object, process: subprocess.Popen[str], seconds: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CheckFailed(f"{what}: the process exited with {process.returncode} before it was ready")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise CheckFailed(f"{what}: not ready after {seconds:.0f} s")


def stop(process: subprocess.Popen[str], what: str, log: Path, stopped: str) -> None:
    """SIGTERM, then a clean exit: 0, or uvicorn's re-raised SIGTERM after its graceful shutdown."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise CheckFailed(f"{what} did not stop within {STOP_SECONDS} s of SIGTERM") from None
    if code not in (0, -signal.SIGTERM) or stopped not in log.read_text():
        raise CheckFailed(f"{what} exited with {code} after SIGTERM, without logging {stopped!r}")


def run(salesplan: Path, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(salesplan), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise CheckFailed(f"salesplan {' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="salesplan-install-check-"))
    logs: list[Path] = []
    try:
        source, venv, data = work / "src", work / "venv", work / "data"
        source.mkdir()
        data.mkdir()
        with step("copy what the Dockerfile copies"):
            replay_copies(source)
        with step("pip install . (no extras) into a fresh virtualenv"):
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            python = venv / "bin" / "python"
            pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "."],
                                 cwd=source, capture_output=True, text=True)
            if pip.returncode != 0:
                raise CheckFailed(f"pip install . failed:\n{pip.stdout[-4000:]}\n{pip.stderr[-4000:]}")
        salesplan = venv / "bin" / "salesplan"
        # A clean environment: no SALESPLAN_* from the caller, the SQLite default in an empty directory.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SALESPLAN_", "VIRTUAL_ENV", "PYTHON"))}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

        with step("salesplan --version"):
            expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
            shown = run(salesplan, env, data, "--version").stdout.strip()
            if shown != f"salesplan {expected}":
                raise CheckFailed(f"--version printed {shown!r}, not 'salesplan {expected}'")

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve_log = work / "serve.log"
        logs.append(serve_log)
        log = serve_log.open("w")
        server = subprocess.Popen([str(salesplan), "serve", "--port", str(port)], env=env, cwd=data, stdout=log,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            with step("salesplan serve answers /readyz, and /docs with its own assets"):
                wait_until("serve", lambda: get(f"{base}/readyz")[0] == 200, server)
                status, page = get(f"{base}/docs")
                assets = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
                if status != 200 or not assets:
                    raise CheckFailed(f"/docs answered {status}")
                for asset in assets:
                    if not asset.startswith("/") or get(base + asset)[0] != 200:
                        raise CheckFailed(f"/docs needs {asset}, which the installed app does not serve")
            with step("salesplan demo"):
                run(salesplan, env, data, "demo")
            with step("salesplan token create: the secret alone on stdout, accepted by the API"):
                token = run(salesplan, env, data, "token", "create", "--role", "admin", "--label", "ci").stdout
                if not re.fullmatch(r"sp_[0-9a-f]{16}_[A-Za-z0-9_-]+\n", token):
                    raise CheckFailed(f"token create printed {token!r} on stdout")
                status, body = get(f"{base}/progress?wait_for_position=1", token.strip(), timeout=30)
                if status != 200 or not json.loads(body).get("rows"):
                    raise CheckFailed(f"GET /progress with the new token answered {status}: {body[:300]!r}")
            with step("salesplan serve stops on SIGTERM"):
                stop(server, "salesplan serve", serve_log, "Application shutdown complete")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log.close()

        worker_log = work / "project.log"
        logs.append(worker_log)
        with step("salesplan project serves metrics and stops on SIGTERM"), worker_log.open("w") as log:
            worker_env = {**env, "SALESPLAN_WORKER_METRICS_PORT": "0"}
            worker = subprocess.Popen([str(salesplan), "project"], env=worker_env, cwd=data, stdout=log,
                                      stderr=subprocess.STDOUT, text=True)
            try:
                def metrics_port() -> int | None:
                    found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", worker_log.read_text())
                    return int(found.group(1)) if found else None

                wait_until("project", lambda: metrics_port() is not None, worker)
                status, body = get(f"http://127.0.0.1:{metrics_port()}/metrics")
                if status != 200 or b"salesplan_build_info{" not in body:
                    raise CheckFailed(f"the worker's /metrics answered {status}")
                stop(worker, "salesplan project", worker_log, "salesplan.worker: stopped")
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        print("install check: passed", flush=True)
        return 0
    except (CheckFailed, subprocess.CalledProcessError) as error:
        print(f"install check: FAILED: {error}", file=sys.stderr, flush=True)
        for path in logs:
            if path.exists():
                print(f"--- {path.name}\n{path.read_text()[-4000:]}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"install check: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
