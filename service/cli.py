"""The `deltamu` command: the science commands of gdn.cli (sweep, recommend, coordcheck), the service itself
(up, api, worker, migrate, token) and a client of its API (submit, status, watch, recommendation, cancel).

Bad input ends with a one-line `deltamu: error: ...` and a non-zero exit code: 2 for a bad argument or file,
1 for a request the server refused or a job that did not succeed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
from pathlib import Path

import httpx

from deltamu.client import ApiError, Client, find_token
from service.settings import Settings, get_settings

NAME_MAX = 100                  # api_tokens.name


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# --- the service ---------------------------------------------------------------------------------------------

def _embedded_settings(settings: Settings) -> Settings:
    """The settings `deltamu up` runs its API and workers with: the data dir pinned to an absolute path, and a
    write token (generated once into the data dir) when settings name none. The workers are handed them
    explicitly (service.launch.worker_commands); this process's environment is left alone."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    tokens = settings.api_tokens
    if not tokens:
        from service.auth import generate_token
        token_file = data_dir / "token"
        if not token_file.exists():
            token_file.write_text(generate_token() + "\n")
            token_file.chmod(0o600)
        tokens = [token_file.read_text().strip()]
    return settings.model_copy(update={"data_dir": data_dir, "api_tokens": tokens})


def cmd_up(args) -> int:
    import uvicorn

    from service import launch, migrate
    from service.main import create_app

    settings = _embedded_settings(get_settings())
    migrate.upgrade(settings.db_url)
    procs = launch.start(launch.worker_commands(settings, cpu_workers=args.workers))
    host, port = args.host or settings.host, args.port or settings.port
    # the dashboard's link carries the token in its fragment, which the browser never sends: the page stores it
    file_token = settings.token_file.read_text().strip() if settings.token_file.exists() else None
    dashboard = f"http://{host}:{port}/" + (f"#token={file_token}" if file_token in settings.api_tokens else "")
    print(f"deltamu: API on http://{host}:{port} (docs at /docs); {len(procs)} worker process(es)\n"
          f"deltamu: dashboard {dashboard}\n"
          f"deltamu: database {settings.db_url}\ndeltamu: broker {settings.broker}\n"
          f"deltamu: write token in {settings.token_file if settings.token_file.exists() else 'DELTAMU_API_TOKENS'}",
          flush=True)
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with this handler that becomes a normal exit,
    # so the workers below are stopped instead of orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        launch.stop(procs)
    return 0


def cmd_api(args) -> int:
    import uvicorn

    from service.main import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=args.host or settings.host, port=args.port or settings.port,
                log_level="info", proxy_headers=True)
    return 0


def cmd_worker(args) -> int:
    from service import launch

    gpus = None if args.gpus is None else [g for g in args.gpus.split(",") if g]
    return launch.supervise(launch.start(launch.worker_commands(get_settings(), gpus=gpus,
                                                                cpu_workers=args.workers)))


def cmd_migrate(args) -> int:
    from service import migrate

    migrate.upgrade(get_settings().db_url, args.revision)
    print(f"deltamu: database at {args.revision}")
    return 0


