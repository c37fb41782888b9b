"""Rule update end to end without Prefect: paged pull from a MISP stand-in on loopback (a
real HTTP server), normalize, build every output, write. Compare with MISP's own Suricata
export of the same attributes (about 1.5 s for 50k on a real MISP 2.5, per our notes).

    python benchmarks/rule_update.py [--attributes 50000] [--page-size 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pymisp import __version__ as pymisp_version
from pymisp.api import describe_types

from misp_ndr.config import MispSettings, RulesSettings
from tasks.indicator_store import merge_indicators
from tasks.misp_pull import AttributeQuery, pull_misp_attributes
from tasks.rule_indicators import HANDLED_TYPES, normalize_rule_indicators
from tasks.ruleset_build import build_ruleset
from tasks.ruleset_files import publish_ruleset

TYPES = ["ip-dst"] * 5 + ["domain"] * 2 + ["hostname", "url", "md5", "sha256"]


def attribute(n: int, rng: random.Random, today: str) -> dict:
    kind = TYPES[n % len(TYPES)]
    value = {
        "ip-dst": ".".join(str(rng.randint(1, 223)) for _ in range(3)) + f".{n % 250 + 1}",
        "domain": f"bad{n}.example", "hostname": f"cdn{n}.bad.example",
        "url": f"http://bad{n}.example/p/{n}?q={n}",
        "md5": f"{n:032x}", "sha256": f"{n:064x}",
    }[kind]
    event = {"id": str(n // 100), "uuid": f"e0000000-0000-4000-8000-{n // 100:012d}",
             "info": f"Campaign {n // 100}", "date": today, "published": True,
             "publish_timestamp": "1795150000", "Tag": [{"name": "tlp:green"}]}
    return {"id": str(n), "uuid": f"a0000000-0000-4000-8000-{n:012d}", "event_id": event["id"],
            "type": kind, "category": "Network activity", "value": value, "to_ids": True,
            "deleted": False, "timestamp": "1795150000", "Event": event, "Tag": []}


def serve(pages: list[bytes]) -> ThreadingHTTPServer:
    """restSearch pages (page n -> pages[n-1], then an empty page) plus PyMISP's start-up."""
    fixed = {"/servers/getVersion": {"version": "2.5.1", "pymisp_recommended_version":
                                     pymisp_version},
             "/users/view/me": {"User": {"id": "1", "email": "bench@example.org"},
                                "Role": {"perm_add": True}, "UserSetting": {}},
             "/attributes/describeTypes.json": {"result": describe_types}}
    empty = json.dumps({"response": {"Attribute": []}}).encode()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(json.dumps(fixed.get(self.path.split("?")[0], {})).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._send(pages[body["page"] - 1] if body["page"] <= len(pages) else empty)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attributes", type=int, default=50_000)
    parser.add_argument("--page-size", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng, today = random.Random(7), f"{datetime.now(UTC):%Y-%m-%d}"
    attributes = [attribute(n, rng, today) for n in range(args.attributes)]
    pages = [json.dumps({"response": {"Attribute": attributes[i:i + args.page_size]}}).encode()
             for i in range(0, len(attributes), args.page_size)]
    server = serve(pages)
    misp = MispSettings(url=f"http://127.0.0.1:{server.server_port}", api_key="bench-key-0123")
    query = AttributeQuery(window_from=None, window_to=None, types=list(HANDLED_TYPES))
    timings: dict[str, list[float]] = {}
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            rules = RulesSettings(output_dir=work / "rules")
            marks = [time.perf_counter()]
            pulled = pull_misp_attributes(misp, query, args.page_size)
            marks.append(time.perf_counter())
            fresh, _, _ = normalize_rule_indicators(pulled.attributes)
            merged = merge_indicators(None, pulled.attributes, fresh, full=True,
                                      max_event_age_days=30, now=datetime.now(UTC))
            marks.append(time.perf_counter())
            build = build_ruleset(merged.indicators, rules, work / "sids.sqlite", None)
            marks.append(time.perf_counter())
            publish_ruleset(rules.output_dir, build.files, keep=5)
            marks.append(time.perf_counter())
        for name, start, end in zip(("pull", "normalize", "build", "write"), marks, marks[1:],
                                    strict=False):
            timings.setdefault(name, []).append(end - start)
        timings.setdefault("total", []).append(marks[-1] - marks[0])
    server.shutdown()
    print(f"rule update, {args.attributes} attributes in {len(pages)} pages, "
          f"{len(build.lines)} rules, medians of {args.runs} runs")
    for name, values in timings.items():
        print(f"  {name:<10} {statistics.median(values):7.2f} s")
    total = statistics.median(timings["total"])
    print(f"  ratio to MISP's own Suricata export of 50k (about 1.5 s): "
          f"{total / (1.5 * args.attributes / 50_000):.2f}")


if __name__ == "__main__":
    main()
