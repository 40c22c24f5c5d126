"""``python -m leuktune.dashboard``: optuna-dashboard on a run's study, while its search runs or after.

It serves the study where the run keeps it (``leuktune.Run.study``): the run folder's ``study.db``
(live while the search writes it), the database ``search.study.storage`` names, or for a bucket run
seen from another machine than its driver, a copy as the search last stored it.
"""

from __future__ import annotations

import argparse
import wsgiref.simple_server

from leuktune.errors import command

EXAMPLES = """\
examples:
  python -m leuktune.dashboard runs/synthetic-default
  python -m leuktune.dashboard runs/cnmc-binary --port 8080 --host 0.0.0.0   # seen from other machines
  python -m leuktune.dashboard s3://my-bucket/leuktune/cnmc-binary
then open the address it prints; Ctrl-C stops it.
"""


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name; one line per request is noise
        pass


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leuktune.dashboard", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="the run folder (<storage.path>/<name>), local or a URI")
    parser.add_argument("--host", default="127.0.0.1", help="the address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="the port (default 0: a free one, printed)")
    args = parser.parse_args(argv)
    # imported after the arguments are parsed: --help answers at once
    import optuna_dashboard

    from leuktune.runfolder import RunFolder
    from leuktune.study import readable

    with readable(RunFolder.existing(args.run)) as place:  # a bucket run's copy: deleted when the server stops
        storage = place.storage_object(create=False)
        server = wsgiref.simple_server.make_server(args.host, args.port, optuna_dashboard.wsgi(storage),
                                                   handler_class=_QuietHandler)
        study_id = storage.get_study_id_from_name(place.name)
        print(f"[leuktune] optuna-dashboard of study {place.name!r} ({place.shown()}) at "
              f"http://{args.host}:{server.server_port}/dashboard/studies/{study_id} ; Ctrl-C stops it", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            storage.engine.dispose()
    return 0