def _on_tokens(action):
    """action(session) in one transaction on the settings' database: the token commands act on it directly, like
    `deltamu migrate` (whoever can reach the database manages its tokens). A database without the schema is a
    one-line error."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.db import make_engine, make_session_factory, transaction

    engine = make_engine(get_settings().db_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            return action(session)
    except SQLAlchemyError as e:
        cause = type(getattr(e, "orig", None) or e).__name__
        raise CliError(f"cannot use the tokens of {engine.url!r} ({cause}); is it migrated (`deltamu migrate`)?") \
            from None
    finally:
        engine.dispose()


def cmd_token_create(args) -> int:
    from service.auth import issue_token
    from service.models import SETTINGS_TOKEN_NAME, TokenScope

    name = args.name.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise CliError(f"--name must be 1 to {NAME_MAX} printable characters", 2)
    if name == SETTINGS_TOKEN_NAME:
        raise CliError(f"the name {name!r} is reserved for the tokens of DELTAMU_API_TOKENS", 2)
    token, secret = _on_tokens(lambda s: issue_token(s, name=name, scope=TokenScope(args.scope)))
    print(f"deltamu: token {token.id} ({name}, {token.scope.value}); its secret, shown only this once:",
          file=sys.stderr)
    print(secret)
    return 0


def cmd_token_list(args) -> int:
    from service import crud

    def when(t) -> str:
        return "-" if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")

    tokens = _on_tokens(crud.list_tokens)
    rows = [("ID", "NAME", "SCOPE", "CREATED", "REVOKED")]
    rows += [(str(t.id), t.name, t.scope.value, when(t.created_at), when(t.revoked_at)) for t in tokens]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_token_revoke(args) -> int:
    from service import crud

    def revoke(session) -> str | None:
        token = crud.get_token(session, token_id=args.id)
        if token is None:
            return f"no token with id {args.id}"
        if not crud.revoke_token(session, token_id=args.id):
            return f"token {args.id} ({token.name}) was revoked already"
        return None

    error = _on_tokens(revoke)
    if error:
        raise CliError(error)
    print(f"deltamu: token {args.id} revoked")
    return 0


# --- the client ----------------------------------------------------------------------------------------------

def _client(args) -> Client:
    """The API client: the URL from --url, DELTAMU_URL or the settings' host and port; the token as
    deltamu.client.find_token finds it (the places it looked are named in a 401)."""
    settings = get_settings()
    url = args.url or os.environ.get("DELTAMU_URL") or f"http://{settings.host}:{settings.port}"
    return Client(url, token_search=find_token(args.token, data_dir=settings.data_dir,
                                               settings_tokens=settings.api_tokens))


def _request(client: Client, method: str, path: str, **kwargs) -> httpx.Response:
    """client.request, its ApiError as the CLI's one-line error."""
    try:
        return client.request(method, path, **kwargs)
    except ApiError as e:
        raise CliError(str(e)) from None


def cmd_submit(args) -> int:
    path = Path(args.job)
    try:
        body = json.loads(path.read_text())
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", 2) from None
    except json.JSONDecodeError as e:
        raise CliError(f"{path} is not valid JSON: {e}", 2) from None
    if args.reuse:
        body = {**body, "reuse": True}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    with _client(args) as client:
        response = _request(client, "POST", "/v1/jobs", json=body, headers=headers)
        job = response.json()
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            reused = " (an identical finished job, reused)" if response.status_code == 200 else ""
            print(f"{job['id']} {job['state']}{reused}  {response.headers.get('Location', '')}")
            for warning in job.get("warnings", []):
                print(f"warning: {warning}", file=sys.stderr)
        if args.watch:
            return _watch(client, job["id"], args.interval)
    return 0


def cmd_status(args) -> int:
    with _client(args) as client:
        job = _request(client, "GET", f"/v1/jobs/{args.id}").json()
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    counts = ", ".join(f"{n} {state.lower()}" for state, n in job["trials"]["by_state"].items() if n)
    print(f"{job['id']} {job['state']} {100 * job['progress']:.0f}%  trials: {counts or 'none'}"
          + (f", {job['trials']['retries']} retried" if job["trials"]["retries"] else ""))
    if job["optimum"]:
        opt = job["optimum"]
        edge = " (on the grid edge)" if opt["on_edge"] else ""
        print(f"optimum: lr {opt['lr']:.4g}{edge}, loss {opt['loss']:.4f}")
        if opt.get("near_best_lr_min") is not None and opt["near_best_lr_max"] > opt["near_best_lr_min"]:
            print(f"within the seed noise of the best: lr {opt['near_best_lr_min']:.3g} "
                  f"to {opt['near_best_lr_max']:.3g}")
        for warning in opt["warnings"]:
            print(f"warning: {warning}")
    if job.get("transfer"):
        _print_transfer(job["transfer"])
    if job["error"]:
        print(f"error: {job['error']}")
    return 0


