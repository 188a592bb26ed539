"""The real-world cases: PyPI packages, what they depend on, and how each is exercised.

Each case names the distributions to download (pinned, so a run is reproducible), the
import names that become livemod modules with their ``depends``, and a snippet run in the
case's subprocess with ``ns`` bound to ``host.namespace(<module>)`` that uses the package's
real API and raises if it does not work. The packages are chosen to cover every failure
class of issue 10: own-name absolute imports (rich, attrs, dateutil, click, jinja2's
generated templates, packaging), a plain import of a declared dependency (requests and
urllib3, idna, certifi, charset_normalizer), six.moves, native code (pydantic_core,
markupsafe, simplejson, charset_normalizer), and the process registries their code
touches (typing caches, warnings filters, codecs, atexit, excepthooks, loggers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Case:
    module: str  # the livemod module exercised (its import name)
    exercise: str  # Python run with ``ns`` = host.namespace(module)
    fast: bool = False  # part of the subset the normal test suite runs


#: distribution (pip requirement) -> import names it provides.
DISTRIBUTIONS: Final = {
    "rich==15.0.0": ("rich",),
    "pygments==2.21.0": ("pygments",),
    "markdown-it-py==4.3.0": ("markdown_it",),
    "mdurl==0.1.2": ("mdurl",),
    "attrs==26.1.0": ("attr", "attrs"),
    "python-dateutil==4.0.0": ("dateutil",),
    "six==1.17.0": ("six",),
    "click==8.5.1": ("click",),
    "jinja2==3.1.6": ("jinja2",),
    "markupsafe==3.0.4": ("markupsafe",),
    "packaging==26.4": ("packaging",),
    "requests==2.34.2": ("requests",),
    "urllib3==2.8.0": ("urllib3",),
    "idna==3.20": ("idna",),
    "certifi==2026.10.19.post1": ("certifi",),
    "charset-normalizer==3.5.3": ("charset_normalizer",),
    "simplejson==4.3.0": ("simplejson",),
    "pydantic==2.14.4": ("pydantic",),
    "pydantic-core==2.50.5": ("pydantic_core",),
    "typing-extensions==4.16.0": ("typing_extensions",),
    "annotated-types==0.8.0": ("annotated_types",),
    "typing-inspection==0.4.5": ("typing_inspection",),
}

#: import name -> the livemod modules it depends on.
DEPENDS: Final[dict[str, tuple[str, ...]]] = {
    "rich": ("pygments", "markdown_it"),
    "markdown_it": ("mdurl",),
    "attrs": ("attr",),
    "dateutil": ("six",),
    "jinja2": ("markupsafe",),
    "requests": ("urllib3", "idna", "certifi", "charset_normalizer"),
    "pydantic": ("pydantic_core", "typing_extensions", "annotated_types", "typing_inspection"),
    "pydantic_core": ("typing_extensions",),
    "typing_inspection": ("typing_extensions",),
}

CASES: Final = (
    Case("rich", """
import io
buf = io.StringIO()
console = ns.console.Console(file=buf, force_terminal=True, width=60)
table = ns.table.Table(title="t")
table.add_column("a"); table.add_row("1")
console.print(table)
console.print(ns.markdown.Markdown("# Title\\n\\n*hi*"))
console.print(ns.syntax.Syntax("def f(): pass", "python"))
ns.traceback.install(console=console)
import logging
logging.getLogger("rw.rich").addHandler(ns.logging.RichHandler(console=console))
assert "Title" in buf.getvalue()
"""),
    Case("pygments", """
html = ns.highlight("x = 1", ns.lexers.PythonLexer(), ns.formatters.HtmlFormatter())
assert "<span" in html, html
"""),
    Case("markdown_it", """
html = ns.MarkdownIt().render("# hi *there*")
assert "<h1>" in html, html
"""),
    Case("attrs", """
@ns.define
class P:
    x: int
    y: int = ns.field(default=2)
assert ns.asdict(P(1)) == {"x": 1, "y": 2}
import typing
@ns.frozen
class G(typing.Generic[typing.TypeVar("T")]):
    v: int
assert G[int](3).v == 3
""", fast=True),
    Case("dateutil", """
import datetime
d = ns.parser.parse("2024-01-02T03:04:05+01:00")
assert d.utcoffset() == datetime.timedelta(hours=1)
assert d + ns.relativedelta.relativedelta(months=1) > d
assert ns.tz.gettz("UTC") is not None
"""),
    Case("six", """
assert ns.moves.urllib.parse.urlparse("http://h/p").netloc == "h"
assert list(ns.moves.range(3)) == [0, 1, 2]
assert ns.moves.queue.Queue is not None
assert ns.iteritems({1: 2}) is not None
"""),
    Case("click", """
@ns.command()
@ns.option("--n", type=int, default=1)
def hello(n):
    ns.echo("hi" * n)
result = ns.testing.CliRunner().invoke(hello, ["--n", "3"])
assert result.output == "hihihi\\n", result.output
"""),
    Case("jinja2", """
env = ns.Environment(autoescape=True)
out = env.from_string("{{ x|upper }}{% for i in r %}{{ i }}{% endfor %}").render(x="<a>", r=[1, 2])
assert out == "&lt;A&gt;12", out
"""),
    Case("markupsafe", """
assert ns.escape("<a>") == "&lt;a&gt;"
assert str(ns.Markup("<b>%s</b>") % "<i>") == "<b>&lt;i&gt;</b>"
""", fast=True),
    Case("packaging", """
assert ns.version.Version("1.2") < ns.version.Version("1.10")
assert ns.specifiers.SpecifierSet(">=1,<2").contains("1.5")
req = ns.requirements.Requirement("foo[bar]>=1; python_version > '3'")
assert req.name == "foo" and req.marker.evaluate()
assert ns.tags.sys_tags() is not None
""", fast=True),
    Case("requests", """
import http.server, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello " + self.path.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
t = threading.Thread(target=server.serve_forever); t.start()
try:
    with ns.Session() as s:
        r = s.get(f"http://127.0.0.1:{server.server_port}/x", params={"a": "b"}, timeout=10)
    assert r.status_code == 200 and r.text == "hello /x?a=b", r.text
finally:
    server.shutdown(); server.server_close(); t.join()
"""),
    Case("urllib3", """
u = ns.util.parse_url("http://user@host:81/p?q=1")
assert (u.host, u.port) == ("host", 81)
ns.PoolManager().clear()
"""),
    Case("idna", """
assert ns.encode("ドメイン.テスト") == b"xn--eckwd4c7c.xn--zckzah"
ns.codec  # registers the idna2008 codec with codecs.register
assert "ドメイン".encode("idna2008") == b"xn--eckwd4c7c"
"""),
    Case("certifi", """
import os
assert os.path.exists(ns.where())
"""),
    Case("charset_normalizer", """
best = ns.from_bytes("héllo wörld, ça va très bien".encode("utf-8")).best()
assert best is not None and best.encoding == "utf_8", best
"""),
    Case("simplejson", """
assert ns.loads(ns.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
"""),
    Case("pydantic", """
class M(ns.BaseModel):
    x: int
    tags: list[str] = []
m = M(x="3", tags=["a"])
assert m.x == 3 and M.model_json_schema()["properties"]["x"]["type"] == "integer"
"""),
    Case("typing_extensions", """
class TD(ns.TypedDict):
    a: int
assert TD(a=1) == {"a": 1}
assert ns.get_origin(ns.Annotated[int, "x"]) is ns.Annotated
"""),
)