def _print_transfer(transfer: dict) -> None:
    def fmt(x, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    def verdict(x) -> str:
        return {True: "yes", False: "no", None: "unknown"}[x]

    print(f"transfer from width {transfer['base_width']} (lr* {fmt(transfer['base_lr'], '.4g')}; one grid step = "
          f"x2^{fmt(transfer['grid_step_log2'], '.3g')}):")
    for w in transfer["widths"]:
        lr = w["optimum"]["lr"] if w["optimum"] else None
        print(f"  width {w['width']:>6}: argmin lr {fmt(lr, '.4g')}, shift {fmt(w['shift_steps'], '+.2f')} steps, "
              f"regret {fmt(w['regret'], '+.4f')}" + (f" ({w['error']})" if w["error"] else ""))
    print(f"argmin within one grid step: {verdict(transfer['argmin_within_one_step'])}; "
          f"loss falls with width: {verdict(transfer['loss_falls_with_width'])} (regret interpolated)")
    for warning in transfer["warnings"]:
        print(f"warning: {warning}")


def _watch(client: Client, job_id: str, interval: float) -> int:
    """A progress bar until the job is done: trials done, the best loss so far, tokens per second and the ETA the
    server measured (the grid's remaining tokens at the job's throughput so far)."""
    try:
        job = client.wait(job_id, poll_seconds=interval, progress=True)
    except ApiError as e:
        raise CliError(str(e)) from None
    if job.state == "SUCCEEDED":
        best = job.best_so_far
        print(f"{job_id} SUCCEEDED: optimum lr {job.optimum.lr:.4g}"
              + (f" (best trial: loss {best.loss:.4f} {job.loss_unit} at lr {best.lr:.4g})" if best else ""))
        return 0
    print(f"{job_id} {job.state}" + (f": {job.error}" if job.error else ""))
    return 1


def cmd_watch(args) -> int:
    with _client(args) as client:
        return _watch(client, args.id, args.interval)


def cmd_recommendation(args) -> int:
    from gdn.cli import print_recommendation

    if args.width < 1:
        raise CliError(f"--width must be a positive integer, got {args.width}", 2)
    if args.tokens is not None and args.tokens < 1:
        raise CliError(f"--tokens must be a positive integer, got {args.tokens}", 2)
    params = {"width": args.width} | ({"tokens": args.tokens} if args.tokens is not None else {})
    with _client(args) as client:
        body = _request(client, "GET", f"/v1/jobs/{args.id}/recommendation", params=params).json()
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print_recommendation(body)
    if body.get("horizon"):       # the token budget's answer in one line, on stderr so that stdout stays as asked
        h = body["horizon"]
        error = "no fit" if h["error_steps"] is None else f"+- {h['error_steps']:.2g} grid steps"
        print(f"lr {body['base_lr']:.4g} at width {body['base_width']} for {h['tokens']:,} tokens (the proxy's "
              f"{body['proxy_lr']:.4g} x {h['lr_factor']:.3g}, {error}, {h['extrapolation_ratio']:.3g}x the longest "
              f"proxy horizon); per group at width {body['target_width']} in `groups`", file=sys.stderr)
        for warning in h["warnings"] if args.json else []:      # the table lists them already
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_jobs(args) -> int:
    with _client(args) as client:
        try:
            jobs = client.jobs(state=args.state, limit=args.limit)
        except ApiError as e:
            raise CliError(str(e)) from None
    if args.json:
        print(json.dumps([j.raw for j in jobs], indent=2))
        return 0
    rows = [("ID", "STATE", "PROGRESS", "TRIALS", "BEST LOSS", "OPTIMUM LR", "WIDTHS", "SUBMITTED")]
    for j in jobs:
        queued = f" ({j.queue_position} ahead)" if j.queue_position is not None else ""
        rows.append((j.id, j.state + queued, f"{100 * j.progress:.0f}%", f"{j.trials_done}/{j.trials_total}",
                     "-" if j.best_so_far is None else f"{j.best_so_far.loss:.4f}",
                     "-" if j.optimum is None or j.optimum.lr is None else f"{j.optimum.lr:.4g}",
                     ",".join(map(str, j.widths)), j.created_at[:19].replace("T", " ")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if not jobs:
        print("no jobs" + (f" in state {args.state}" if args.state else ""), file=sys.stderr)
    return 0


def cmd_cancel(args) -> int:
    with _client(args) as client:
        job = _request(client, "POST", f"/v1/jobs/{args.id}/cancel").json()
    print(f"{job['id']} {job['state']}")
    return 0


# --- the parser ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deltamu", description="Learning-rate transfer for Gated Delta Networks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if importlib.util.find_spec("gdn.cli") is not None:
        from gdn import cli as gdn_cli
        gdn_cli.add_commands(sub)

    p = sub.add_parser("up", help="the whole service on this machine: migrate, API and worker(s)",
                       description="Embedded default: a SQLite file and a server-less broker under .deltamu/ "
                                   "(DELTAMU_DATA_DIR); DELTAMU_DATABASE_URL / DELTAMU_BROKER_URL switch to "
                                   "PostgreSQL and Redis. One worker per GPU, else --workers CPU workers.")
    p.add_argument("--host", default=None, help="default 127.0.0.1 (DELTAMU_HOST)")
    p.add_argument("--port", type=int, default=None, help="default 8000 (DELTAMU_PORT)")
    p.add_argument("--workers", type=int, default=1, help="CPU worker processes when there is no GPU")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="the API only (production: migrations run separately)")
    p.add_argument("--host", default=None, help="address to listen on (DELTAMU_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (DELTAMU_PORT; default 8000)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="Celery workers only: one per visible GPU, else --workers CPU workers")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids (default: every visible GPU)")
    p.add_argument("--workers", type=int, default=1, help="CPU worker processes when there is no GPU")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("migrate", help="upgrade the database schema (alembic upgrade)")
    p.add_argument("revision", nargs="?", default="head", help="the Alembic revision to upgrade to (default head)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("token", help="API tokens: create, list, revoke (on the database, like migrate)",
                       description="Tokens are stored hashed with a name and a scope: read (GET), write (and submit, "
                                   "cancel) or admin (and whatever manages the service). A revoked token is refused "
                                   "at once and for good.")
    tokens = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    t = tokens.add_parser("create", help="a new token; prints its secret, once")
    t.add_argument("--name", required=True, help="who or what it is for")
    t.add_argument("--scope", required=True, choices=("read", "write", "admin"),
                   help="read: GETs; write: also submit and cancel; admin: also manage the service")
    t.set_defaults(func=cmd_token_create)
    t = tokens.add_parser("list", help="id, name, scope, created, revoked (never the secret)")
    t.set_defaults(func=cmd_token_list)
    t = tokens.add_parser("revoke", help="refuse this token from now on")
    t.add_argument("id", type=int, help="the token's id (deltamu token list)")
    t.set_defaults(func=cmd_token_revoke)

    def client_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=None, help="API base URL (DELTAMU_URL; default http://127.0.0.1:8000)")
        p.add_argument("--token", default=None, help="bearer token (DELTAMU_TOKEN; default: the embedded one)")

    p = sub.add_parser("submit", help="submit a job file: POST /v1/jobs")
    p.add_argument("job", help="a job JSON file, e.g. examples/tiny-cpu-job.json")
    p.add_argument("--idempotency-key", default=None, help="resubmitting with the same key makes no second job")
    p.add_argument("--reuse", action="store_true", help="reuse an identical finished job's results")
    p.add_argument("--watch", action="store_true", help="then show a progress bar until the job is done")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --watch")
    p.add_argument("--json", action="store_true", help="print the whole job")
    client_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state, progress and optimum")
    p.add_argument("id", help="the job's id")
    p.add_argument("--json", action="store_true", help="print the whole job as the API gives it")
    client_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="a progress bar until the job is done (exit 0 if it SUCCEEDED)")
    p.add_argument("id", help="the job's id")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    client_args(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("recommendation", help="muP hyperparameters of a finished job for a target width")
    p.add_argument("id", help="the job's id")
    p.add_argument("--width", type=int, required=True, help="target width")
    p.add_argument("--tokens", type=int, default=None,
                   help="the target run's training tokens: the lr for that budget from the job's horizon fit")
    p.add_argument("--json", action="store_true", help="print the API's answer as JSON instead of the table")
    client_args(p)
    p.set_defaults(func=cmd_recommendation)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("id", help="the job's id")
    client_args(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("jobs", help="list jobs, newest first: state, progress, queue position, best loss so far")
    p.add_argument("--state", default=None, choices=("QUEUED", "RUNNING", "CANCELLING", "SUCCEEDED", "FAILED",
                                                      "CANCELLED"), help="only jobs in this state")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="print the jobs as the API gives them")
    client_args(p)
    p.set_defaults(func=cmd_jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`deltamu ... | head`): no traceback; stdout now goes nowhere, so that Python's own
        # flush at exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func.__module__ == "gdn.cli":
        from gdn import cli as gdn_cli
        return gdn_cli.run(args)      # its own one-line errors for bad input
    try:
        return args.func(args)
    except CliError as e:
        print(f"deltamu: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
